"""TrainingPolicy: what is frozen, what gets LoRA, and therefore what is saved — decided in one place.

The model's state dict keeps only trained parts (adapters always; the LLM / towers when trained; only the
`lora_` tensors of a LoRA-tuned component). It is enforced with state-dict hooks, not a `state_dict()`
override, so it also holds when the model is a submodule of another one (a distillation wrapper): the
parent's state dict then carries exactly the child's trained parts under the child's prefix, and loads back
strictly (frozen keys are not reported missing).
"""
import contextlib
import dataclasses
from typing import Any

from peft import get_peft_model, prepare_model_for_kbit_training
from xtuner.model.utils import find_all_linear_names

from .components import build_from_dict

# Modules whose weights are always trained, hence always in checkpoints and exports.
ADAPTER_MODULES = ('projector', 'fuse_module', 'bbox_projector', 'box_position_embed')


@contextlib.contextmanager
def no_bnb_dispatch():
    """peft's LoRA dispatch imports bitsandbytes whenever it is installed, to recognise quantised layers; a model
    that is not quantised has none, so it is told bitsandbytes is absent (no import, no CPU-build notice)."""
    import peft.tuners.lora.model as lora_model
    saved = lora_model.is_bnb_available, lora_model.is_bnb_4bit_available
    lora_model.is_bnb_available = lora_model.is_bnb_4bit_available = lambda: False
    try:
        yield
    finally:
        lora_model.is_bnb_available, lora_model.is_bnb_4bit_available = saved


def add_lora(module, lora_cfg, use_activation_checkpointing):
    lora = build_from_dict(lora_cfg)
    quantised = getattr(module, 'is_loaded_in_4bit', False) or getattr(module, 'is_loaded_in_8bit', False)
    if quantised:  # QLoRA: the only case that uses bitsandbytes
        from mg_llava.compat import hide_broken_bitsandbytes
        hide_broken_bitsandbytes()
        module = prepare_model_for_kbit_training(module, use_activation_checkpointing)
    if lora.target_modules is None:
        lora.target_modules = find_all_linear_names(module)
    with contextlib.nullcontext() if quantised else no_bnb_dispatch():
        return get_peft_model(module, lora)


