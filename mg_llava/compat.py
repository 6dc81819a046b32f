"""Small, guarded shims that let pip xtuner 0.2.0 / mmengine 0.10.6 run on CPU-only hosts, resume without
environment variables, and run DeepSpeed in one process. Every patch is inert where it is not needed.

When our code runs: mmengine parses xtuner configs lazily, so nothing of ours executes until the first
config value that names it is read. xtuner's `train.py` reads `use_varlen_attn` first of all (its
`check_cfg`), before the `--resume` seed read and the `--deepspeed` dtype choice. The shipped bases therefore
set `use_varlen_attn = VARLEN_ATTN` imported from here: resolving it imports this module, which installs the
shims, and yields False. `DIST_TIMEOUT` (read by `Runner.setup_env` before `torch.cuda.set_device`) is a
second, later entry point for configs that do not inherit the bases.
"""
import importlib.util
import json
import os
import socket
import sys

import torch

VARLEN_ATTN = False  # see the module docstring: the value xtuner reads first
DIST_TIMEOUT = 1800  # seconds, not a timedelta: mmengine's init_dist rejects timedelta objects
DIST_BACKEND = 'nccl' if torch.cuda.is_available() else 'gloo'

_PATCHED = False


def _weights_only_local_loader(filename, map_location):
    # Our checkpoints are weights-only loadable (mg_llava.engine.resume.ExactResumeHook); torch's default
    # safe loader is used, never a trusted-pickle load.
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError or RuntimeError here
        if 'Weights only load failed' not in str(e):
            raise
        raise RuntimeError(
            f'{filename} holds pickled Python objects (a checkpoint written by plain mmengine or an older '
            'mg_llava), which torch>=2.6 refuses to load by default. If you trust the file, run this command '
            'once with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1; checkpoints written from now on load without it.'
        ) from None


def bitsandbytes_usable():
    """xtuner pins bitsandbytes 0.45.0, whose import fails next to triton>=3.2 ('No module named triton.ops')."""
    try:
        import bitsandbytes  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - any import failure means: unusable here
        return False


def hide_broken_bitsandbytes():
    """peft's LoRA dispatch imports bitsandbytes whenever it is installed; when that import is broken, tell
    peft it is absent so plain LoRA still works (QLoRA then needs a working bitsandbytes, on a GPU)."""
    if bitsandbytes_usable():
        return
    import peft.tuners.lora.model as lora_model
    lora_model.is_bnb_available = lambda: False
    lora_model.is_bnb_4bit_available = lambda: False


