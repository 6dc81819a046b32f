"""Save / load an MGLLaVAModel folder (`model.save_pretrained`, `MGLLaVAModel.from_pretrained`,
`xtuner convert pth_to_hf`). This module never imports the model class: the model calls it.

Layout of a folder (save_format 'xtuner'):
    mg_llava_config.json          {"format": "mg_llava", "version": 2, "config": MGLLaVAConfig, "saved": {...}}
    projector.safetensors         always (fp32)
    fuse_module.safetensors       MG-LLaVA with fusion
    bbox_projector.safetensors    MG-LLaVA with object tokens
    box_position_embed.safetensors  with object_box_position (optional, not upstream)
    llm/ | llm_adapter/           full LLM (save_pretrained, fp16 unless --fp32) or its LoRA adapter, when trained
    llm_qwen2_moe/                an up-cycled Qwen2 student's LLM also as transformers' Qwen2MoeForCausalLM (+ tokenizer)
    visual_encoder/ | visual_encoder_adapter/   when the ViT was trained / LoRA-tuned
    visual_encoder_aux.safetensors              when the ConvNeXt was trained
    tokenizer/
Frozen components given by a local path are not copied: the config points at their original paths.
save_format 'huggingface': a transformers-native LlavaForConditionalGeneration folder (export_llava_hf.py).
"""
import dataclasses
import json
import os
import os.path as osp
from collections import Counter

import torch
from safetensors.torch import load_file, save_file

from .configuration import MGLLaVAConfig, _plain, source_path
from .folder_io import write_atomically
from .policy import ADAPTER_MODULES, no_bnb_dispatch

CONFIG_NAME = 'mg_llava_config.json'
FORMAT_VERSION = 2
SAVE_FORMATS = ('xtuner', 'huggingface')
QWEN2_MOE_DIR = 'llm_qwen2_moe'   # an up-cycled Qwen2 student's LLM, also as a transformers-native MoE


def _sub_state(model, prefix):
    return {k[len(prefix) + 1:]: v.detach().to('cpu', torch.float32).contiguous()
            for k, v in model.state_dict().items() if k.startswith(prefix + '.')}


def check_trained_parts_loaded(model, source='the checkpoint'):
    """`xtuner convert pth_to_hf` builds the model on the meta device and fills in the checkpoint's tensors;
    a trained part the checkpoint lacks (e.g. a stage-1 checkpoint given with an SFT config, whose LLM is
    trained) would still be on meta. Raise naming those parts, before anything is written."""
    missing = Counter(k.split('.', 1)[0] for k, v in model.state_dict().items() if v.is_meta)
    if missing:
        parts = ', '.join(f'{name} ({n} tensors)' for name, n in sorted(missing.items()))
        raise ValueError(f'{source} lacks trained parts of this config: {parts}. Was it written by another '
                         'config (e.g. a pretrain checkpoint given with the SFT config)? Nothing was exported.')


def _atomic(write, model, save_dir, **kw):
    """Check the model, write everything into a temporary sibling folder, then move it in: a failure leaves no
    partial export (and removes the empty folder pth_to_hf made before calling us)."""
    try:
        check_trained_parts_loaded(model)
    except ValueError:
        if osp.isdir(save_dir) and not os.listdir(save_dir):
            os.rmdir(save_dir)
        raise
    write_atomically(lambda tmp: write(model, tmp, **kw), save_dir)


def convert(model, save_dir, save_format='xtuner', fp32=False, save_pretrained_kwargs=None):
    """`xtuner convert pth_to_hf ... --save-format {xtuner,huggingface}`."""
    if save_format not in SAVE_FORMATS:
        raise ValueError(f'save_format must be one of {SAVE_FORMATS}, got {save_format!r}')
    if save_format == 'huggingface':
        from .export_llava_hf import save_llava_hf   # checks the model and writes atomically itself
        try:
            save_llava_hf(model, save_dir, fp32=fp32, save_pretrained_kwargs=save_pretrained_kwargs,
                          vision_spec=model.vision_spec)
        except ValueError:
            if osp.isdir(save_dir) and not os.listdir(save_dir):
                os.rmdir(save_dir)  # the empty folder pth_to_hf made before calling us
            raise
    else:
        save_pretrained(model, save_dir, fp32=fp32, save_pretrained_kwargs=save_pretrained_kwargs)


