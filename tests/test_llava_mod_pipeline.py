"""LLaVA-MoD end to end on tiny models, through the real launch paths: script/llava_mod_pipeline.sh runs the
shipped MG-LLaVA stage configs (adaptor -> D2D -> D2S with up-cycling at load -> preference distillation ->
export); the D2D stage also runs on 2 processes; a D2S run killed after a checkpoint resumes to the same end."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ('adaptor', 'd2d', 'd2s', 'pd')

CHILD = '''from mmengine.config import read_base

with read_base():
    from mg_llava.configs.llava_mod.mg_qwen2_0_5b_{stage} import *  # noqa: F401,F403

{model_update}
train_dataloader.update(batch_size=4, num_workers=0, pin_memory=False)
train_dataloader.dataset.update(data_path={data!r}, image_folder={images!r}, box_json_path={boxes!r}, max_length=256)
train_cfg.update(max_epochs=1)
default_hooks.checkpoint.update(interval=2, max_keep_ckpts=-1)
default_hooks.logger.update(interval=1)
'''


def tiny_model(assets):
    return dict(llm=assets['llm'], tokenizer=assets['tokenizer'], visual_encoder=assets['clip_vit'],
                visual_encoder_aux=assets['convnext'], template='vicuna', llm_dtype=None,
                vision_spec=dict(image_size=112, image_size_aux=256), use_activation_checkpointing=False)


def env():
    e = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1',
             TOKENIZERS_PARALLELISM='false', OMP_NUM_THREADS='1', PYTHONPATH='', SEED='0')
    e['PATH'] = f'{BIN}:{e["PATH"]}'
    return e


@pytest.fixture(scope='module')
def stage_configs(tmp_path_factory, tiny_assets, tiny_world):
    """The four shipped MG stage configs re-pointed at the tiny assets / world and a tiny teacher export."""
    from mg_llava.models import MGLLaVAModel
    root = tmp_path_factory.mktemp('llava_mod')
    torch.manual_seed(3)
    teacher = MGLLaVAModel(**tiny_model(tiny_assets))
    teacher.save_pretrained(str(root / 'teacher'), fp32=True)
    recs = json.load(open(tiny_world['sft']))
    pairs = [dict(id=r['id'], image=r['image'], chosen=r['conversations'][:2],
                  rejected=[r['conversations'][0], {'from': 'gpt', 'value': 'purple'}]) for r in recs if r.get('image')]
    (root / 'pref.json').write_text(json.dumps(pairs))
    paths = {}
    for stage in STAGES:
        if stage == 'adaptor':
            update = f'model.update(**{tiny_model(tiny_assets)!r})'
        else:
            update = (f'model.student.update(**{tiny_model(tiny_assets)!r})\n'
                      f"model.update(teacher={str(root / 'teacher')!r}, teacher_dtype='float32')")
        data = {'adaptor': tiny_world['pretrain'], 'pd': str(root / 'pref.json')}.get(stage, tiny_world['sft'])
        paths[stage] = root / f'{stage}.py'
        paths[stage].write_text(CHILD.format(stage=stage, model_update=update, data=data,
                                             images=tiny_world['images'], boxes=tiny_world['boxes']))
    return root, paths


def last_loss(work):
    logs = sorted(work.glob('*/*.log'))
    lines = [ln for ln in logs[-1].read_text().splitlines() if 'Iter(train)' in ln]
    return lines[-1]


@pytest.fixture(scope='module')
def pipeline_run(stage_configs):
    """script/llava_mod_pipeline.sh over the four stage configs, once for the module -> (root, paths, work)."""
    root, paths = stage_configs
    work = root / 'work'
    proc = subprocess.run(['bash', str(REPO / 'script' / 'llava_mod_pipeline.sh'),
                           *(str(paths[s]) for s in STAGES), str(work)], cwd=root, env=dict(
                               env(), EXPORT_ARGS='--fp32', SKIP_EVAL='1'),
                          capture_output=True, text=True, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and 'llava_mod_pipeline: done' in log, log[-4000:]
    return root, paths, work


def test_pipeline_runs_every_stage_and_exports_a_deterministic_moe_student(pipeline_run):
    root, paths, work = pipeline_run
    for stage in ('d2d', 'd2s', 'pd'):
        text = '\n'.join(p.read_text() for p in (work / stage).glob('*/*.log'))
        assert 'loss' in text and 'Traceback' not in text
    d2s = '\n'.join(p.read_text() for p in (work / 'd2s').glob('*/*.log'))
    assert re.search(r'loss_kd: [\d.]+ +loss_lm: [\d.]+ +router_loss: [\d.]+', d2s), d2s[-2000:]
    assert 'moe/layer0/load0' in d2s   # routing observability (MoEStatsHook)
    pd = '\n'.join(p.read_text() for p in (work / 'pd').glob('*/*.log'))
    assert 'rewards_chosen' in pd and 'margins' in pd
    def last_state(stage):
        return torch.load((work / stage / 'last_checkpoint').read_text().strip(), weights_only=True,
                          map_location='cpu')['state_dict']
    d2s, pd = last_state('d2s'), last_state('pd')
    assert pd and all(k.startswith('student.') for k in pd)                     # the teacher is never saved
    experts = [k for k in pd if '.experts.' in k]
    attn = [k for k in pd if 'self_attn' in k]
    assert experts and attn   # a partly trained LLM is saved whole: its frozen part came from D2D
    assert all(torch.equal(pd[k], d2s[k]) for k in attn)                        # frozen in PD (D2S/PD set)
    assert not all(torch.equal(pd[k], d2s[k]) for k in experts)                 # trained in PD

    from mg_llava.inference.generation import generate
    from mg_llava.inference.prompt import build_prompt_sample, collate_prompts
    from mg_llava.models import MGLLaVAModel
    student = MGLLaVAModel.from_pretrained(str(work / 'export'))
    assert student.config.moe is not None and student.config.moe['num_experts'] == 4
    from PIL import Image
    rec = json.load(open(paths['pd'].parent / 'pref.json'))[0]
    image = Image.open(Path(re.search(r"image_folder='([^']+)'", paths['pd'].read_text())[1]) / rec['image'])
    batch = collate_prompts([build_prompt_sample('What colour is the shape?', image, student.tokenizer,
                                                 student.template, student.vision_spec, student.num_image_tokens)],
                            student.tokenizer)
    assert generate(student, batch, max_new_tokens=5) == generate(student, batch, max_new_tokens=5)


def test_a_kd_stage_on_two_processes(pipeline_run, tmp_path):
    root, paths, work = pipeline_run
    adaptor = work / 'adaptor' / 'last_checkpoint'
    work = tmp_path / 'd2d_ddp'
    # batch 2 per process: the 13 tiny samples still give 4 iterations (the warm-up alone takes 2)
    proc = subprocess.run(['bash', '-c', f'source {REPO}/script/_train.sh && train "$0" "$1" --cfg-options '
                           f'model.pretrained_pth={adaptor.read_text().strip()} train_dataloader.batch_size=2',
                           str(paths['d2d']), str(work)],
                          cwd=root, env=dict(env(), NPROC_PER_NODE='2', PORT='29613'), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0 and (work / 'last_checkpoint').is_file(), (proc.stdout + proc.stderr)[-4000:]


def test_a_killed_distillation_run_resumes_to_the_same_end(pipeline_run, tmp_path, sigkill_after_checkpoint):
    """The pipeline's own D2S run (same config, seed and D2D checkpoint) is the uninterrupted reference."""
    root, paths, work = pipeline_run
    d2d, full = work / 'd2d' / 'last_checkpoint', work / 'd2s'
    base = [sys.executable, '-m', 'xtuner.tools.train', str(paths['d2s']), '--seed', '0', '--work-dir',
            str(tmp_path / 'killed')]
    opts = ['--cfg-options', f'model.pretrained_pth={d2d.read_text().strip()}']
    proc = subprocess.Popen(base + opts, cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    sigkill_after_checkpoint(proc, tmp_path / 'killed', 'iter_2.pth')
    subprocess.run(base + opts + ['resume=True'], cwd=root, env=env(), check=True, capture_output=True, timeout=900)
    strip = lambda line: re.sub(r'^.*?Iter\(train\)', '', re.sub(r'(eta|time|data_time): \S+', '', line))  # noqa
    assert strip(last_loss(tmp_path / 'killed')) == strip(last_loss(full))
