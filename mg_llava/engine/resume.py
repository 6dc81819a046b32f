"""Exact resume: checkpoints that load with `weights_only=True`, carry the RNG state, and refuse to resume
without the optimizer state.

Why each part:
- torch>=2.6 loads with `weights_only=True` by default, and xtuner's `--resume` reads the seed with a bare
  `torch.load` before any of our code can run. mmengine pickles its log buffers (`HistoryBuffer`, numpy
  arrays), which that loader rejects. We store them as plain lists and rebuild them on load, so every
  checkpoint we write is weights-only loadable: no `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`, no trusted-pickle loader.
- mmengine schedulers are chainable (each step multiplies the optimizer's current lr). A checkpoint saved
  without the optimizer (`CheckpointHook(save_optimizer=False)`) resumes from a fresh warm-up lr of ~1e-9 and
  trains on silently. We stop instead, saying why.
- mmengine re-seeds on resume but does not restore the generators' positions; we save python/numpy/torch
  (and CUDA) RNG states and restore them right before the first resumed iteration (after the data loader has
  skipped the batches already trained), so dropout and any sampling continue as in an uninterrupted run.
  Only rank 0 writes checkpoints, so with several ranks every rank gets rank 0's state.
"""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer, print_log

_BUFFER_TAG = '__history_buffer__'


def _plain_buffers(log_scalars):
    return {k: {_BUFFER_TAG: True, 'log': v._log_history.tolist(), 'count': v._count_history.tolist(),
                'max_length': v.max_length} if isinstance(v, HistoryBuffer) else v
            for k, v in log_scalars.items()}


def _history_buffers(log_scalars):
    return {k: HistoryBuffer(v['log'], v['count'], v['max_length'])
            if isinstance(v, dict) and v.get(_BUFFER_TAG) else v for k, v in log_scalars.items()}


def _plain_scalars(obj):
    """numpy scalars (e.g. runtime_info['eta']) -> python numbers, recursively."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain_scalars(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain_scalars(v) for v in obj)
    return obj


def rng_state():
    """Every generator a training step may draw from, in weights-only-loadable types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(python=random.getstate(), torch=torch.get_rng_state(),
                 numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                            has_gauss=int(has_gauss), gauss=float(gauss)))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['gauss']))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


class ExactResumeHook(Hook):
    """Add to `custom_hooks` (the shipped bases do). See the module docstring."""

    priority = 'VERY_LOW'  # edit the checkpoint after every other hook has added to it

    def __init__(self):
        self._pending_rng = None

    def before_save_checkpoint(self, runner, checkpoint):
        hub = checkpoint.get('message_hub')
        if isinstance(hub, dict) and 'log_scalars' in hub:
            hub['log_scalars'] = _plain_buffers(hub['log_scalars'])
            hub['runtime_info'] = _plain_scalars(hub.get('runtime_info', {}))
        checkpoint.setdefault('meta', {})['rng_state'] = rng_state()

    def after_load_checkpoint(self, runner, checkpoint):
        hub = checkpoint.get('message_hub')
        if isinstance(hub, dict) and 'log_scalars' in hub:
            hub['log_scalars'] = _history_buffers(hub['log_scalars'])
        if not getattr(runner, '_resume', False):
            return  # load_from: weights only, a fresh optimizer and schedule are intended
        # A DeepSpeed checkpoint's client state has no 'state_dict'/'optimizer' (DeepSpeed restores those itself).
        missing = [k for k in ('optimizer', 'param_schedulers') if k not in checkpoint] \
            if 'state_dict' in checkpoint else []
        if missing:
            raise RuntimeError(
                f'cannot resume exactly: the checkpoint has no {" / ".join(missing)} state (it was written with '
                '`default_hooks.checkpoint.save_optimizer=False` or `save_param_scheduler=False`). Resuming would '
                'restart the chained lr schedule from its warm-up value (~1e-9) and train on silently. Resume from '
                'a checkpoint saved with the optimizer, or start a new run with `load_from=<checkpoint>` '
                '(weights only, fresh optimizer and schedule).')
        self._pending_rng = checkpoint.get('meta', {}).get('rng_state')

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None
            print_log('restored the RNG state saved with the checkpoint', 'current')