def save_pretrained(model, save_dir, fp32=False, save_pretrained_kwargs=None):
    _atomic(_write_folder, model, save_dir, fp32=fp32, save_pretrained_kwargs=save_pretrained_kwargs)


def _write_folder(model, save_dir, fp32, save_pretrained_kwargs):
    kw = dict(save_pretrained_kwargs or {})
    kw['safe_serialization'] = True
    policy, config = model.policy, model.config
    saved = dict(llm=None, llm_adapter=None, visual_encoder=None, visual_encoder_adapter=None,
                 visual_encoder_aux=None, tokenizer=None, parts=[])
    for name in ADAPTER_MODULES:
        if getattr(model, name) is not None:
            save_file(_sub_state(model, name), osp.join(save_dir, f'{name}.safetensors'))
            saved['parts'].append(name)
    if policy.llm_lora_on:
        model.llm.save_pretrained(osp.join(save_dir, 'llm_adapter'), safe_serialization=True)
        saved['llm_adapter'] = 'llm_adapter'
    if policy.llm_weights_trained or source_path(config.llm) is None:
        llm = model.llm.get_base_model() if policy.llm_lora_on else model.llm
        (llm if fp32 else llm.half()).save_pretrained(osp.join(save_dir, 'llm'), **kw)
        saved['llm'] = 'llm'
        if _qwen2_moe_exportable(model):
            _write_qwen2_moe(model, osp.join(save_dir, QWEN2_MOE_DIR), fp32, kw)
            saved['llm_qwen2_moe'] = QWEN2_MOE_DIR
    if policy.visual_encoder_lora_on:
        model.visual_encoder.save_pretrained(osp.join(save_dir, 'visual_encoder_adapter'), safe_serialization=True)
        saved['visual_encoder_adapter'] = 'visual_encoder_adapter'
    if ((not policy.freeze_visual_encoder and not policy.visual_encoder_lora_on)
            or source_path(config.visual_encoder) is None):
        vit = model.visual_encoder.get_base_model() if policy.visual_encoder_lora_on else model.visual_encoder
        vit.save_pretrained(osp.join(save_dir, 'visual_encoder'), **kw)
        saved['visual_encoder'] = 'visual_encoder'
    if model.visual_encoder_aux is not None and not policy.freeze_visual_encoder_aux:
        save_file(_sub_state(model, 'visual_encoder_aux'), osp.join(save_dir, 'visual_encoder_aux.safetensors'))
        saved['visual_encoder_aux'] = 'visual_encoder_aux.safetensors'
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(osp.join(save_dir, 'tokenizer'))
        saved['tokenizer'] = 'tokenizer'
    cfg = config.to_dict()
    if model.visual_encoder_aux is not None:   # the tower's own record (timm name / open_clip dir, kwargs)
        aux = dict(model.visual_encoder_aux.source)
        aux['model_name_or_path'] = source_path(aux['model_name_or_path'])
        cfg['visual_encoder_aux'] = _plain(aux)
    with open(osp.join(save_dir, CONFIG_NAME), 'w') as f:
        json.dump(dict(format='mg_llava', version=FORMAT_VERSION, config=cfg, saved=saved), f, indent=2)


def _qwen2_moe_exportable(model):
    return (model.config.moe is not None and not model.config.moe.get('use_residual', False)
            and getattr(model.llm.config, 'model_type', None) == 'qwen2')


