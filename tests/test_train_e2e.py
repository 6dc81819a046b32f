"""End-to-end through the real CLI: `xtuner train`, resume, SIGKILL + auto-resume, pth_to_hf, 2-process DDP."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CFG = str(REPO / 'configs/tiny/mg_llava_tiny_sft.py')
BIN = Path(sys.executable).parent
ITERS = 18  # 36 samples / batch 4 * 2 epochs


def env():
    e = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1',
             TOKENIZERS_PARALLELISM='false', OMP_NUM_THREADS='1')
    e['PATH'] = f'{BIN}:{e["PATH"]}'  # xtuner re-launches python/torchrun from PATH
    return e


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A working dir laid out like the demo's: .demo/world and .demo/assets (tiny)."""
    from mg_llava.demo.tiny_assets import PRESETS, build_tiny_assets
    from mg_llava.demo.world import generate_world
    root = tmp_path_factory.mktemp('e2e')
    generate_world(root / '.demo/world', num_train=36, num_heldout=4, text_only_frac=0.0)
    demo_sizes = {k: v for k, v in PRESETS['demo'].items() if k.endswith('_kwargs')}  # the config's image sizes
    build_tiny_assets(root / '.demo/assets', world_dir=root / '.demo/world', llm_hidden=64, llm_layers=2,
                      llm_intermediate=128, **demo_sizes)
    return root


def train(run_dir, work, *extra, launcher=None, check=True, background=False):
    cmd = ([str(BIN / 'xtuner'), 'train'] if launcher == 'xtuner' else [sys.executable, '-m', 'xtuner.tools.train'])
    cmd += [CFG, '--work-dir', str(work), '--seed', '0', *extra]
    if background:
        return subprocess.Popen(cmd, cwd=run_dir, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
    e = env()
    if launcher == 'xtuner':
        e['NPROC_PER_NODE'] = '2'
    res = subprocess.run(cmd, cwd=run_dir, env=e, capture_output=True, text=True, timeout=600)
    log = res.stdout + res.stderr
    if check:
        assert res.returncode == 0 and 'Traceback' not in log, log[-4000:]
    return log


def logged(log, key):
    return [float(x) for x in re.findall(rf'Iter\(train\) \[\s*\d+/\d+\].*?{key}: ([-\d.e]+)', log)]


def load_ckpt(path):
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.fixture(scope='module')
def full_run(run_dir):
    work = run_dir / 'work_full'
    log = train(run_dir, work)
    return work, log


def test_train_writes_checkpoints_and_learns(full_run):
    work, log = full_run
    assert f'Iter(train) [{ITERS}/{ITERS}]' in log
    for it in (5, 10, 15, ITERS):
        assert (work / f'iter_{it}.pth').is_file()
    sd = load_ckpt(work / f'iter_{ITERS}.pth')['state_dict']
    tops = {k.split('.')[0] for k in sd}
    # the demo trains everything but the (random, frozen) ConvNeXt: all trained parts are in the checkpoint
    assert tops == {'llm', 'visual_encoder', 'projector', 'fuse_module', 'bbox_projector', 'box_position_embed'}
    losses = logged(log, 'loss')
    assert len(losses) == ITERS and all(map(lambda x: x == x, losses))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses


def test_resume_is_bit_identical(run_dir, full_run):
    work, _ = full_run
    resumed = run_dir / 'work_resumed'
    resumed.mkdir()
    shutil.copy(work / 'iter_10.pth', resumed / 'iter_10.pth')
    log = train(run_dir, resumed, '--resume', str(resumed / 'iter_10.pth'))
    assert 'resumed' in log.lower()
    a = load_ckpt(work / f'iter_{ITERS}.pth')['state_dict']
    b = load_ckpt(resumed / f'iter_{ITERS}.pth')['state_dict']
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def test_sigkill_mid_run_then_auto_resume_loses_nothing(run_dir, full_run, sigkill_after_checkpoint):
    work, _ = full_run
    killed = run_dir / 'work_killed'
    sigkill_after_checkpoint(train(run_dir, killed, background=True), killed, 'iter_5.pth')
    assert not (killed / f'iter_{ITERS}.pth').exists()
    log = train(run_dir, killed, '--cfg-options', 'resume=True')
    assert f'Iter(train) [{ITERS}/{ITERS}]' in log
    a = load_ckpt(work / f'iter_{ITERS}.pth')['state_dict']
    b = load_ckpt(killed / f'iter_{ITERS}.pth')['state_dict']
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope='module')
def export_dir(run_dir, full_run):
    """`xtuner convert pth_to_hf --fp32` of the full run's last checkpoint."""
    work, _ = full_run
    out = run_dir / 'export'
    res = subprocess.run([str(BIN / 'xtuner'), 'convert', 'pth_to_hf', CFG, str(work / f'iter_{ITERS}.pth'),
                          str(out), '--fp32'], cwd=run_dir, env=env(), capture_output=True, text=True, timeout=600)
    assert 'All done' in res.stdout + res.stderr, (res.stdout + res.stderr)[-3000:]
    return out