@dataclasses.dataclass
class TrainingPolicy:
    freeze_llm: bool = False
    freeze_visual_encoder: bool = True
    freeze_visual_encoder_aux: bool = True
    llm_lora: Any = None                 # peft LoraConfig (or its xtuner dict) -> LoRA on the LLM
    visual_encoder_lora: Any = None      # ... on the ViT
    use_activation_checkpointing: bool = True   # the LLM only: frozen towers keep no activations anyway
    # An explicit trainable subset of the LLM: parameters whose name contains one of these substrings train, the
    # rest is frozen (e.g. ('mlp.',): FFNs, experts and routers — LLaVA-MoD's D2S/PD stages). Overrides freeze_llm.
    llm_train_modules: Any = None

    def __post_init__(self):
        if self.llm_train_modules is not None:
            if isinstance(self.llm_train_modules, str):
                self.llm_train_modules = (self.llm_train_modules,)
            self.llm_train_modules = tuple(self.llm_train_modules)
            if self.llm_lora is not None:
                raise ValueError('llm_train_modules and llm_lora both choose what of the LLM trains: give one')

    @property
    def llm_lora_on(self):
        return self.llm_lora is not None

    @property
    def llm_weights_trained(self):
        """Some of the LLM's own weights (not LoRA adapters) train: an export must carry the LLM."""
        return not self.llm_lora_on and (not self.freeze_llm or self.llm_train_modules is not None)

    @property
    def visual_encoder_lora_on(self):
        return self.visual_encoder_lora is not None

    # ------------------------------------------------------------------ applied once, at construction
    def apply(self, model):
        """Freeze, checkpoint and LoRA-wrap `model`'s components (after its adapters exist), install the
        state-dict hooks."""
        self._freeze_unused_vit_layers(model)
        if self.freeze_llm:
            model.llm.requires_grad_(False)
        if self.llm_train_modules is not None:
            for name, p in model.llm.named_parameters():
                p.requires_grad_(self._llm_subset(name))
        if self.freeze_visual_encoder:
            model.visual_encoder.requires_grad_(False)
        if model.visual_encoder_aux is not None and self.freeze_visual_encoder_aux:
            model.visual_encoder_aux.requires_grad_(False)
        if self.use_activation_checkpointing:
            model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(use_reentrant=False))
        if self.llm_lora_on:
            model.llm = add_lora(model.llm, self.llm_lora, self.use_activation_checkpointing)
        if self.visual_encoder_lora_on:
            model.visual_encoder = add_lora(model.visual_encoder, self.visual_encoder_lora, False)
        model._register_state_dict_hook(_keep_trained_parts)
        model._register_load_state_dict_pre_hook(_remember_prefix, with_module=True)
        model.register_load_state_dict_post_hook(_frozen_keys_are_not_missing)

    @staticmethod
    def _freeze_unused_vit_layers(model):
        """Layers after `visual_select_layer` (and the final LayerNorm) never run: freeze them so a trainable
        ViT has no parameter without gradient (DDP would fail) and nothing useless in checkpoints."""
        vm = getattr(model.visual_encoder, 'vision_model', model.visual_encoder)
        layers = vm.encoder.layers
        select = model.config.visual_select_layer
        n_run = len(layers) + 1 + select if select < 0 else select
        for layer in layers[n_run:]:
            layer.requires_grad_(False)
        for name in ('post_layernorm', 'head'):
            if getattr(vm, name, None) is not None:
                getattr(vm, name).requires_grad_(False)

    # ------------------------------------------------------------------ questions asked while running
    def frozen_towers(self, model):
        """Towers that run under no_grad and stay in eval()."""
        towers = []
        if self.freeze_visual_encoder and not self.visual_encoder_lora_on:
            towers.append(model.visual_encoder)
        if model.visual_encoder_aux is not None and self.freeze_visual_encoder_aux:
            towers.append(model.visual_encoder_aux)
        return towers

    def is_trained(self, key):
        """Is this state-dict key (relative to the model) a trained part, saved in checkpoints and exports?"""
        top = key.split('.', 1)[0]
        if top in ADAPTER_MODULES:
            return True
        if top == 'llm':
            if self.llm_train_modules is not None:
                return self._llm_subset(key)
            return 'lora_' in key if self.llm_lora_on else not self.freeze_llm
        if top == 'visual_encoder':
            return 'lora_' in key if self.visual_encoder_lora_on else not self.freeze_visual_encoder
        if top == 'visual_encoder_aux':
            return not self.freeze_visual_encoder_aux
        return False


    def is_saved(self, key):
        """Is this key in checkpoints? The trained parts, and the WHOLE LLM when only a subset of it trains
        (`llm_train_modules`): its frozen rest may come from a previous stage's checkpoint (LLaVA-MoD's D2S keeps
        the attention of D2D), which nothing else would restore."""
        if self.llm_train_modules is not None and key.split('.', 1)[0] == 'llm':
            return True
        return self.is_trained(key)

    def _llm_subset(self, name):
        return any(m in name for m in self.llm_train_modules)


def _keep_trained_parts(model, state_dict, prefix, local_metadata):
    """State-dict hook: drop this model's frozen keys (under `prefix`) from the (possibly shared) dict."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if not model.policy.is_saved(key[len(prefix):]):
            del state_dict[key]


def _remember_prefix(model, state_dict, prefix, *args):
    model._load_prefix = prefix


def _frozen_keys_are_not_missing(model, incompatible_keys):
    """Load post-hook: frozen keys are never saved, so their absence is expected even with strict=True."""
    prefix = getattr(model, '_load_prefix', '')
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not (k.startswith(prefix) and not model.policy.is_saved(k[len(prefix):]))]
