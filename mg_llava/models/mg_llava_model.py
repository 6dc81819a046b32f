"""MGLLaVAModel: one LLaVA-style model whose extra MG-LLaVA branches are optional.

    low-res ViT tokens ──(Conv-Gate fusion with the ConvNeXt last stage)── projector ──┐
    ConvNeXt stages ── object pooling over all boxes ── bbox_projector ────────────────┤ gathered in sample order,
    text ids ── embed_tokens ──────────────────────────────────────── masked_scatter ◄──┘ then the LLM + loss

No high-res tower and no boxes = LLaVA-1.5. The collate (mg_llava.data.collate) has already laid out
the sequence: every visual slot holds IMAGE_TOKEN_INDEX, and `visual_index` says which row of
cat(image_tokens, object_tokens) fills it, so the model needs no per-sample loop and no host sync.
The class name keeps "LLaVAModel": `xtuner convert pth_to_hf` keys on it.
"""
import contextlib
import logging
import os.path as osp
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from peft import get_peft_model, prepare_model_for_kbit_training
from xtuner.model.utils import LoadWoInit, find_all_linear_names, guess_load_checkpoint, traverse_dict
from xtuner.registry import BUILDER
from xtuner.utils import IMAGE_TOKEN_INDEX

from mg_llava.data.geometry import geometry_errors, tower_name

from .fusion import ConvGateFusion
from .object_pooling import pool_object_features
from .projector import MLPProjector
from .towers import low_res_features

# Causal LMs whose logits are exactly lm_head(final hidden state) (no soft-capping / logit scaling).
PLAIN_HEAD_MODELS = ('llama', 'mistral', 'mixtral', 'qwen2', 'qwen2_moe', 'phi3', 'internlm2', 'yi')

# Modules whose weights are always trained, hence always in checkpoints and exports.
ADAPTER_MODULES = ('projector', 'fuse_module', 'bbox_projector', 'box_position_embed')


def _build(cfg_or_module):
    if isinstance(cfg_or_module, nn.Module) or cfg_or_module is None:
        return cfg_or_module
    cfg = dict(cfg_or_module)
    traverse_dict(cfg)  # xtuner: turns 'torch.bfloat16' strings etc. into objects
    return BUILDER.build(cfg)


@contextlib.contextmanager
def _no_bnb_dispatch():
    """peft's LoRA dispatch imports bitsandbytes whenever it is installed, to recognise quantised layers; a model
    that is not quantised has none, so it is told bitsandbytes is absent (no import, no CPU-build notice)."""
    import peft.tuners.lora.model as lora_model
    saved = lora_model.is_bnb_available, lora_model.is_bnb_4bit_available
    lora_model.is_bnb_available = lora_model.is_bnb_4bit_available = lambda: False
    try:
        yield
    finally:
        lora_model.is_bnb_available, lora_model.is_bnb_4bit_available = saved


