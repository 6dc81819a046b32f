"""Warm-up + cosine learning-rate schedule that survives short runs.

xtuner/LLaVA configs write the warm-up as a fraction of the epochs (`warmup_ratio * max_epochs`), and
mmengine truncates it to whole iterations (`int(ratio * epoch_length)`). Two silent failures follow on small
data: 0 iterations crashes (`end should be larger than begin`), and exactly 1 iteration never ramps up — mmengine
schedulers are chainable, so the lr stays at `start_factor * lr` (2e-9) for the whole run. These subclasses
round the converted warm-up up to MIN_WARMUP_ITERS (one iteration at the low lr, then the full lr), and
the cosine phase starts where the warm-up ends. When the converted warm-up is already >= 2 iterations the
schedule is exactly mmengine's.

One fact, one place: `warmup_ratio` is given once, to WarmupLR (a fraction of the run: mmengine defaults `end`
to `train_cfg.max_epochs`), and CosineAfterWarmupLR starts where the WarmupLR before it ended and ends with the
run, so neither repeats max_epochs nor the ratio. Explicit `begin`/`end` (epochs) still work as in mmengine.
"""
from mmengine.optim import CosineAnnealingLR, LinearLR
from mmengine.optim.scheduler.param_scheduler import INF

MIN_WARMUP_ITERS = 2


def warmup_iters(ratio_epochs, epoch_length):
    """Warm-up length in iterations for a warm-up of `ratio_epochs` epochs (0 = no warm-up)."""
    if ratio_epochs <= 0:
        return 0
    return max(int(ratio_epochs * epoch_length), MIN_WARMUP_ITERS)


# The optimizer wrapper remembers where the warm-up ended, for the CosineAfterWarmupLR built after it.
_WARMUP_END = '_mg_llava_warmup_end_iter'


class WarmupLR(LinearLR):
    """`LinearLR` whose epoch-based `end` becomes at least MIN_WARMUP_ITERS iterations (0 = no warm-up).
    warmup_ratio: the warm-up as a fraction of `end` (= max_epochs unless given)."""

    @classmethod
    def build_iter_from_epoch(cls, *args, begin=0, end=INF, by_epoch=True, epoch_length=None, warmup_ratio=None,
                              **kwargs):
        assert by_epoch and epoch_length, 'WarmupLR converts an epoch-based warm-up: set by_epoch=True'
        if warmup_ratio is not None:
            end = warmup_ratio * end
        n = warmup_iters(end, epoch_length)
        setattr(kwargs['optimizer'], _WARMUP_END, n)
        if n == 0:  # no warm-up: a one-iteration no-op keeps the scheduler list (and resume state) the same shape
            kwargs.update(start_factor=1.0, end_factor=1.0)
            n = 1
        return cls(*args, begin=int(begin * epoch_length), end=n, by_epoch=False, **kwargs)


class CosineAfterWarmupLR(CosineAnnealingLR):
    """`CosineAnnealingLR` that begins where the `WarmupLR` before it ends (or at `begin` epochs when given);
    clear error when the run is too short for both."""

    @classmethod
    def build_iter_from_epoch(cls, *args, begin=None, end=INF, by_epoch=True, epoch_length=None, **kwargs):
        assert by_epoch and epoch_length, 'CosineAfterWarmupLR converts an epoch-based schedule: set by_epoch=True'
        if begin is None:
            start = getattr(kwargs['optimizer'], _WARMUP_END, 0)
        else:
            start = warmup_iters(begin, epoch_length)
        stop = int(end * epoch_length) if end != INF else INF
        if stop <= start:
            raise ValueError(
                f'the run has {stop} iterations ({epoch_length} per epoch) but the warm-up takes {start}: '
                f'train longer (more data or max_epochs) or set warmup_ratio = 0')
        return cls(*args, begin=start, end=stop, by_epoch=False, **kwargs)