def test_pth_to_hf_round_trip_gives_the_same_loss(run_dir, full_run, export_dir):
    from mmengine.config import Config
    from xtuner.registry import BUILDER

    from mg_llava.data import mg_llava_collate_fn
    from mg_llava.engine.wiring import complete_dataset
    from mg_llava.models import MGLLaVAModel
    work, _ = full_run
    out = export_dir
    ckpt = work / f'iter_{ITERS}.pth'
    for name in ('mg_llava_config.json', 'projector.safetensors', 'fuse_module.safetensors',
                 'bbox_projector.safetensors', 'box_position_embed.safetensors', 'llm', 'visual_encoder',
                 'tokenizer'):
        assert (out / name).exists(), name

    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        cfg = Config.fromfile(CFG)
        cfg.model.pretrained_pth = str(ckpt)
        model = BUILDER.build(cfg.model).eval()
        with pytest.raises(ValueError, match='complete_dataset'):   # the dataset's model facts live in `model`
            BUILDER.build(cfg.train_dataloader.dataset)
        dataset = BUILDER.build(complete_dataset(cfg.train_dataloader.dataset, cfg.model))
        batch = mg_llava_collate_fn([dataset[i] for i in range(4)], return_hf_format=True)
        rebuilt = MGLLaVAModel.from_pretrained(str(out))
    finally:
        os.chdir(cwd)
    with torch.no_grad():
        want = model(batch, mode='loss')['loss']
        got = rebuilt(batch, mode='loss')['loss']
    assert torch.isfinite(want)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_two_process_ddp_matches_one_process(run_dir, full_run):
    _, log1 = full_run
    work = run_dir / 'work_ddp'
    log2 = train(run_dir, work, '--cfg-options', 'train_dataloader.batch_size=2', launcher='xtuner')
    assert 'Traceback' not in log2 and (work / f'iter_{ITERS}.pth').is_file(), log2[-3000:]
    # Step 1 sees the same 4 samples (DefaultSampler deals rank r the indices r::2), every sample has the
    # same number of supervised tokens, so the DDP-averaged gradient equals the 1-process gradient.
    g1, g2 = logged(log1, 'grad_norm')[0], logged(log2, 'grad_norm')[0]
    assert abs(g1 - g2) <= 1e-4 * g1, (g1, g2)


