"""Small, guarded shims that let pip xtuner 0.2.0 / mmengine 0.10.6 run on a CPU-only machine.

Every patch is inert when CUDA is present. Configs import `DIST_TIMEOUT` from here inside
`env_cfg.dist_cfg`, because mmengine resolves that value in `Runner.setup_env` *before* it calls
`torch.cuda.set_device` — the earliest point at which a lazily parsed config can run our code
(see docs/ARCHITECTURE.md and the spec "xtuner_on_cpu").
"""
import os

import torch

# Seconds, not a timedelta: mmengine's init_dist rejects timedelta objects.
DIST_TIMEOUT = 1800

_PATCHED = False


def _trusted_local_loader(filename, map_location):
    # mmengine checkpoints pickle HistoryBuffer/numpy objects; torch>=2.6 defaults to weights_only=True.
    # Checkpoints written by our own runs are trusted.
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


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


def apply():
    """Install the CPU shims once. Called on `import mg_llava`."""
    global _PATCHED
    if _PATCHED:
        return
    _PATCHED = True
    if not hasattr(torch.cpu, 'is_bf16_supported'):
        # xtuner asks the "current device" module whether bf16 is supported; torch.cpu lacks the attribute.
        torch.cpu.is_bf16_supported = lambda *a, **k: False
    if not torch.cuda.is_available():
        # mmengine's _init_dist_pytorch calls torch.cuda.set_device unconditionally.
        torch.cuda.set_device = lambda *a, **k: None
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_trusted_local_loader, force=True)


apply()