def _write_qwen2_moe(model, out_dir, fp32, kw):
    """The up-cycled Qwen2 LLM as a transformers-native Qwen2MoeForCausalLM folder (+ its tokenizer), so
    standard serving tools can load the student's LLM without this project (same function in eval mode: HF
    has no capacity, and the default eval capacity drops nothing)."""
    from transformers import Qwen2MoeForCausalLM

    from .moe import to_qwen2_moe_state
    config, state = to_qwen2_moe_state(model.llm)
    with torch.device('meta'):
        hf = Qwen2MoeForCausalLM(config)
    hf.load_state_dict(state, strict=True, assign=True)
    hf.tie_weights()
    (hf if fp32 else hf.half()).save_pretrained(out_dir, **kw)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(out_dir)


def read_folder(save_dir, torch_dtype=torch.float32):
    """Folder -> (MGLLaVAConfig whose sources point at the saved copies where there are some, `saved` map)."""
    path = osp.join(save_dir, CONFIG_NAME)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{save_dir} is not an mg_llava folder (no {CONFIG_NAME})')
    with open(path) as f:
        meta = json.load(f)
    if meta.get('format') != 'mg_llava' or meta.get('version') != FORMAT_VERSION:
        raise ValueError(f'{path}: format {meta.get("format")!r} version {meta.get("version")!r} is not '
                         f'mg_llava version {FORMAT_VERSION}; re-export it with `xtuner convert pth_to_hf`')
    saved, cfg = meta['saved'], dict(meta['config'])
    here = lambda rel: osp.join(save_dir, rel)  # noqa: E731
    for key in ('llm', 'visual_encoder', 'tokenizer'):
        if saved.get(key):
            cfg[key] = here(saved[key])
    names = {f.name for f in dataclasses.fields(MGLLaVAConfig)}
    cfg = {k: v for k, v in cfg.items() if k in names}
    cfg['llm_dtype'] = str(torch_dtype).replace('torch.', '')
    return MGLLaVAConfig(**cfg), saved


def read_hf_weights(folder):
    """All tensors of a `save_pretrained` folder (one or several safetensors shards)."""
    names = sorted(f for f in os.listdir(folder) if f.endswith('.safetensors'))
    if not names:
        raise FileNotFoundError(f'{folder}: no .safetensors weights')
    state = {}
    for name in names:
        state.update(load_file(osp.join(folder, name)))
    return state


def _load_weights_strict(module, state, where):
    missing, unexpected = module.load_state_dict(state, strict=False)
    tied = {'lm_head.weight'} if getattr(module.config, 'tie_word_embeddings', False) else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise KeyError(f'{where}: weights do not match the up-cycled LLM: missing {missing[:5]}, '
                       f'unexpected {unexpected[:5]}')


def load_saved_parts(model, save_dir, saved):
    """Fill a model built from `read_folder`'s config with the folder's trained tensors (strict)."""
    from peft import PeftModel
    here = lambda rel: osp.join(save_dir, rel)  # noqa: E731
    if model.config.moe is not None and saved.get('llm'):
        # an up-cycled LLM was saved with its experts; the dense skeleton HF rebuilt is up-cycled, then filled
        _load_weights_strict(model.llm, read_hf_weights(here(saved['llm'])), here(saved['llm']))
    with no_bnb_dispatch():   # the saved model is not quantised
        if saved.get('llm_adapter'):
            model.llm = PeftModel.from_pretrained(model.llm, here(saved['llm_adapter'])).merge_and_unload()
        if saved.get('visual_encoder_adapter'):
            model.visual_encoder = PeftModel.from_pretrained(
                model.visual_encoder, here(saved['visual_encoder_adapter'])).merge_and_unload()
    if saved.get('visual_encoder_aux'):
        model.visual_encoder_aux.load_state_dict(load_file(here(saved['visual_encoder_aux'])), strict=True)
    for name in saved['parts']:
        getattr(model, name).load_state_dict(load_file(here(f'{name}.safetensors')), strict=True)
