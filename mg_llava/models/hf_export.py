"""Export (`xtuner convert pth_to_hf`) and re-load of an MGLLaVAModel.

Layout of an export folder:
    mg_llava_config.json          how to rebuild: component sources, model options, template, vision spec
    projector.safetensors         always (fp32)
    fuse_module.safetensors       MG-LLaVA with fusion
    bbox_projector.safetensors    MG-LLaVA with object tokens
    box_position_embed.safetensors  with object_box_position (optional, not upstream)
    llm/ | llm_adapter/           full LLM (save_pretrained, fp16 unless --fp32) or its LoRA adapter, when trained
    visual_encoder/ | visual_encoder_adapter/   when the ViT was trained / LoRA-tuned
    visual_encoder_aux.safetensors              when the ConvNeXt was trained
    tokenizer/
Frozen components are not copied: the JSON points at their original local paths.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from collections import Counter

import torch
from safetensors.torch import load_file, save_file

CONFIG_NAME = 'mg_llava_config.json'
MODEL_OPTIONS = ('visual_select_layer', 'object_pooling', 'object_pool_size', 'max_new_tokens')


def _source(cfg):
    """Absolute local path a component was built from (None if it was passed as a module)."""
    if not isinstance(cfg, dict):
        return None
    path = cfg.get('pretrained_model_name_or_path') or cfg.get('model_name_or_path')
    return osp.abspath(path) if path and osp.exists(str(path)) else path


def _plain(obj):
    """ConfigDicts / tuples -> JSON-able python."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool)) or obj is None else str(obj)


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


def _move_into(tmp_dir, save_dir):
    """Move the finished export into `save_dir` (entry by entry; same-named old entries are replaced)."""
    os.makedirs(save_dir, exist_ok=True)
    for name in os.listdir(tmp_dir):
        dst = osp.join(save_dir, name)
        if osp.isdir(dst) and not osp.islink(dst):
            shutil.rmtree(dst)
        elif osp.lexists(dst):
            os.remove(dst)
        os.replace(osp.join(tmp_dir, name), dst)
    os.rmdir(tmp_dir)


def save_hf(model, cfg, save_dir, fp32=False, save_pretrained_kwargs=None):
    """Write every trained part of `model` to `save_dir` (see module docstring). Everything is written to a
    temporary sibling folder first and moved in at the end: a failure leaves no partial export."""
    try:
        check_trained_parts_loaded(model)
    except ValueError:
        if osp.isdir(save_dir) and not os.listdir(save_dir):
            os.rmdir(save_dir)  # the empty folder pth_to_hf made before calling us
        raise
    parent = osp.dirname(osp.abspath(save_dir))
    os.makedirs(parent, exist_ok=True)
    final_dir, save_dir = save_dir, tempfile.mkdtemp(prefix=f'.{osp.basename(osp.abspath(save_dir))}.tmp-',
                                                     dir=parent)
    try:
        _write_export(model, cfg, save_dir, fp32, save_pretrained_kwargs)
    except BaseException:
        shutil.rmtree(save_dir, ignore_errors=True)
        raise
    _move_into(save_dir, final_dir)


