"""mg_llava.engine and mg_llava.cfg without the CLI: short-run warm-up, the CPU optimizer wrapper, the resume hook,
and listing/copying the shipped configs."""
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import PARAM_SCHEDULERS

from mg_llava.engine import AutoAmpOptimWrapper, CosineAfterWarmupLR, ExactResumeHook, WarmupLR
from mg_llava.engine.resume import rng_state, set_rng_state


def lr_sequence(total_iters, warmup_ratio, lr=2e-4, start_factor=1e-5):
    """The lr of each iteration for the shipped schedule, built as mmengine builds it (epoch -> iteration)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    cfgs = [dict(type=WarmupLR, start_factor=start_factor, by_epoch=True, begin=0, end=warmup_ratio,
                 convert_to_iter_based=True),
            dict(type=CosineAfterWarmupLR, eta_min=0.0, by_epoch=True, begin=warmup_ratio, end=1,
                 convert_to_iter_based=True)]
    scheds = [PARAM_SCHEDULERS.build(c, default_args=dict(optimizer=opt, epoch_length=total_iters)) for c in cfgs]
    out = []
    for _ in range(total_iters):
        out.append(opt.param_groups[0]['lr'])
        for s in scheds:
            s.step()
    return out


def test_warmup_that_truncates_to_zero_iterations_still_ramps():
    lrs = lr_sequence(14, 0.03)  # mmengine: int(0.42) = 0 -> "end should be larger than begin" before the fix
    assert lrs[0] == pytest.approx(2e-9) and lrs[1] == pytest.approx(2e-4)
    assert all(x > 1e-5 for x in lrs[1:12])


def test_warmup_of_exactly_one_iteration_is_lengthened():
    lrs = lr_sequence(40, 0.03)  # int(1.2) = 1: mmengine's LinearLR never ramps (lr stuck at 2e-9)
    assert lrs[1] == pytest.approx(2e-4) and min(lrs[1:30]) > 1e-5


def test_long_warmup_is_exactly_mmengines():
    from mmengine.optim import CosineAnnealingLR, LinearLR
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ref = [PARAM_SCHEDULERS.build(dict(type=LinearLR, start_factor=1e-5, by_epoch=True, begin=0, end=0.03,
                                       convert_to_iter_based=True), default_args=dict(optimizer=opt, epoch_length=1000)),
           PARAM_SCHEDULERS.build(dict(type=CosineAnnealingLR, eta_min=0.0, by_epoch=True, begin=0.03, end=1,
                                       convert_to_iter_based=True), default_args=dict(optimizer=opt, epoch_length=1000))]
    want = []
    for _ in range(1000):
        want.append(opt.param_groups[0]['lr'])
        for s in ref:
            s.step()
    assert lr_sequence(1000, 0.03, lr=1e-3) == want


def test_run_too_short_for_warmup_names_the_fix():
    with pytest.raises(ValueError, match='warmup_ratio = 0'):
        lr_sequence(2, 0.5)


def test_no_warmup_is_allowed():
    lrs = lr_sequence(10, 0.0)
    assert lrs[0] == pytest.approx(2e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-host behaviour')
def test_amp_wrapper_falls_back_to_fp32_on_cpu():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    w = AutoAmpOptimWrapper(optimizer=opt, clip_grad=dict(max_norm=1.0), accumulative_counts=2,
                            loss_scale='dynamic', dtype='float16')
    assert type(w) is OptimWrapper and w.optimizer is opt and w._accumulative_counts == 2


def test_resume_hook_refuses_a_checkpoint_without_optimizer_state():
    hook = ExactResumeHook()
    runner = SimpleNamespace(_resume=True)
    with pytest.raises(RuntimeError, match='save_optimizer=False'):
        hook.after_load_checkpoint(runner, {'state_dict': {}, 'meta': {}, 'param_schedulers': []})
    hook.after_load_checkpoint(SimpleNamespace(_resume=False), {'state_dict': {}, 'meta': {}})  # load_from: fine


def test_checkpoint_round_trips_through_a_weights_only_load(tmp_path):
    from mmengine.logging import HistoryBuffer
    import numpy as np
    hook = ExactResumeHook()
    buf = HistoryBuffer([1.5, 2.5], [1, 1])
    ckpt = {'meta': {}, 'state_dict': {}, 'optimizer': {}, 'param_schedulers': [],
            'message_hub': {'log_scalars': {'train/loss': buf}, 'runtime_info': {'eta': np.float64(3.0)},
                            'resumed_keys': {}}}
    torch.manual_seed(7)
    hook.before_save_checkpoint(None, ckpt)
    torch.save(ckpt, tmp_path / 'c.pth')
    expected = torch.rand(3)
    loaded = torch.load(tmp_path / 'c.pth', weights_only=True)  # no pickled objects
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), loaded)
    got = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(got, HistoryBuffer) and got.data[0].tolist() == [1.5, 2.5] and got.current() == 2.5
    torch.manual_seed(0)
    hook.before_train_iter(None, 0)  # restores the generators to the saved point
    assert torch.equal(torch.rand(3), expected)


def test_rng_state_round_trip():
    import random
    import numpy as np
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_cfg_list_and_copy_from_another_folder(tmp_path):
    out = subprocess.run([sys.executable, '-m', 'mg_llava.cfg', 'list', '-p', 'vicuna7b'], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and 'mg_llava/vicuna7b_sft' in out.stdout.split(), out.stderr
    out = subprocess.run([sys.executable, '-m', 'mg_llava.cfg', 'copy', 'mg_llava/vicuna7b_sft', str(tmp_path / 'c')],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / 'c' / 'vicuna7b_sft.py').read_text()
    assert 'from mg_llava.configs._base_.mg_llava_sft import *' in text
    from mmengine.config import Config
    cfg = Config.fromfile(str(tmp_path / 'c' / 'vicuna7b_sft.py'))
    assert cfg.model.llm == 'model_zoo/lmsys/vicuna-7b-v1.5'
    assert cfg.default_hooks.checkpoint.save_optimizer is True
