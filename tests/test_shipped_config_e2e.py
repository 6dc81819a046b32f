"""A user's own config, in their own folder, derived from a SHIPPED config (tiny stand-in paths), through the
real CLI with no special environment variables: exact resume after SIGKILL, `--resume PATH`, the refusal to
resume without optimizer state, short-run warm-up, DeepSpeed presets on CPU, TensorBoard, and `pth_to_hf` of a
checkpoint that lacks the config's trained parts (issue 7)."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
ITERS = 18  # 72 samples / batch 4, 1 epoch (the shipped SFT recipe's max_epochs)

USER_CONFIG = '''# A user's config outside the repository, inheriting a shipped one by absolute import.
from mmengine.config import read_base

with read_base():
    from mg_llava.configs.mg_llava.vicuna7b_sft import *  # noqa: F401,F403

assets = '{root}/.demo/assets/'
world = '{root}/.demo/world/'
model.update(llm=assets + 'llm', llm_dtype=None, tokenizer=assets + 'tokenizer',  # fp32: the CPU override
             visual_encoder=assets + 'clip_vit', visual_encoder_aux=assets + 'convnext', pretrained_pth=None,
             vision_spec=dict(image_size=56, image_size_aux=128))
train_dataloader.update(batch_size=4, num_workers=0, pin_memory=False)
train_dataloader.dataset.update(data_path=world + 'sft.json', image_folder=world + 'images',
                                box_json_path=world + 'boxes.json', max_length=256)
default_hooks.checkpoint.update(interval=5, max_keep_ckpts=-1)
default_hooks.logger.update(interval=1)
'''


def env():
    e = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}  # must not be needed
    e.update(HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1', TOKENIZERS_PARALLELISM='false',
             OMP_NUM_THREADS='1', PYTHONPATH='')
    e['PATH'] = f'{BIN}:{e["PATH"]}'
    return e


@pytest.fixture(scope='module')
def user_dir(tmp_path_factory):
    """A folder outside the repository holding tiny assets, a world and the user's config."""
    from mg_llava.demo.tiny_assets import PRESETS, build_tiny_assets
    from mg_llava.demo.world import generate_world
    root = tmp_path_factory.mktemp('user')
    generate_world(root / '.demo/world', num_train=72, num_heldout=4, text_only_frac=0.0)
    sizes = {k: v for k, v in PRESETS['demo'].items() if k.endswith('_kwargs')}
    build_tiny_assets(root / '.demo/assets', world_dir=root / '.demo/world', llm_hidden=64, llm_layers=2,
                      llm_intermediate=128, **sizes)
    (root / 'my_sft.py').write_text(USER_CONFIG.format(root=root))
    return root