class _HideBitsandbytesFromEagerImports:
    """Meta-path finder: on a host without CUDA, `mmengine.optim` (registering bitsandbytes' optimizers) and
    `peft.helpers` import bitsandbytes as a side effect of their own import, which prints its "compiled without
    GPU support" notice in every command. Those two importers are told it is absent; any real use (QLoRA, an
    explicit `import bitsandbytes`) still imports it. A no-op with CUDA."""

    EAGER_IMPORTERS = frozenset({'mmengine.optim.optimizer.builder', 'peft.helpers'})

    def find_spec(self, name, path=None, target=None):
        if name != 'bitsandbytes' or torch.cuda.is_available():
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get('__name__', '').startswith(('importlib', '_frozen_importlib')):
            frame = frame.f_back
        if frame is not None and frame.f_globals.get('__name__') in self.EAGER_IMPORTERS:
            raise ModuleNotFoundError('bitsandbytes hidden from an import-time registration (no CUDA)',
                                      name=name)
        return None


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def _patch_deepspeed_strategy():
    """`xtuner train --deepspeed deepspeed_zero2` on a CPU host, and in one process anywhere.

    - xtuner's presets say fp16/bf16 "auto", which resolves to fp16 on a CPU host; DeepSpeed has no CPU fp16
      training, so on a host without CUDA both are switched off (the same as configs/deepspeed/ds_zero2_cpu.json).
    - Without torchrun/SLURM variables DeepSpeed looks for MPI (`No module named 'mpi4py'`); a single process
      gets the variables of a one-rank torchrun instead.
    - mmengine's DeepSpeedStrategy drops the runner's save/load callbacks, i.e. the checkpoint hooks (resume).
    """
    from mmengine.logging import print_log
    from xtuner.engine._strategy import deepspeed as xds

    strategy_cls = xds.DeepSpeedStrategy
    if getattr(strategy_cls, '_mg_llava_patched', False):
        return
    init, wrap_model = strategy_cls.__init__, strategy_cls._wrap_model
    save, resume = strategy_cls.save_checkpoint, strategy_cls.resume

    def __init__(self, *args, **kwargs):
        config = kwargs.get('config')
        if isinstance(config, dict) and not torch.cuda.is_available():
            changed = [k for k in ('fp16', 'bf16') if (config.get(k) or {}).get('enabled') not in (False, None)]
            for k in ('fp16', 'bf16'):
                config.setdefault(k, {})['enabled'] = False
            if changed:
                print_log(f'DeepSpeed on a CPU host: {"/".join(changed)} switched off (CPU training is fp32); '
                          'configs/deepspeed/ds_zero2_cpu.json says so explicitly', 'current')
        if isinstance(config, dict):  # DeepSpeed pickles it into every checkpoint: plain types load weights-only
            kwargs['config'] = json.loads(json.dumps(config))
        init(self, *args, **kwargs)

    def save_checkpoint(self, filename, *, save_optimizer=True, save_param_scheduler=True, extra_ckpt=None,
                        callback=None):
        # mmengine's DeepSpeedStrategy ignores `callback`, so `before_save_checkpoint` hooks never saw DeepSpeed
        # checkpoints (ExactResumeHook among them: pickled log buffers, no RNG state). Run it on the client state.
        extra_ckpt = {} if extra_ckpt is None else extra_ckpt
        if callback is not None:
            callback(extra_ckpt)
        return save(self, filename=filename, save_optimizer=save_optimizer,
                    save_param_scheduler=save_param_scheduler, extra_ckpt=extra_ckpt)

    def _wrap_model(self, model):
        # deepspeed.initialize -> init_distributed: with no rank variables it tries MPI discovery.
        if not torch.distributed.is_initialized() and 'RANK' not in os.environ:
            os.environ.update(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', LOCAL_WORLD_SIZE='1')
            os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
            os.environ.setdefault('MASTER_PORT', _free_port())
        if not torch.cuda.is_available():
            # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op with g++ (25 s to minutes) that
            # only speeds up multi-process CPU collectives; gloo does the same work without it.
            import deepspeed.ops
            deepspeed.ops.__compatible_ops__['deepspeed_shm_comm'] = False
        return wrap_model(self, model)

    def resume_checkpoint(self, filename, *, callback=None, **kwargs):
        # likewise `after_load_checkpoint` hooks: run them on the loaded client state
        checkpoint = resume(self, filename, **kwargs)
        if callback is not None:
            callback(checkpoint)
        return checkpoint

    strategy_cls.__init__, strategy_cls._wrap_model = __init__, _wrap_model
    strategy_cls.save_checkpoint, strategy_cls.resume = save_checkpoint, resume_checkpoint
    strategy_cls._mg_llava_patched = True


def apply():
    """Install the shims once (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    _PATCHED = True
    if not torch.cuda.is_available() and 'bitsandbytes' not in sys.modules:
        sys.meta_path.insert(0, _HideBitsandbytesFromEagerImports())  # before mmengine.optim is imported below
    if not hasattr(torch.cpu, 'is_bf16_supported'):
        # xtuner asks the "current device" module whether bf16 is supported; torch.cpu lacks the attribute.
        torch.cpu.is_bf16_supported = lambda *a, **k: False
    if not torch.cuda.is_available():
        # mmengine's _init_dist_pytorch calls torch.cuda.set_device unconditionally.
        torch.cuda.set_device = lambda *a, **k: None
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_weights_only_local_loader, force=True)
    # Only where DeepSpeed is used (importing it costs seconds): `xtuner train --deepspeed ...` reaches us (via
    # use_varlen_attn) before it imports deepspeed itself.
    if importlib.util.find_spec('deepspeed') is not None and (
            'deepspeed' in sys.modules or any(a.startswith('--deepspeed') for a in sys.argv)):
        _patch_deepspeed_strategy()


apply()
