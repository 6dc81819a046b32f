"""Build the components an MGLLaVAConfig names: each source is a local path, an xtuner-style dict or a module."""
import torch.nn as nn
from xtuner.model.utils import traverse_dict
from xtuner.registry import BUILDER

from mg_llava.data.geometry import read_vit_config

from .configuration import source_path
from .towers import ConvNeXtTower


def build_from_dict(cfg_or_module):
    """xtuner-style dict(type=..., ...) -> object; a module (or None) is returned as is."""
    if cfg_or_module is None or not isinstance(cfg_or_module, dict):
        return cfg_or_module
    cfg = dict(cfg_or_module)
    traverse_dict(cfg)  # xtuner: turns 'torch.bfloat16' strings etc. into objects
    return BUILDER.build(cfg)


def _is_path(source):
    return source is not None and not isinstance(source, (dict, nn.Module))


def _holds_experts(folder):
    """Whether a save_pretrained folder's safetensors hold routed-expert tensors (an up-cycled LLM)."""
    import os

    from safetensors import safe_open
    names = [f for f in os.listdir(folder) if f.endswith('.safetensors')] if os.path.isdir(folder) else []
    for name in names:
        with safe_open(os.path.join(folder, name), framework='pt') as f:
            if any('.mlp.experts.' in k for k in f.keys()):
                return True
    return False


def apply_llm_kernels(llm, kernels):
    """kernels='liger': liger-kernel's fused RMSNorm, RoPE and SwiGLU patched into this LLM instance (its model
    type's patch: Llama, Mistral, Qwen2, Phi-3, ...). The LM head + loss fusion is applied by the model's loss
    (losses.fused_linear_ce), which reads logits at the supervised positions only."""
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError as e:
        raise ImportError(f"llm_kernels='liger' needs liger-kernel (pip install liger-kernel; Triton on a CUDA GPU): "
                          f'{e}') from None
    base = llm.get_base_model() if hasattr(llm, 'get_base_model') else llm
    _apply_liger_kernel_to_instance(model=base, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)


def build_llm(config):
    if not _is_path(config.llm):
        return build_from_dict(config.llm)
    import torch
    from transformers import AutoModelForCausalLM
    dtype = config.llm_dtype
    if isinstance(dtype, str) and dtype != 'auto':
        dtype = getattr(torch, dtype.replace('torch.', ''))
    extra = {k: build_from_dict(v) for k, v in (config.llm_kwargs or {}).items()}  # e.g. BitsAndBytesConfig
    if config.moe is not None and _holds_experts(str(config.llm)):
        # An exported up-cycled LLM: its weights fit only after up-cycling. Build the dense skeleton without
        # weights (loading them would warn about every expert tensor); load_saved_parts fills it, strictly.
        from transformers import AutoConfig
        hf_config = AutoConfig.from_pretrained(str(config.llm), trust_remote_code=config.trust_remote_code)
        return AutoModelForCausalLM.from_config(hf_config, torch_dtype=dtype,
                                                trust_remote_code=config.trust_remote_code)
    return AutoModelForCausalLM.from_pretrained(str(config.llm), torch_dtype=dtype,
                                                trust_remote_code=config.trust_remote_code, **extra)


def build_visual_encoder(config):
    """A path -> CLIPVisionModel or SiglipVisionModel, chosen by the folder's config.json."""
    if not _is_path(config.visual_encoder):
        return build_from_dict(config.visual_encoder)
    import transformers
    path = str(config.visual_encoder)
    kind = str(getattr(read_vit_config(path), 'model_type', 'clip_vision_model'))
    cls = transformers.SiglipVisionModel if 'siglip' in kind else transformers.CLIPVisionModel
    return cls.from_pretrained(path)


def build_visual_encoder_aux(config):
    """A path (open_clip ConvNeXt snapshot dir or timm name) -> ConvNeXtTower."""
    source = config.visual_encoder_aux
    if isinstance(source, dict) and 'type' not in source:   # a saved tower: ConvNeXtTower's own `source`
        return ConvNeXtTower(**source)
    if not _is_path(source):
        return build_from_dict(source)
    return ConvNeXtTower(str(config.visual_encoder_aux))


def build_tokenizer(config):
    """None -> the LLM's tokenizer (same folder)."""
    source = config.tokenizer
    if source is not None and not _is_path(source):
        return build_from_dict(source)
    path = str(source) if source is not None else source_path(config.llm)
    if path is None:
        return None   # an LLM given as a module and no tokenizer: fine for training on ids; generation says so
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