class MGLLaVAModel(BaseModel):
    """Args (all towers/LLM given as xtuner-style `dict(type=..., ...)` or built modules):
        llm: HF causal LM. visual_encoder: HF CLIPVisionModel / SiglipVisionModel.
        visual_encoder_aux: ConvNeXtTower or None (None = LLaVA-1.5: no fusion, no object tokens).
        tokenizer: needed for generation and export.
        use_fusion / use_object_tokens: the two MG branches (only with visual_encoder_aux).
        object_pooling: 'exact' (upstream RoIAlign-56 semantics) or 'fast' (native-resolution 7x7 RoIAlign).
        object_box_position: add an MLP embedding of each box's normalised (x1, y1, x2, y2) to its object token.
            Not in upstream MG-LLaVA (off by default): pooled features alone say nothing about where an object
            is, so "left of" questions must otherwise be solved from the image tokens.
        pretrained_pth: checkpoint loaded after every module exists; every adapter key must be in it.
    """

    def __init__(self, llm, visual_encoder, visual_encoder_aux=None, tokenizer=None, template=None,
                 freeze_llm=False, freeze_visual_encoder=True, freeze_visual_encoder_aux=True,
                 visual_select_layer=-2, projector_depth=2, use_fusion=True, fusion_resample=True,
                 use_object_tokens=True, object_pooling='exact', object_pool_size=56, object_box_position=False,
                 llm_lora=None, visual_encoder_lora=None, use_activation_checkpointing=True,
                 pretrained_pth=None, max_new_tokens=100, adapter_dtype=torch.float32,
                 supervised_only_logits=True):
        super().__init__()
        self.build_cfg = dict(llm=llm, visual_encoder=visual_encoder, visual_encoder_aux=visual_encoder_aux,
                              tokenizer=tokenizer)
        with LoadWoInit():
            self.llm = _build(llm)
            self.visual_encoder = _build(visual_encoder)
            self.visual_encoder_aux = _build(visual_encoder_aux)
        self.tokenizer = _build(tokenizer)
        self.template = template
        self.llm.config.use_cache = False
        self.freeze_llm, self.freeze_visual_encoder = freeze_llm, freeze_visual_encoder
        self.freeze_visual_encoder_aux = freeze_visual_encoder_aux
        self.visual_select_layer = visual_select_layer
        self.object_pooling, self.object_pool_size = object_pooling, object_pool_size
        self.max_new_tokens = max_new_tokens
        if object_pooling not in ('exact', 'fast'):
            raise ValueError(f"object_pooling must be 'exact' or 'fast', got {object_pooling!r}")

        vis_dim, llm_dim = self.visual_encoder.config.hidden_size, self.llm.config.hidden_size
        dtype = adapter_dtype  # trained adapters keep fp32 weights even when towers/LLM are bf16 (AMP casts)
        self.projector = MLPProjector(vis_dim, llm_dim, projector_depth).to(dtype)
        self.fuse_module = self.bbox_projector = self.box_position_embed = None
        if self.visual_encoder_aux is not None:
            chans = self.visual_encoder_aux.out_channels
            if use_fusion:
                self.fuse_module = ConvGateFusion(vis_dim, chans[-1], resample_mismatch=fusion_resample).to(dtype)
            if use_object_tokens:
                self.bbox_projector = MLPProjector(sum(chans), llm_dim, projector_depth).to(dtype)
                if object_box_position:
                    self.box_position_embed = MLPProjector(4, llm_dim, 2).to(dtype)
                    # zero last layer: the branch starts as a no-op and cannot drown the pooled appearance
                    nn.init.zeros_(self.box_position_embed.model[2].weight)
                    nn.init.zeros_(self.box_position_embed.model[2].bias)

        self.supervised_only_logits = supervised_only_logits
        self._freeze_unused_vit_layers()
        if freeze_llm:
            self.llm.requires_grad_(False)
        if freeze_visual_encoder:
            self.visual_encoder.requires_grad_(False)
        if self.visual_encoder_aux is not None and freeze_visual_encoder_aux:
            self.visual_encoder_aux.requires_grad_(False)
        if use_activation_checkpointing:
            # Only the LLM: frozen towers run under no_grad and keep no activations at all.
            self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(use_reentrant=False))
        self.use_llm_lora = llm_lora is not None
        self.use_visual_encoder_lora = visual_encoder_lora is not None
        if self.use_llm_lora:
            self.llm = self._add_lora(self.llm, llm_lora, use_activation_checkpointing)
        if self.use_visual_encoder_lora:
            self.visual_encoder = self._add_lora(self.visual_encoder, visual_encoder_lora, False)
        if pretrained_pth is not None:
            self.load_pretrained(pretrained_pth)

    @property
    def num_image_tokens(self):
        """T, image tokens per image given by the low-res tower (CLIP drops its CLS token)."""
        cfg = self.visual_encoder.config
        return (cfg.image_size // cfg.patch_size) ** 2

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _add_lora(module, lora_cfg, use_activation_checkpointing):
        lora = _build(lora_cfg)
        quantised = getattr(module, 'is_loaded_in_4bit', False) or getattr(module, 'is_loaded_in_8bit', False)
        if quantised:  # QLoRA: the only case that uses bitsandbytes
            from mg_llava.compat import hide_broken_bitsandbytes
            hide_broken_bitsandbytes()
            module = prepare_model_for_kbit_training(module, use_activation_checkpointing)
        if lora.target_modules is None:
            lora.target_modules = find_all_linear_names(module)
        with contextlib.nullcontext() if quantised else _no_bnb_dispatch():
            return get_peft_model(module, lora)

    def _freeze_unused_vit_layers(self):
        """Layers after `visual_select_layer` (and the final LayerNorm) never run: freeze them so a trainable
        ViT has no parameter without gradient (DDP would fail) and nothing useless in checkpoints."""
        vm = getattr(self.visual_encoder, 'vision_model', self.visual_encoder)
        layers = vm.encoder.layers
        n_run = len(layers) + 1 + self.visual_select_layer if self.visual_select_layer < 0 else self.visual_select_layer
        for layer in layers[n_run:]:
            layer.requires_grad_(False)
        for name in ('post_layernorm', 'head'):
            if getattr(vm, name, None) is not None:
                getattr(vm, name).requires_grad_(False)

    def _frozen_towers(self):
        towers = []
        if self.freeze_visual_encoder and not self.use_visual_encoder_lora:
            towers.append(self.visual_encoder)
        if self.visual_encoder_aux is not None and self.freeze_visual_encoder_aux:
            towers.append(self.visual_encoder_aux)
        return towers

    def train(self, mode=True):
        """Frozen towers stay in eval(): no dropout / drop-path noise in features nobody trains."""
        super().train(mode)
        for tower in self._frozen_towers():
            tower.eval()
        return self

    def init_weights(self):
        """Weights come from from_pretrained / explicit inits; mmengine must not re-initialise them."""

    # ------------------------------------------------------------------ checkpoints
    def _saved(self, key):
        """Is this state-dict key a trained part (saved in checkpoints and exports)?"""
        top = key.split('.', 1)[0]
        if top in ADAPTER_MODULES:
            return True
        if top == 'llm':
            return 'lora_' in key if self.use_llm_lora else not self.freeze_llm
        if top == 'visual_encoder':
            return 'lora_' in key if self.use_visual_encoder_lora else not self.freeze_visual_encoder
        if top == 'visual_encoder_aux':
            return not self.freeze_visual_encoder_aux
        return False

    def state_dict(self, *args, destination=None, prefix='', keep_vars=False):
        full = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        return OrderedDict((k, v) for k, v in full.items() if self._saved(k[len(prefix):]))

    def load_pretrained(self, path):
        """Load a checkpoint (file, DeepSpeed dir, or a work dir holding mmengine's `last_checkpoint`).
        Adapter keys (projector, fusion, bbox projector) must all be present — upstream's silent strict=False
        hid missing parts; LLM/tower keys load if present."""
        last = osp.join(path, 'last_checkpoint')
        if osp.isdir(path) and osp.isfile(last):
            with open(last) as f:
                path = f.read().strip()
        ckpt = guess_load_checkpoint(path)
        ckpt = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in ckpt.items()}
        own = super().state_dict()
        required = [k for k in own if k.split('.', 1)[0] in ADAPTER_MODULES]
        missing = [k for k in required if k not in ckpt]
        if missing:
            raise KeyError(f'{path} lacks {len(missing)} trained parameters of this model, e.g. {missing[:6]}')
        unexpected = [k for k in ckpt if k not in own]
        if unexpected:
            print_log(f'{path}: ignoring {len(unexpected)} keys unknown to this model, e.g. {unexpected[:6]}',
                      'current', level=logging.WARNING)
        nn.Module.load_state_dict(self, {k: v for k, v in ckpt.items() if k in own}, strict=False)
        print_log(f'Loaded {len(ckpt) - len(unexpected)} tensors from {path}', 'current')

    # ------------------------------------------------------------------ forward
    def _tower_ctx(self, tower):
        return torch.no_grad() if any(tower is t for t in self._frozen_towers()) else contextlib.nullcontext()

    def encode_visual(self, data):
        """All visual tokens of the batch in one tensor: (N_img*T + K, H_llm).

        data: pixel_values (N_img,3,s,s), pixel_values_aux (N_img,3,S,S), boxes (K,4) in S-pixel xyxy,
        box_batch_index (K,), num_image_tokens (int T the collate laid out).
        """
        vit_cfg, side = self.visual_encoder.config, data['pixel_values'].shape[-1]
        if side != vit_cfg.image_size:   # before HF's "Input image size (336*336) doesn't match model (56*56)"
            raise ValueError('; '.join(geometry_errors(side, None, data.get('num_image_tokens'), vit_cfg.image_size,
                                                       vit_cfg.patch_size, tower=tower_name(vit_cfg), has_aux=False)))
        with self._tower_ctx(self.visual_encoder):
            low = low_res_features(self.visual_encoder, data['pixel_values'], self.visual_select_layer)
        if data.get('num_image_tokens', low.shape[1]) != low.shape[1]:
            raise ValueError(f'the data lays out {data["num_image_tokens"]} image tokens per image but the '
                             f'vision tower gives {low.shape[1]}: check image_size/num_image_tokens in the config')
        dtype = self.projector.model[0].weight.dtype
        low = low.to(dtype)
        stages = None
        if self.visual_encoder_aux is not None:
            with self._tower_ctx(self.visual_encoder_aux):
                stages = self.visual_encoder_aux(data['pixel_values_aux'])
        fused = self.fuse_module(low, stages[-1]) if self.fuse_module is not None else low
        tokens = [self.projector(fused).flatten(0, 1)]
        if self.bbox_projector is not None:
            pooled = pool_object_features(stages, data['boxes'], data['box_batch_index'],
                                          image_size=data['pixel_values_aux'].shape[-1],
                                          mode=self.object_pooling, output_size=self.object_pool_size,
                                          max_boxes_per_image=data.get('max_boxes_per_image'),
                                          boxes_in_frame=True)  # preprocess_boxes clamps to [0, S]
            objects = self.bbox_projector(pooled.to(dtype))
            if self.box_position_embed is not None:
                frame = data['pixel_values_aux'].shape[-1]
                objects = objects + self.box_position_embed(data['boxes'].to(dtype) / frame)
            tokens.append(objects)
        return torch.cat(tokens)

    def _zero_touch(self):
        """0 * (one element of every trained vision-side parameter): keeps DDP/ZeRO gradient sets identical
        on batches without images."""
        params = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith('llm.')]
        return sum(p.view(-1)[0] for p in params) * 0.0 if params else 0.0

    def embed_inputs(self, data, visual_tokens=None):
        """input_ids (B,L) with IMAGE_TOKEN_INDEX in visual slots -> inputs_embeds (B,L,H).
        visual_tokens: (V,H) already gathered for the slots (chat caches them across turns); default: encoded
        from the batch's pixels."""
        input_ids = data['input_ids']
        visual_mask = input_ids == IMAGE_TOKEN_INDEX
        embeds = self.llm.get_input_embeddings()(input_ids.masked_fill(visual_mask, 0))
        if visual_tokens is None:
            if data.get('pixel_values') is None:
                return embeds + self._zero_touch() if self.training else embeds
            visual_tokens = self.encode_visual(data)[data['visual_index']]
        return embeds.masked_scatter(visual_mask.unsqueeze(-1), visual_tokens.to(embeds.dtype))

    def forward(self, data, data_samples=None, mode='loss'):
        if mode == 'loss':
            return {'loss': self.compute_loss(data)}
        if mode == 'tensor':
            return self.llm(inputs_embeds=self.embed_inputs(data), attention_mask=data['attention_mask'],
                            position_ids=data.get('position_ids'), use_cache=False).logits
        if mode in ('predict', 'generate'):
            return [{'prediction': p} for p in self.generate(data)]
        raise NotImplementedError(f'unknown mode {mode!r}')

    def compute_loss(self, data):
        """Token-mean next-token cross-entropy over the batch (HF semantics).

        With `supervised_only_logits` the LM head and the fp32 log-softmax run only on the positions the
        collate listed in `supervised_index` (typically a quarter of the sequence after 576+ visual tokens),
        instead of materialising (B, L, vocab) logits. Used for decoder LMs whose head is a plain linear layer.
        """
        embeds = self.embed_inputs(data)
        idx = data.get('supervised_index')
        if not (self.supervised_only_logits and idx is not None
                and getattr(self.llm.config, 'model_type', None) in PLAIN_HEAD_MODELS):
            return self.llm(inputs_embeds=embeds, attention_mask=data['attention_mask'],
                            position_ids=data.get('position_ids'), labels=data['labels'], use_cache=False).loss
        hidden = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=data['attention_mask'],
                                        position_ids=data.get('position_ids'), use_cache=False)[0]
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, idx)  # (N_sup, H)
        logits = self.llm.get_output_embeddings()(h).float()
        targets = data['labels'][:, 1:].reshape(-1).index_select(0, idx)
        return F.cross_entropy(logits, targets)

    def generation_kwargs(self, max_new_tokens=None, **overrides):
        """Greedy `llm.generate` arguments: stop at EOS or a single-token stop word of the template.
        (Multi-token stop words are cut by `decode`; a batch cannot stop on them row by row.)"""
        if self.tokenizer is None:
            raise ValueError('generation needs a tokenizer: pass tokenizer=... to MGLLaVAModel')
        tok = self.tokenizer
        stop_ids = [tok.eos_token_id]
        for word in (self.template or {}).get('STOP_WORDS', []) or []:
            ids = tok.encode(word, add_special_tokens=False)
            if len(ids) == 1 and ids[0] not in stop_ids:
                stop_ids.append(ids[0])
        gen = dict(max_new_tokens=max_new_tokens or self.max_new_tokens, do_sample=False, num_beams=1,
                   eos_token_id=stop_ids, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None
                   else tok.eos_token_id, use_cache=True)
        gen.update(overrides)
        return gen

    def decode(self, tokens):
        """Generated ids (1-D) -> answer text, cut at the first stop word of the template."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        for word in (self.template or {}).get('STOP_WORDS', []) or []:
            if word and word in text:
                text = text[:text.index(word)]
        return text.strip()

    @torch.no_grad()
    def generate(self, data, max_new_tokens=None, **kwargs):
        """Greedy decoding on a LEFT-padded batch; returns the decoded answers (list[str])."""
        gen = self.generation_kwargs(max_new_tokens, **kwargs)
        out = self.llm.generate(inputs_embeds=self.embed_inputs(data), attention_mask=data['attention_mask'],
                                **gen)
        return [self.decode(t) for t in out]

    # ------------------------------------------------------------------ export
    def to_hf(self, cfg, save_dir, fp32=False, save_pretrained_kwargs=None, save_format='xtuner', **kwargs):
        from .hf_export import save_hf
        save_hf(self, cfg, save_dir, fp32=fp32, save_pretrained_kwargs=save_pretrained_kwargs or {})