def test_two_process_packed_training_matches_one_process(run_dir):
    """pack_to_max_length through the real CLI, 1 vs 2 processes on the same packs. Rows hold 2 or 3 samples, so
    the ranks hold different numbers of supervised tokens: the packed loss is the token mean over all ranks
    (losses.global_token_mean_ce), and DDP's averaged gradient equals the 1-process gradient."""
    opts = ['--cfg-options', 'train_dataloader.dataset.pack_to_max_length=True',
            'train_dataloader.dataset.max_packed_length=300', 'train_cfg.max_epochs=1']
    log1 = train(run_dir, run_dir / 'work_pack1', *opts)
    log2 = train(run_dir, run_dir / 'work_pack2', *opts, 'train_dataloader.batch_size=2', launcher='xtuner')
    rows = re.search(r'36 samples packed into (\d+) rows of <= 300 tokens', log1)
    assert rows and 12 <= int(rows.group(1)) < 18, log1[-3000:]    # some rows hold 3 samples
    assert 'Traceback' not in log2, log2[-3000:]
    # every step: a per-rank token mean already differs at step 2 (5.5188 vs 5.5106, measured)
    g1, g2 = logged(log1, 'grad_norm'), logged(log2, 'grad_norm')
    assert len(g1) == len(g2) >= 4 and all(abs(a - b) <= 1e-4 * a for a, b in zip(g1, g2)), (g1, g2)


# ------------------------------------------------------------------------------------------- evaluation
EVAL_NAMES = ('shapes_mc', 'shapes_pope', 'shapes_short')


