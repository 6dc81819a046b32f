"""Genixer end to end on tiny models through the real launch paths: script/genixer_pipeline.sh runs the shipped
LLaVA-1.5 generator config (re-pointed at tiny assets) -> export -> generation -> judge -> mix -> SFT on the mix
-> export, with the generator data built by tools/build_generator_data.py from the tiny world."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

CHILD = '''from mmengine.config import read_base

with read_base():
    from mg_llava.configs.{parent} import *  # noqa: F401,F403

model.update(llm={llm!r}, tokenizer={tok!r}, visual_encoder={clip!r}, template='vicuna', llm_dtype=None,
             vision_spec=dict(image_size=112), use_activation_checkpointing=False, pretrained_pth=None)
train_dataloader.update(batch_size=4, num_workers=0, pin_memory=False)
train_dataloader.dataset.update(data_path={data!r}, image_folder={images!r}, max_length=256)
train_cfg.update(max_epochs=1)
default_hooks.checkpoint.update(interval=50, max_keep_ckpts=1)
'''


def test_genixer_pipeline_end_to_end(tiny_assets, tiny_world, tmp_path, load_tool):
    gen_data = tmp_path / 'generator.json'
    load_tool('build_generator_data').main(['--source', f'common={tiny_world["sft"]}', '--out', str(gen_data)])
    common = dict(llm=tiny_assets['llm'], tok=tiny_assets['tokenizer'], clip=tiny_assets['clip_vit'],
                  images=tiny_world['images'])
    (tmp_path / 'generator.py').write_text(CHILD.format(parent='genixer.llava15_vicuna7b_generator',
                                                        data=str(gen_data), **common))
    (tmp_path / 'sft.py').write_text(CHILD.format(parent='llava15.vicuna7b_sft', data=tiny_world['sft'], **common))
    work = tmp_path / 'work'
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1',
               TOKENIZERS_PARALLELISM='false', OMP_NUM_THREADS='1', PYTHONPATH='', SEED='0', EXPORT_ARGS='--fp32',
               SKIP_EVAL='1', NUM='all', BAND='0 1', MAX_NEW_TOKENS='8', TASK='common')
    env['PATH'] = f'{BIN}:{env["PATH"]}'
    proc = subprocess.run(['bash', str(REPO / 'script' / 'genixer_pipeline.sh'), str(tmp_path / 'generator.py'),
                           str(tmp_path / 'sft.py'), tiny_world['images'], str(work)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and 'genixer_pipeline: done' in log, log[-4000:]
    generated = json.loads((work / 'generated.json').read_text())
    rejects = (work / 'generated.rejects.jsonl').read_text().splitlines()
    n_images = len([f for f in os.listdir(tiny_world['images']) if f.endswith('.png')])
    assert len(generated) + len(rejects) == n_images
    kept = json.loads((work / 'kept.json').read_text())
    scores = (work / 'kept.scores.jsonl').read_text().splitlines()
    assert len(kept) == len(generated) == len(scores)          # band 0-1 keeps everything judged
    mixed = json.loads((work / 'mixed.json').read_text())
    assert mixed == json.loads(open(tiny_world['sft']).read()) + kept
    assert (work / 'sft' / 'export' / 'mg_llava_config.json').exists()
    assert (work / 'generator' / 'export' / 'mg_llava_config.json').exists()
    # a stage that fails stops the pipeline with a non-zero status
    bad = subprocess.run(['bash', str(REPO / 'script' / 'genixer_pipeline.sh'), str(tmp_path / 'missing.py'),
                          str(tmp_path / 'sft.py'), tiny_world['images'], str(tmp_path / 'work2')],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert bad.returncode != 0 and 'genixer_pipeline: done' not in bad.stdout + bad.stderr
    assert not (tmp_path / 'work2' / 'generated.json').exists()