def run(user_dir, *args, background=False, module='xtuner.tools.train'):
    cmd = [sys.executable, '-m', module, *map(str, args)]
    if background:
        return subprocess.Popen(cmd, cwd=user_dir, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
    res = subprocess.run(cmd, cwd=user_dir, env=env(), capture_output=True, text=True, timeout=900)
    return res.returncode, res.stdout + res.stderr


def train(user_dir, work, *extra):
    rc, log = run(user_dir, user_dir / 'my_sft.py', '--work-dir', work, '--seed', '0', *extra)
    assert rc == 0 and 'Traceback' not in log, log[-4000:]
    return log


def lrs(log):
    return {int(i): float(v) for i, v in re.findall(r'Iter\(train\) \[\s*(\d+)/\d+\]\s+lr: ([-\d.e+]+)', log)}


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


@pytest.fixture(scope='module')
def full_run(user_dir):
    work = user_dir / 'work_full'
    return work, train(user_dir, work)


def test_shipped_config_from_a_user_folder_trains_with_a_real_warmup(full_run):
    work, log = full_run
    lr = lrs(log)
    assert sorted(lr) == list(range(1, ITERS + 1)), log[-3000:]
    # warmup_ratio 0.03 x 18 iterations truncates to 0 in mmengine (crash); here 2 iterations: 1e-5 x lr, then lr
    assert lr[1] == pytest.approx(2e-10, rel=1e-3) and lr[2] == pytest.approx(2e-5, rel=1e-3), lr
    assert all(lr[i] > 1e-6 for i in range(2, ITERS - 2)), lr  # the cosine ends near 0
    assert 'plain fp32 OptimWrapper' in log  # the shipped AMP wrapper chose fp32 on this CPU host
    ckpt = torch.load(work / 'iter_10.pth', map_location='cpu', weights_only=True)  # no pickled objects
    assert {'optimizer', 'param_schedulers'} <= set(ckpt)


def test_sigkill_then_auto_resume_continues_the_same_lr_and_weights(user_dir, full_run, sigkill_after_checkpoint):
    ref_work, ref_log = full_run
    work = user_dir / 'work_killed'
    proc = run(user_dir, user_dir / 'my_sft.py', '--work-dir', work, '--seed', '0', background=True)
    sigkill_after_checkpoint(proc, work, 'iter_5.pth')
    assert not (work / f'iter_{ITERS}.pth').exists()
    log = train(user_dir, work, '--cfg-options', 'resume=True')
    resumed, ref = lrs(log), lrs(ref_log)
    assert resumed and max(resumed) == ITERS and min(resumed) > 5, sorted(resumed)
    assert all(resumed[i] == ref[i] for i in resumed), (resumed, ref)  # was ~1e-9 with save_optimizer=False
    a, b = weights(ref_work / f'iter_{ITERS}.pth'), weights(work / f'iter_{ITERS}.pth')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_path_needs_no_environment_variable(user_dir, full_run):
    ref_work, ref_log = full_run
    work = user_dir / 'work_resume_path'
    work.mkdir()
    (work / 'iter_10.pth').write_bytes((ref_work / 'iter_10.pth').read_bytes())
    log = train(user_dir, work, '--resume', work / 'iter_10.pth')
    assert 'resumed epoch: 0, iter: 10' in log and 'restored the RNG state' in log
    assert lrs(log) == {i: v for i, v in lrs(ref_log).items() if i > 10}
    a, b = weights(ref_work / f'iter_{ITERS}.pth'), weights(work / f'iter_{ITERS}.pth')
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_optimizer_state_stops_with_the_reason(user_dir, full_run):
    ref_work, _ = full_run
    work = user_dir / 'work_no_optim'
    work.mkdir()
    ckpt = torch.load(ref_work / 'iter_10.pth', map_location='cpu', weights_only=True)
    del ckpt['optimizer']  # what CheckpointHook(save_optimizer=False) writes
    torch.save(ckpt, work / 'iter_10.pth')
    rc, log = run(user_dir, user_dir / 'my_sft.py', '--work-dir', work, '--resume', work / 'iter_10.pth')
    assert rc != 0 and 'cannot resume exactly' in log and 'save_optimizer=False' in log, log[-3000:]
    assert 'Iter(train) [11/' not in log


def test_pth_to_hf_of_a_checkpoint_lacking_trained_parts_writes_nothing(user_dir, full_run):
    ref_work, _ = full_run
    ckpt = torch.load(ref_work / 'iter_10.pth', map_location='cpu', weights_only=True)
    ckpt['state_dict'] = {k: v for k, v in ckpt['state_dict'].items() if not k.startswith('llm.')}  # stage-1-like
    torch.save(ckpt, user_dir / 'adapters_only.pth')
    out = user_dir / 'bad_export'
    rc, log = run(user_dir, user_dir / 'my_sft.py', user_dir / 'adapters_only.pth', out,
                  module='xtuner.tools.model_converters.pth_to_hf')
    assert rc != 0 and 'lacks trained parts of this config: llm (' in log, log[-3000:]
    assert not out.exists() and not list(user_dir.glob('.bad_export.tmp-*'))
    rc, log = run(user_dir, user_dir / 'my_sft.py', ref_work / 'iter_10.pth', out, '--fp32',
                  module='xtuner.tools.model_converters.pth_to_hf')
    assert rc == 0 and (out / 'mg_llava_config.json').is_file() and (out / 'llm').is_dir(), log[-3000:]
    assert not list(user_dir.glob('.bad_export.tmp-*'))


def test_tensorboard_switch_writes_event_files(user_dir):
    import tensorboard  # noqa: F401 - a test dependency (Makefile): its absence is a failure, not a skip
    work = user_dir / 'work_tb'
    train(user_dir, work, '--cfg-options', 'visualizer.tensorboard=True', 'train_dataloader.dataset.data_path='
          + str(user_dir / '.demo/world/sft.json'), 'default_hooks.checkpoint.interval=100')
    assert list(work.glob('*/vis_data/events.out.tfevents.*')), sorted(p.name for p in work.rglob('*'))[:20]


@pytest.fixture(scope='module')
def deepspeed_python(tmp_path_factory):
    """A Python that sees this venv plus deepspeed==0.16.2 (xtuner's extra), installed into an overlay venv:
    importing deepspeed costs every mmengine process seconds and log noise, so the project venv stays without.
    (Where deepspeed is already importable, e.g. a GPU machine, that Python is used as it is.)"""
    if importlib.util.find_spec('deepspeed') is not None:
        return sys.executable
    import site
    overlay = tmp_path_factory.mktemp('ds_venv')
    subprocess.run([sys.executable, '-m', 'venv', str(overlay)], check=True)
    python = str(overlay / 'bin' / 'python')
    purelib = subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the overlay sees every package of this venv (addsitedir also runs its .pth files: the editable mg_llava);
    # pip then installs only what deepspeed adds
    Path(purelib, 'project_venv.pth').write_text(
        ''.join(f'import site; site.addsitedir({d!r})\n' for d in site.getsitepackages()))
    res = subprocess.run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', 'deepspeed==0.16.2'],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f'pip install deepspeed==0.16.2 (PyPI) failed: {res.stderr[-2000:]}'
    return str(overlay / 'bin' / 'python')


def test_deepspeed_zero2_preset_runs_and_resumes_in_one_cpu_process(user_dir, deepspeed_python):
    import shutil
    e = env()
    e['PATH'] = f'{Path(deepspeed_python).parent}:{e["PATH"]}'

    def ds_train(work, *extra):
        cmd = [deepspeed_python, '-m', 'xtuner.tools.train', str(user_dir / 'my_sft.py'), '--work-dir', str(work),
               '--seed', '0', '--deepspeed', 'deepspeed_zero2', '--cfg-options', 'default_hooks.checkpoint.interval=10',
               *map(str, extra)]
        res = subprocess.run(cmd, cwd=user_dir, env=e, capture_output=True, text=True, timeout=900)
        log = res.stdout + res.stderr
        assert res.returncode == 0 and f'Iter(train) [{ITERS}/{ITERS}]' in log, log[-4000:]
        return log

    work = user_dir / 'work_ds'
    log = ds_train(work)
    # xtuner's preset says fp16 "auto": on a CPU host that would be fp16 on CPU; with CUDA it stays fp16
    assert ('fp16 switched off' in log) == (not torch.cuda.is_available()), log[-3000:]
    assert (work / 'iter_10.pth').is_dir() and (work / f'iter_{ITERS}.pth').is_dir()  # DeepSpeed checkpoint folders
    # --resume of a DeepSpeed folder: xtuner reads the seed with a bare torch.load (weights-only) before our code
    resumed = user_dir / 'work_ds_resumed'
    shutil.copytree(work / 'iter_10.pth', resumed / 'iter_10.pth')
    log2 = ds_train(resumed, '--resume', resumed / 'iter_10.pth')
    assert 'restored the RNG state' in log2
    assert lrs(log2) == {i: v for i, v in lrs(log).items() if i > 10}
