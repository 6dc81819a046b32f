"""End-to-end through the real CLI: `xtuner train`, resume, SIGKILL + auto-resume, pth_to_hf, 2-process DDP."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CFG = str(REPO / 'configs/tiny/mg_llava_tiny_sft.py')
BIN = Path(sys.executable).parent
ITERS = 18  # 36 samples / batch 4 * 2 epochs


def env():
    e = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1',
             TOKENIZERS_PARALLELISM='false', TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1', OMP_NUM_THREADS='1')
    e['PATH'] = f'{BIN}:{e["PATH"]}'  # xtuner re-launches python/torchrun from PATH
    return e


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A working dir laid out like the demo's: .demo/world and .demo/assets (tiny)."""
    from mg_llava.demo.tiny_assets import build_tiny_assets
    from mg_llava.demo.world import generate_world
    root = tmp_path_factory.mktemp('e2e')
    generate_world(root / '.demo/world', num_train=36, num_heldout=4, text_only_frac=0.0)
    build_tiny_assets(root / '.demo/assets', world_dir=root / '.demo/world', llm_hidden=64, llm_layers=2,
                      llm_intermediate=128)
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
    # the demo trains everything (nothing is pretrained): all parts are in the checkpoint
    assert tops == {'llm', 'visual_encoder', 'visual_encoder_aux', 'projector', 'fuse_module', 'bbox_projector'}
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


def test_sigkill_mid_run_then_auto_resume_loses_nothing(run_dir, full_run):
    work, _ = full_run
    killed = run_dir / 'work_killed'
    proc = train(run_dir, killed, background=True)
    deadline = time.time() + 300
    while not (killed / 'iter_5.pth').exists() or not (killed / 'last_checkpoint').exists():
        assert proc.poll() is None and time.time() < deadline, 'training ended before the first checkpoint'
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / f'iter_{ITERS}.pth').exists()
    log = train(run_dir, killed, '--cfg-options', 'resume=True')
    assert f'Iter(train) [{ITERS}/{ITERS}]' in log
    a = load_ckpt(work / f'iter_{ITERS}.pth')['state_dict']
    b = load_ckpt(killed / f'iter_{ITERS}.pth')['state_dict']
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pth_to_hf_round_trip_gives_the_same_loss(run_dir, full_run):
    from mmengine.config import Config
    from xtuner.registry import BUILDER

    from mg_llava.data import mg_llava_collate_fn
    from mg_llava.models import load_hf
    work, _ = full_run
    out = run_dir / 'export'
    ckpt = work / f'iter_{ITERS}.pth'
    res = subprocess.run([str(BIN / 'xtuner'), 'convert', 'pth_to_hf', CFG, str(ckpt), str(out), '--fp32'],
                         cwd=run_dir, env=env(), capture_output=True, text=True, timeout=600)
    assert 'All done' in res.stdout + res.stderr, (res.stdout + res.stderr)[-3000:]
    for name in ('mg_llava_config.json', 'projector.safetensors', 'fuse_module.safetensors',
                 'bbox_projector.safetensors', 'visual_encoder_aux.safetensors', 'llm', 'visual_encoder', 'tokenizer'):
        assert (out / name).exists(), name

    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        cfg = Config.fromfile(CFG)
        cfg.model.pretrained_pth = str(ckpt)
        model = BUILDER.build(cfg.model).eval()
        dataset = BUILDER.build(cfg.train_dataloader.dataset)
        batch = mg_llava_collate_fn([dataset[i] for i in range(4)], return_hf_format=True)
        rebuilt = load_hf(str(out))
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