def evaluate(run_dir, out, *source, nproc=1):
    """tools/test.py on the tiny config's `evaluation` (the held-out split in benchmark formats)."""
    args = [str(REPO / 'tools/test.py'), CFG, *map(str, source), '--work-dir', str(out), '--dtype', 'fp32',
            '--batch-size', '4', '--no-progress']
    cmd = [sys.executable, *args] if nproc == 1 else [
        str(BIN / 'torchrun'), f'--nproc-per-node={nproc}', '--master-port=29533', *args, '--launcher', 'pytorch']
    res = subprocess.run(cmd, cwd=run_dir, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    preds = {name: (out / f'{name}_predictions.jsonl').read_text() for name in EVAL_NAMES}
    return preds, res.stdout


@pytest.fixture(scope='module')
def eval_ckpt(run_dir, full_run):
    """The last checkpoint with the LLM's matrices redrawn at std 0.1: 18 steps teach the tiny LLM little
    beyond "one word, then EOS", whatever the image; these weights make its answers depend on the image,
    boxes and prompt, so equal predictions below mean equal inputs and weights."""
    work, _ = full_run
    ckpt = load_ckpt(work / f'iter_{ITERS}.pth')
    gen = torch.Generator().manual_seed(0)
    for k, v in ckpt['state_dict'].items():
        if k.startswith('llm.') and v.dim() == 2:
            v.copy_(torch.randn(v.shape, generator=gen) * 0.1)
    path = run_dir / 'eval_ckpt.pth'
    torch.save({'state_dict': ckpt['state_dict'], 'meta': ckpt.get('meta', {})}, path)
    out = run_dir / 'eval_export_model'
    res = subprocess.run([str(BIN / 'xtuner'), 'convert', 'pth_to_hf', CFG, str(path), str(out), '--fp32'],
                         cwd=run_dir, env=env(), capture_output=True, text=True, timeout=600)
    assert 'All done' in res.stdout + res.stderr, (res.stdout + res.stderr)[-3000:]
    return path, out


@pytest.fixture(scope='module')
def export_eval(run_dir, eval_ckpt):
    return evaluate(run_dir, run_dir / 'eval_export', '--export', eval_ckpt[1])


def test_eval_of_checkpoint_and_of_export_give_identical_predictions(run_dir, eval_ckpt, export_eval):
    import json
    ckpt, export = eval_ckpt
    preds_export, stdout = export_eval
    preds_ckpt, _ = evaluate(run_dir, run_dir / 'eval_ckpt', '--checkpoint', ckpt)
    assert preds_ckpt == preds_export
    answers = [json.loads(x)['prediction'] for v in preds_export.values() for x in v.splitlines()]
    assert all(answers) and len(set(answers)) > 1, answers  # real, input-dependent text
    heldout = [json.loads(x) for x in (run_dir / '.demo/world/heldout.jsonl').read_text().splitlines()]
    lines = {k: [json.loads(x) for x in v.splitlines()] for k, v in preds_export.items()}
    assert len(lines['shapes_short']) == len(heldout)
    assert len(lines['shapes_pope']) == sum(q['type'] == 'presence' for q in heldout)
    assert len(lines['shapes_mc']) + len(lines['shapes_pope']) == len(heldout)
    summary = (run_dir / 'eval_export' / 'summary.md').read_text()
    for needle in ('| shapes_mc | mmbench | accuracy |', '| shapes_pope | pope | f1 |',
                   '| shapes_short | gqa | accuracy |', str(export)):
        assert needle in summary, needle
    assert summary in stdout
    csv_rows = (run_dir / 'eval_export' / 'summary.csv').read_text().splitlines()
    assert 'name,benchmark,metric,value' in csv_rows
    assert any(r.startswith('shapes_pope,pope,yes_ratio,') for r in csv_rows)
    scores = json.loads((run_dir / 'eval_export' / 'shapes_short_scores.json').read_text())
    right = sum(p['prediction'].rstrip('.').lower() == q['answer']
                for p, q in zip(lines['shapes_short'], heldout))  # the file keeps the held-out order
    assert scores['accuracy'] == pytest.approx(100 * right / len(heldout))
    assert (run_dir / 'eval_export' / 'shapes_short_submission.json').is_file()  # GQA's official format


def test_two_process_eval_matches_one_process(run_dir, eval_ckpt, export_eval):
    preds_1, _ = export_eval
    preds_2, _ = evaluate(run_dir, run_dir / 'eval_2proc', '--export', eval_ckpt[1], nproc=2)
    assert preds_2 == preds_1


def test_eval_sh_runs_tools_test_on_an_export(run_dir, eval_ckpt, export_eval):
    preds_1, _ = export_eval
    out = run_dir / 'eval_sh'
    res = subprocess.run(['bash', str(REPO / 'script/eval.sh'), CFG, str(eval_ckpt[1]), str(out), '--dtype', 'fp32',
                          '--batch-size', '4', '--no-progress', '--benchmarks', 'shapes_pope'],
                         cwd=run_dir, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert (out / 'shapes_pope_predictions.jsonl').read_text() == preds_1['shapes_pope']
    assert not (out / 'shapes_mc_predictions.jsonl').exists()


def test_pipeline_runs_every_stage_and_stops_at_the_first_failure(run_dir):
    pipeline = str(REPO / 'script/pipeline.sh')
    work = run_dir / 'pipeline'
    e = dict(env(), EXPORT_ARGS='--fp32', EVAL_ARGS='--dtype fp32 --no-progress --benchmarks shapes_pope')
    res = subprocess.run(['bash', pipeline, CFG, CFG, str(work)], cwd=run_dir, env=e, capture_output=True,
                         text=True, timeout=900)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    for stage in ('[1/4] pretrain', '[2/4] instruction tuning', '[3/4] export', '[4/4] evaluation'):
        assert stage in log, stage
    # stage 2 started from stage 1's checkpoint
    assert f'pretrained_pth={work}/pretrain/iter_{ITERS}.pth' in log
    assert (work / 'export' / 'mg_llava_config.json').is_file()
    assert (work / 'eval' / 'summary.md').is_file() and (work / 'eval' / 'shapes_pope_scores.json').is_file()
    # a crash in stage 1 (here: run where the config's .demo/ assets do not exist; `xtuner train` would still
    # exit 0) stops the pipeline before stage 2
    elsewhere = run_dir / 'no_assets_here'
    elsewhere.mkdir()
    res = subprocess.run(['bash', pipeline, CFG, CFG, str(elsewhere / 'work')], cwd=elsewhere, env=e,
                         capture_output=True, text=True, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode != 0 and '[1/4] pretrain' in log and '[2/4]' not in log, log[-3000:]
