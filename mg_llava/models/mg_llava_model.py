"""MGLLaVAModel: one LLaVA-style model whose extra MG-LLaVA branches are optional.

    low-res ViT tokens ──(Conv-Gate fusion with the ConvNeXt last stage)── projector ──┐
    ConvNeXt stages ── object pooling over all boxes ── bbox_projector ────────────────┤ gathered in sample order,
    text ids ── embed_tokens ──────────────────────────────────────── masked_scatter ◄──┘ then the LLM + loss

No high-res tower and no boxes = LLaVA-1.5. The collate (mg_llava.data.collate) has already laid out
the sequence: every visual slot holds IMAGE_TOKEN_INDEX, and `visual_index` says which row of
cat(image_tokens, object_tokens) fills it, so the model needs no per-sample loop and no host sync.

What the model is: `MGLLaVAConfig` (configuration.py, saved with the weights). How it is trained: a
`TrainingPolicy` (policy.py: freezing, LoRA, what is saved). Losses: losses.py. Saving and loading: export.py.
The class name keeps "LLaVAModel": `xtuner convert pth_to_hf` keys on it.
"""
import contextlib
import logging
import os.path as osp

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModel
from xtuner.model.utils import LoadWoInit, guess_load_checkpoint
from xtuner.utils import IMAGE_TOKEN_INDEX

from mg_llava.data.geometry import geometry_errors, tower_name
from mg_llava.data.packing import llm_attention_inputs

from . import export, losses
from .components import (apply_llm_kernels, build_llm, build_tokenizer, build_visual_encoder,
                         build_visual_encoder_aux)
from .configuration import MGLLaVAConfig
from .fusion import ConvGateFusion
from .object_pooling import pool_object_features
from .policy import ADAPTER_MODULES, TrainingPolicy
from .projector import MLPProjector
from .towers import low_res_features


