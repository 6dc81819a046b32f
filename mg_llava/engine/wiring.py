"""Fill a training config's derived values from the one place each fact is written.

A config writes each fact once: the LLM, template, towers and vision spec in `model`, the data files in
`train_dataloader.dataset`, the batch size in `train_dataloader`, the epochs in `train_cfg`, the lr in
`optim_wrapper.optimizer`. mmengine copies base dicts into children, so any second copy would silently keep
the base's value; instead the places that need a fact read it here, when the run is built:

* the dataset gets the model's tokenizer (the LLM's own when `model.tokenizer` is None), template, vision spec
  and the image-token count its ViT gives (`complete_dataset`);
* a LengthGroupedSampler gets `per_device_batch_size` = batch size x accumulation;
* epoch-based param schedulers get `end` = train_cfg.max_epochs (xtuner's iteration-based TrainLoop reports
  1 epoch to mmengine, which would otherwise end the schedule after one epoch).

`check_no_stray_facts` turns the old xtuner habit (a child re-assigning a top-level `data_path`, `lr`, ...
that nothing reads any more) into a clear error instead of a silently ignored setting.
"""
import copy
import os.path as osp

from mg_llava.data.geometry import read_vit_config
from mg_llava.models.configuration import MGLLaVAConfig, source_path

# top-level name a child might set (xtuner habit) -> where the fact is read now
STRAY_FACTS = {
    'llm_name_or_path': 'model.llm', 'prompt_template': 'model.template', 'vision_spec': 'model.vision_spec',
    'visual_encoder_name_or_path': 'model.visual_encoder', 'visual_encoder_aux_path': 'model.visual_encoder_aux',
    'pretrained_pth': 'model.pretrained_pth', 'data_path': 'train_dataloader.dataset.data_path',
    'image_folder': 'train_dataloader.dataset.image_folder', 'box_json_path': 'train_dataloader.dataset.box_json_path',
    'max_length': 'train_dataloader.dataset.max_length', 'batch_size': 'train_dataloader.batch_size',
    'lr': 'optim_wrapper.optimizer.lr', 'max_epochs': 'train_cfg.max_epochs',
    'accumulative_counts': 'optim_wrapper.accumulative_counts',
    # LLaVA-MoD's knobs (configs/llava_mod), checked where the stage has the part they set
    'LOSS_TYPE': 'model.loss_type', 'DISTILL_ALL_TOKENS': 'model.distill_all_tokens',
    'MOE_LOSS_ENABLE': 'model.moe_loss_enable', 'MOE_MODE': 'model.student.moe.layers',
    'NUM_EXPERTS': 'model.student.moe.num_experts', 'TOP_K_EXPERTS': 'model.student.moe.top_k',
    'USE_RESIDUAL': 'model.student.moe.use_residual', 'CAPACITY_FACTOR': 'model.student.moe.capacity_factor',
    'EVAL_CAPACITY_FACTOR': 'model.student.moe.eval_capacity_factor',
    'ROUTER_AUX_LOSS_COEF': 'model.student.moe.router_aux_loss_coef',
}


def _lookup(cfg, dotted):
    node = cfg
    for part in dotted.split('.'):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            return None
    return node


def check_no_stray_facts(cfg):
    """Raise when the config sets a top-level variable that differs from the value actually used."""
    problems = []
    for name, where in STRAY_FACTS.items():
        if name not in cfg:
            continue
        parent, leaf = where.rsplit('.', 1)
        node = _lookup(cfg, parent)
        if node is None or leaf not in node:
            continue   # this run has no such part (e.g. a dense student and the MoE knobs)
        value, used = cfg[name], _lookup(cfg, where)
        if where in ('model.llm', 'model.visual_encoder', 'model.visual_encoder_aux'):
            value, used = source_path(value), source_path(used)
        if isinstance(value, dict) and isinstance(used, dict):
            value, used = dict(value), {k: used[k] for k in used if k in value}
        if value != used:
            problems.append(f'`{name} = {cfg[name]!r}` is not read by anything; the run uses {where} = {used!r}. '
                            f'Set it there: `{parent}.update({leaf}=...)`.')
    if problems:
        raise ValueError('config: ' + ' '.join(problems))


def model_config(model_cfg):
    """The `model=dict(type=MGLLaVAModel, ...)` of a training config -> MGLLaVAConfig (nothing is built). For a
    distillation model (`student=dict(...)` next to a teacher) the data is prepared for the student."""
    if 'student' in model_cfg:
        model_cfg = model_cfg['student']
    fields, _ = MGLLaVAConfig.split_kwargs(dict(model_cfg))
    return MGLLaVAConfig(**fields)


def _local_vit(config):
    path = source_path(config.visual_encoder)
    return path if path is not None and osp.isdir(path) else None


def num_image_tokens(config):
    """Image tokens per image the config's ViT gives at its vision spec, from its config.json; None when the
    ViT is not a local folder (the dataset default then applies; building the model would say what is wrong)."""
    path = _local_vit(config)
    if path is None:
        return None
    vit = read_vit_config(path)
    side = config.vision_spec.get('image_size', vit.image_size)
    return (side // vit.patch_size) ** 2


def complete_dataset(dataset_cfg, model_cfg):
    """Dataset cfg -> a copy with the model's tokenizer, template, vision spec and image-token count filled in
    (keys the dataset cfg sets itself are kept)."""
    from transformers import AutoTokenizer
    config = model_config(model_cfg)
    ds = copy.deepcopy(dict(dataset_cfg))
    if 'tokenizer' not in ds:
        tok = config.tokenizer
        if tok is None or not isinstance(tok, dict):
            tok = dict(type=AutoTokenizer.from_pretrained,
                       pretrained_model_name_or_path=str(tok) if tok is not None else source_path(config.llm),
                       trust_remote_code=config.trust_remote_code)
        ds['tokenizer'] = tok
    ds.setdefault('template', config.template)
    if 'vision_spec' not in ds:
        spec = dict(config.vision_spec)
        if config.visual_encoder_aux is None:
            spec['image_size_aux'] = None   # LLaVA-1.5: no high-res view, no boxes
        if 'image_size' not in spec and _local_vit(config):
            spec['image_size'] = read_vit_config(_local_vit(config)).image_size
        ds['vision_spec'] = spec
    if 'num_image_tokens' not in ds:
        n = num_image_tokens(config)
        if n is not None:
            ds['num_image_tokens'] = n
    return ds


def complete_train_dataloader(cfg, dataloader_cfg):
    """The run's `train_dataloader` dict -> a copy whose dataset and sampler are complete."""
    check_no_stray_facts(cfg)
    dl = copy.deepcopy(dict(dataloader_cfg))
    dl['dataset'] = complete_dataset(dl['dataset'], cfg['model'])
    sampler = dl.get('sampler')
    if isinstance(sampler, dict) and 'per_device_batch_size' not in sampler and \
            'LengthGroupedSampler' in str(sampler.get('type')):
        accumulation = (cfg.get('optim_wrapper') or {}).get('accumulative_counts', 1)
        dl['sampler'] = dict(sampler, per_device_batch_size=dl['batch_size'] * accumulation)
    return dl


def complete_param_schedulers(schedulers, max_epochs):
    """Epoch-based scheduler dicts without `end` end with the run (in place)."""
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    for s in schedulers or []:
        if isinstance(s, dict) and s.get('by_epoch', True):
            s.setdefault('end', max_epochs)
