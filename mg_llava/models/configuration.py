"""MGLLaVAConfig: everything that defines an MG-LLaVA / LLaVA-1.5 model, in one object saved with its weights.

Training configs give these fields flat in `model=dict(type=MGLLaVAModel, ...)` (next to the training policy:
freezing, LoRA, activation checkpointing, `pretrained_pth`); `MGLLaVAModel.save_pretrained` writes the object as
`mg_llava_config.json` and `MGLLaVAModel.from_pretrained` rebuilds the model from it.

Component sources (`llm`, `visual_encoder`, `visual_encoder_aux`, `tokenizer`) are a local path or an
xtuner-style dict(type=..., ...) (e.g. a QLoRA LLM with `quantization_config`); built modules are accepted too
(tests, notebooks). `tokenizer=None` means the LLM's own tokenizer. `template` is a name resolved by
`mg_llava.templates.resolve_template`. `visual_encoder_aux=None` is LLaVA-1.5: no fusion, no object tokens.
"""
import dataclasses
import os.path as osp
from typing import Any, Optional

import torch.nn as nn

from mg_llava.data.preprocess import VisionSpec
from mg_llava.templates import resolve_template, template_name

PATH_KEYS = ('pretrained_model_name_or_path', 'model_name_or_path')


@dataclasses.dataclass
class MGLLaVAConfig:
    llm: Any
    visual_encoder: Any
    visual_encoder_aux: Any = None
    tokenizer: Any = None
    template: Any = 'vicuna'
    vision_spec: Any = None                 # dict or VisionSpec; None -> VisionSpec() defaults
    llm_dtype: Optional[str] = None         # torch_dtype for an LLM given as a path ('float16', 'bfloat16', ...)
    llm_kwargs: Optional[dict] = None       # more from_pretrained kwargs for it (quantization_config for QLoRA,
                                            # attn_implementation); loading options, not saved with the weights
    trust_remote_code: bool = False         # for components given as paths (LLM, tokenizer, ViT)
    visual_select_layer: int = -2
    projector_depth: int = 2
    use_fusion: bool = True                 # Conv-Gate fusion (only with visual_encoder_aux)
    fusion_resample: bool = True
    use_object_tokens: bool = True          # object tokens pooled from boxes (only with visual_encoder_aux)
    object_pooling: str = 'exact'           # 'exact' (upstream RoIAlign-56 semantics) or 'fast'
    object_pool_size: int = 56
    object_box_position: bool = False       # not upstream: MLP embedding of the box added to its object token
    max_new_tokens: int = 100               # generation default
    adapter_dtype: str = 'float32'          # trained adapters keep fp32 weights (AMP casts)
    llm_kernels: Optional[str] = None       # 'liger': liger-kernel's fused RMSNorm/RoPE/SwiGLU in the LLM and fused
                                            # LM head + cross-entropy in the loss (CUDA; pip install liger-kernel);
                                            # training only, not saved with the weights
    tower_dtype: Optional[str] = None       # e.g. 'bfloat16': FROZEN towers' weights in it (half the memory and
                                            # weight traffic; they run under no_grad, AMP casts their matmuls anyway)
    supervised_only_logits: bool = True     # LM head only where a loss reads it (plain-head LLMs)
    moe: Optional[dict] = None              # mg_llava.models.moe.MoEConfig fields: up-cycle the LLM's FFNs into
                                            # routed experts (LLaVA-MoD's sparse student); None = dense

    def __post_init__(self):
        if self.llm_kernels not in (None, 'liger'):
            raise ValueError(f"llm_kernels must be None or 'liger', got {self.llm_kernels!r}")
        if self.tower_dtype is not None and self.tower_dtype not in ('bfloat16', 'float16', 'float32'):
            raise ValueError(f"tower_dtype must be 'bfloat16', 'float16', 'float32' or None, got {self.tower_dtype!r}")
        if self.object_pooling not in ('exact', 'fast'):
            raise ValueError(f"object_pooling must be 'exact' or 'fast', got {self.object_pooling!r}")
        if isinstance(self.vision_spec, VisionSpec):
            self.vision_spec = dataclasses.asdict(self.vision_spec)
        self.vision_spec = dict(self.vision_spec or {})
        VisionSpec(**self.vision_spec)   # validate now, naming the field
        if self.visual_encoder_aux is None:
            self.use_fusion = self.use_object_tokens = False

    @classmethod
    def split_kwargs(cls, kwargs):
        """model=dict(...) kwargs -> (config kwargs, the rest: training policy options)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return ({k: v for k, v in kwargs.items() if k in names},
                {k: v for k, v in kwargs.items() if k not in names})

    @property
    def spec(self):
        """The VisionSpec every image and box of this model is prepared with."""
        return VisionSpec(**self.vision_spec)

    @property
    def prompt_template(self):
        return resolve_template(self.template)

    @property
    def mg_branches(self):
        return self.visual_encoder_aux is not None and (self.use_fusion or self.use_object_tokens)

    def to_dict(self):
        """JSON-able: sources become their local path (None when given as a module)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}   # shallow: sources may be modules
        for key in ('llm', 'visual_encoder', 'visual_encoder_aux', 'tokenizer'):
            out[key] = source_path(getattr(self, key))
        out['template'] = template_name(self.template) or _plain(resolve_template(self.template))
        out['llm_kwargs'] = None   # an export holds merged / fp16 weights: no re-quantisation on load
        out['llm_kernels'] = None  # a training-time choice: the export loads on any host (liger needs CUDA)
        return _plain(out)


def source_path(source):
    """Local path a component is built from: the string itself or the dict's path key (made absolute when it
    exists here); None for a built module or a dict without a path."""
    if source is None or isinstance(source, nn.Module):
        return None
    if isinstance(source, dict):
        source = next((source[k] for k in PATH_KEYS if source.get(k)), None)
        if source is None:
            return None
    source = str(source)
    return osp.abspath(source) if osp.exists(source) else source


def _plain(obj):
    """ConfigDicts / tuples -> JSON-able python."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool)) or obj is None else str(obj)