class MGLLaVAModel(BaseModel):
    """MGLLaVAModel(config=MGLLaVAConfig(...), **policy) or, from a training config, the config's fields
    and the policy's flat: MGLLaVAModel(llm=..., visual_encoder=..., template='vicuna', freeze_llm=True, ...).

    Policy (TrainingPolicy): freeze_llm, freeze_visual_encoder, freeze_visual_encoder_aux, llm_lora,
    visual_encoder_lora, use_activation_checkpointing. pretrained_pth: checkpoint loaded after every module
    exists; every adapter key must be in it.
    """

    def __init__(self, config=None, pretrained_pth=None, **kwargs):
        super().__init__()
        config_kwargs, policy_kwargs = MGLLaVAConfig.split_kwargs(kwargs)
        if config is None:
            config = MGLLaVAConfig(**config_kwargs)
        elif config_kwargs:
            raise TypeError(f'give the model config either as `config` or as fields, not both: {sorted(config_kwargs)}')
        elif isinstance(config, dict):
            config = MGLLaVAConfig(**config)
        self.config, self.policy = config, TrainingPolicy(**policy_kwargs)
        with LoadWoInit():
            self.llm = build_llm(config)
            self.visual_encoder = build_visual_encoder(config)
            self.visual_encoder_aux = build_visual_encoder_aux(config) if config.visual_encoder_aux is not None else None
        if config.moe is not None:   # outside LoadWoInit: the new routers need their default init
            from .moe import MoEConfig, upcycle
            self.moe_layers = upcycle(self.llm, MoEConfig(**config.moe))
        if config.llm_kernels is not None:
            apply_llm_kernels(self.llm, config.llm_kernels)
        self.tokenizer = build_tokenizer(config)
        self.template = config.prompt_template
        self.llm.config.use_cache = False
        vit_cfg = self.visual_encoder.config
        config.vision_spec.setdefault('image_size', vit_cfg.image_size)   # default: what the ViT takes
        if self.visual_encoder_aux is None:
            config.vision_spec['image_size_aux'] = None

        vis_dim, llm_dim = vit_cfg.hidden_size, self.llm.config.hidden_size
        dtype = getattr(torch, config.adapter_dtype)  # trained adapters keep fp32 weights even with bf16 towers/LLM
        depth = config.projector_depth
        self.projector = MLPProjector(vis_dim, llm_dim, depth).to(dtype)
        self.fuse_module = self.bbox_projector = self.box_position_embed = None
        if self.visual_encoder_aux is not None:
            chans = self.visual_encoder_aux.out_channels
            if config.use_fusion:
                self.fuse_module = ConvGateFusion(vis_dim, chans[-1], resample_mismatch=config.fusion_resample).to(dtype)
            if config.use_object_tokens:
                self.bbox_projector = MLPProjector(sum(chans), llm_dim, depth).to(dtype)
                if config.object_box_position:
                    self.box_position_embed = MLPProjector(4, llm_dim, 2).to(dtype)
                    # zero last layer: the branch starts as a no-op and cannot drown the pooled appearance
                    nn.init.zeros_(self.box_position_embed.model[2].weight)
                    nn.init.zeros_(self.box_position_embed.model[2].bias)
        self.policy.apply(self)
        if config.tower_dtype is not None:   # frozen ones only: a trained tower keeps its dtype for the optimizer
            for tower in self.policy.frozen_towers(self):
                tower.to(getattr(torch, config.tower_dtype))
        if pretrained_pth is not None:
            self.load_pretrained(pretrained_pth)

    # ------------------------------------------------------------------ facts read by data, eval and chat
    @property
    def num_image_tokens(self):
        """T, image tokens per image given by the low-res tower (CLIP drops its CLS token)."""
        cfg = self.visual_encoder.config
        return (cfg.image_size // cfg.patch_size) ** 2

    @property
    def vision_spec(self):
        """The VisionSpec images and boxes are prepared with for this model."""
        return self.config.spec

    @property
    def max_new_tokens(self):
        return self.config.max_new_tokens

    def train(self, mode=True):
        """Frozen towers stay in eval(): no dropout / drop-path noise in features nobody trains."""
        super().train(mode)
        for tower in self.policy.frozen_towers(self):
            tower.eval()
        return self

    def init_weights(self):
        """Weights come from from_pretrained / explicit inits; mmengine must not re-initialise them."""

    # ------------------------------------------------------------------ checkpoints and exports
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
        if not hasattr(self, 'student') and ckpt and all(k.startswith('student.') for k in ckpt):
            ckpt = {k[len('student.'):]: v for k, v in ckpt.items()}   # a distillation stage's checkpoint
        if self.config.moe is not None:
            ckpt = self._upcycle_checkpoint(ckpt)
        own = dict(self.named_parameters(), **dict(self.named_buffers()))
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

    def _upcycle_checkpoint(self, ckpt):
        """A DENSE checkpoint (e.g. LLaVA-MoD's D2D student) loaded into an up-cycled model: each up-cycled FFN's
        dense weights are copied into every expert (and the residual MLP), as up-cycling the dense model would.
        An MoE checkpoint (its experts present) is returned as is."""
        from .moe import SparseMoEBlock
        ckpt = dict(ckpt)
        for name, block in self.named_modules():
            if not isinstance(block, SparseMoEBlock) or any(k.startswith(f'{name}.experts.') for k in ckpt):
                continue
            targets = [f'{name}.experts.{j}.' for j in range(block.num_experts)]
            if block.residual_mlp is not None:
                targets.append(f'{name}.residual_mlp.')
            for key in [k for k in ckpt if k.startswith(name + '.')]:
                value, rest = ckpt.pop(key), key[len(name) + 1:]
                for t in targets:
                    ckpt[t + rest] = value
        return ckpt

    def save_pretrained(self, save_dir, fp32=False, save_pretrained_kwargs=None):
        """Folder = mg_llava_config.json + safetensors of every trained part (export.py)."""
        export.save_pretrained(self, save_dir, fp32=fp32, save_pretrained_kwargs=save_pretrained_kwargs)

    @classmethod
    def from_pretrained(cls, save_dir, torch_dtype=torch.float32):
        """Rebuild an inference-ready model (eval mode) from a `save_pretrained` / pth_to_hf folder."""
        config, saved = export.read_folder(save_dir, torch_dtype)
        model = cls(config=config, freeze_llm=True, use_activation_checkpointing=False)
        export.load_saved_parts(model, save_dir, saved)
        return model.to(torch_dtype).eval()

    def to_hf(self, cfg, save_dir, fp32=False, save_pretrained_kwargs=None, save_format='xtuner', **kwargs):
        """`xtuner convert pth_to_hf`: 'xtuner' (default) = save_pretrained; 'huggingface' = a transformers-native
        LlavaForConditionalGeneration folder (LLaVA-1.5-mode models only)."""
        export.convert(self, save_dir, save_format, fp32=fp32, save_pretrained_kwargs=save_pretrained_kwargs)

    # ------------------------------------------------------------------ forward
    def _tower_ctx(self, tower):
        frozen = any(tower is t for t in self.policy.frozen_towers(self))
        return torch.no_grad() if frozen else contextlib.nullcontext()

    def encode_visual(self, data, tower_cache=None):
        """All visual tokens of the batch in one tensor: (N_img*T + K, H_llm).

        data: pixel_values (N_img,3,s,s), pixel_values_aux (N_img,3,S,S), boxes (K,4) in S-pixel xyxy,
        box_batch_index (K,), num_image_tokens (int T the collate laid out).
        tower_cache: a dict shared with another model running the same frozen towers on the same pixels (a
        distillation teacher): the tower outputs ('low', 'stages') are computed once and reused.
        """
        cache = {} if tower_cache is None else tower_cache
        vit_cfg, side = self.visual_encoder.config, data['pixel_values'].shape[-1]
        if side != vit_cfg.image_size:   # before HF's "Input image size (336*336) doesn't match model (56*56)"
            raise ValueError('; '.join(geometry_errors(side, None, data.get('num_image_tokens'), vit_cfg.image_size,
                                                       vit_cfg.patch_size, tower=tower_name(vit_cfg), has_aux=False)))
        if 'low' not in cache:
            with self._tower_ctx(self.visual_encoder):
                cache['low'] = low_res_features(self.visual_encoder, data['pixel_values'],
                                                self.config.visual_select_layer)
        low = cache['low']
        if data.get('num_image_tokens', low.shape[1]) != low.shape[1]:
            raise ValueError(f'the data lays out {data["num_image_tokens"]} image tokens per image but the '
                             f'vision tower gives {low.shape[1]}: check image_size/num_image_tokens in the config')
        dtype = self.projector.model[0].weight.dtype
        low = low.to(dtype)
        stages = None
        if self.visual_encoder_aux is not None:
            if 'stages' not in cache:
                with self._tower_ctx(self.visual_encoder_aux):
                    cache['stages'] = self.visual_encoder_aux(data['pixel_values_aux'])
            stages = cache['stages']
        fused = self.fuse_module(low, stages[-1]) if self.fuse_module is not None else low
        tokens = [self.projector(fused).flatten(0, 1)]
        if self.bbox_projector is not None:
            pooled = pool_object_features(stages, data['boxes'], data['box_batch_index'],
                                          image_size=data['pixel_values_aux'].shape[-1],
                                          mode=self.config.object_pooling, output_size=self.config.object_pool_size,
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

    def embed_inputs(self, data, visual_tokens=None, tower_cache=None):
        """input_ids (B,L) with IMAGE_TOKEN_INDEX in visual slots -> inputs_embeds (B,L,H).
        visual_tokens: (V,H) already gathered for the slots (chat caches them across turns); default: encoded
        from the batch's pixels (tower_cache: see encode_visual)."""
        input_ids = data['input_ids']
        visual_mask = input_ids == IMAGE_TOKEN_INDEX
        embeds = self.llm.get_input_embeddings()(input_ids.masked_fill(visual_mask, 0))
        if visual_tokens is None:
            if data.get('pixel_values') is None:
                return embeds + self._zero_touch() if self.training else embeds
            visual_tokens = self.encode_visual(data, tower_cache)[data['visual_index']]
        return embeds.masked_scatter(visual_mask.unsqueeze(-1), visual_tokens.to(embeds.dtype))

    def forward_hidden(self, data, tower_cache=None):
        """Visual encoding + sequence assembly + the LLM's decoder (no LM head).

        -> hidden (B, L, H_llm) final hidden states, and a dict of the LLM's auxiliary losses (an MoE LLM's
        router load-balancing term, as HF adds it, when its config has output_router_logits)."""
        extra = {'output_router_logits': True} if losses.wants_router_logits(self.llm) else {}
        embeds = self.embed_inputs(data, tower_cache=tower_cache)
        with self._routing(data):
            out = self.llm.get_decoder()(inputs_embeds=embeds, use_cache=False,
                                         **llm_attention_inputs(self.llm, data, embeds.dtype), **extra)
        aux = {}
        if extra:
            aux['router_loss'] = losses.router_aux_loss(self.llm, out.router_logits, data['attention_mask'])
        aux.update(self._upcycled_router_loss())
        return out[0], aux

    def _routing(self, data):
        self.set_routing(data['attention_mask'])
        return contextlib.nullcontext()

    def set_routing(self, attention_mask):
        """Up-cycled MoE layers route real tokens only: padding is excluded from routing, capacity and the aux
        loss (the reference routed padding too). attention_mask (B, L); it stays set until the next call, so
        activation checkpointing's recompute in backward (and KV-cache decoding steps) route as the forward
        did. A no-op for a dense LLM."""
        if self.config.moe is not None:
            from .moe import set_routing_mask
            set_routing_mask(self.llm, attention_mask)

    def _upcycled_router_loss(self):
        """{'router_loss': coef * sum of the up-cycled layers' l_aux} (once per forward), or {}."""
        if self.config.moe is None:
            return {}
        from .moe import router_aux_loss
        loss = router_aux_loss(self.llm)
        return {} if loss is None else {'router_loss': loss}

    def lm_logits_at(self, hidden, index):
        """fp32 logits (N, V) of the positions `index` (flat into hidden[:, :-1]); see losses.logits_at."""
        return losses.logits_at(self.llm.get_output_embeddings(), hidden, index)

    def forward(self, data, data_samples=None, mode='loss'):
        if mode == 'loss':
            return self.compute_loss(data)
        if mode == 'tensor':
            embeds = self.embed_inputs(data)
            return self.llm(inputs_embeds=embeds, use_cache=False,
                            **llm_attention_inputs(self.llm, data, embeds.dtype)).logits
        # generation is mg_llava.inference's job (one engine for eval, chat and data generation), not a mode
        raise ValueError(f"mode must be 'loss' or 'tensor', got {mode!r} (to generate: mg_llava.inference)")

    def compute_loss(self, data):
        """{'loss': token-mean next-token cross-entropy over the batch (HF semantics), + 'router_loss' for an
        MoE LLM that asks for it}; mmengine sums every '*loss*' entry.

        With `supervised_only_logits` the LM head and the fp32 log-softmax run only on the positions the
        collate listed in `supervised_index` (typically a quarter of the sequence after 576+ visual tokens),
        instead of materialising (B, L, vocab) logits. Used for decoder LMs whose head is a plain linear layer.
        """
        idx = data.get('supervised_index')
        if not (self.config.supervised_only_logits and idx is not None and losses.has_plain_head(self.llm)):
            # HF's own forward: includes a native MoE's router loss itself when the config asks for it
            embeds = self.embed_inputs(data)
            with self._routing(data):
                loss = self.llm(inputs_embeds=embeds, labels=data['labels'], use_cache=False,
                                **llm_attention_inputs(self.llm, data, embeds.dtype)).loss
            return {'loss': loss, **self._upcycled_router_loss()}
        hidden, aux = self.forward_hidden(data)
        # packed rows: the token mean over all ranks' tokens (losses.global_token_mean); unpacked: xtuner's
        # per-rank mean, unchanged
        packed, targets = data.get('sequence_ids') is not None, losses.targets_at(data['labels'], idx)
        if self.config.llm_kernels == 'liger':
            ce = losses.fused_linear_ce(self.llm.get_output_embeddings(), hidden, idx, targets, global_mean=packed)
        else:
            ce_fn = losses.global_token_mean_ce if packed else losses.next_token_ce
            ce = ce_fn(self.lm_logits_at(hidden, idx), targets)
        return {'loss': ce, **aux}