def _write_export(model, cfg, save_dir, fp32, save_pretrained_kwargs):
    kw = dict(save_pretrained_kwargs or {})
    kw['safe_serialization'] = True
    bc = model.build_cfg
    aux_src = None
    if model.visual_encoder_aux is not None:
        aux_src = dict(model.visual_encoder_aux.source)
        aux_src['model_name_or_path'] = _source(aux_src)
    meta = dict(
        format='mg_llava', version=1,
        llm=dict(path=_source(bc['llm']), saved=None, adapter=None),
        visual_encoder=dict(cls=type(model.visual_encoder.get_base_model() if model.use_visual_encoder_lora
                                     else model.visual_encoder).__name__,
                            path=_source(bc['visual_encoder']), saved=None, adapter=None),
        visual_encoder_aux=None if aux_src is None else dict(source=aux_src, saved=None),
        parts=[], model={k: getattr(model, k) for k in MODEL_OPTIONS},
        projector_depth=(len(model.projector.model) + 1) // 2,
        use_fusion=model.fuse_module is not None, use_object_tokens=model.bbox_projector is not None,
        object_box_position=model.box_position_embed is not None,
        fusion_resample=getattr(model.fuse_module, 'resample_mismatch', True),
        template=_plain(model.template), vision_spec=_plain(cfg.get('vision_spec')) if cfg is not None else None,
    )
    for name in ('projector', 'fuse_module', 'bbox_projector', 'box_position_embed'):
        if getattr(model, name) is not None:
            save_file(_sub_state(model, name), osp.join(save_dir, f'{name}.safetensors'))
            meta['parts'].append(name)
    if model.use_llm_lora:
        model.llm.save_pretrained(osp.join(save_dir, 'llm_adapter'), safe_serialization=True)
        meta['llm']['adapter'] = 'llm_adapter'
    elif not model.freeze_llm:
        llm = model.llm if fp32 else model.llm.half()
        llm.save_pretrained(osp.join(save_dir, 'llm'), **kw)
        meta['llm']['saved'] = 'llm'
    if model.use_visual_encoder_lora:
        model.visual_encoder.save_pretrained(osp.join(save_dir, 'visual_encoder_adapter'), safe_serialization=True)
        meta['visual_encoder']['adapter'] = 'visual_encoder_adapter'
    elif not model.freeze_visual_encoder:
        model.visual_encoder.save_pretrained(osp.join(save_dir, 'visual_encoder'), **kw)
        meta['visual_encoder']['saved'] = 'visual_encoder'
    if model.visual_encoder_aux is not None and not model.freeze_visual_encoder_aux:
        save_file(_sub_state(model, 'visual_encoder_aux'), osp.join(save_dir, 'visual_encoder_aux.safetensors'))
        meta['visual_encoder_aux']['saved'] = 'visual_encoder_aux.safetensors'
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(osp.join(save_dir, 'tokenizer'))
    with open(osp.join(save_dir, CONFIG_NAME), 'w') as f:
        json.dump(meta, f, indent=2)


def load_hf(export_dir, torch_dtype=torch.float32):
    """Rebuild an inference-ready MGLLaVAModel (eval mode) from an export folder."""
    import transformers
    from peft import PeftModel

    from .mg_llava_model import MGLLaVAModel
    from .towers import ConvNeXtTower

    path = osp.join(export_dir, CONFIG_NAME)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{export_dir} is not an mg_llava export (no {CONFIG_NAME})')
    with open(path) as f:
        meta = json.load(f)
    here = lambda rel: osp.join(export_dir, rel)  # noqa: E731
    llm_path = here(meta['llm']['saved']) if meta['llm']['saved'] else meta['llm']['path']
    ve = meta['visual_encoder']
    ve_cls = getattr(transformers, ve['cls'])
    aux = meta['visual_encoder_aux']
    tok_dir = here('tokenizer') if osp.isdir(here('tokenizer')) else None
    model = MGLLaVAModel(
        llm=dict(type=transformers.AutoModelForCausalLM.from_pretrained,
                 pretrained_model_name_or_path=llm_path, torch_dtype=torch_dtype),
        visual_encoder=dict(type=ve_cls.from_pretrained,
                            pretrained_model_name_or_path=here(ve['saved']) if ve['saved'] else ve['path']),
        visual_encoder_aux=None if aux is None else ConvNeXtTower(**aux['source']),
        tokenizer=None if tok_dir is None else dict(type=transformers.AutoTokenizer.from_pretrained,
                                                    pretrained_model_name_or_path=tok_dir),
        template=meta['template'], freeze_llm=True, use_activation_checkpointing=False,
        projector_depth=meta['projector_depth'], use_fusion=meta['use_fusion'],
        use_object_tokens=meta['use_object_tokens'], fusion_resample=meta['fusion_resample'],
        object_box_position=meta.get('object_box_position', False), **meta['model'])
    if meta['llm']['adapter']:
        model.llm = PeftModel.from_pretrained(model.llm, here(meta['llm']['adapter'])).merge_and_unload()
    if ve['adapter']:
        model.visual_encoder = PeftModel.from_pretrained(model.visual_encoder, here(ve['adapter'])).merge_and_unload()
    if aux is not None and aux['saved']:
        model.visual_encoder_aux.load_state_dict(load_file(here(aux['saved'])), strict=True)
    for name in meta['parts']:
        getattr(model, name).load_state_dict(load_file(here(f'{name}.safetensors')), strict=True)
    model.export_meta = meta
    return model.to(torch_dtype).eval()
