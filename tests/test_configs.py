"""Every config under configs/ parses, and builds (model + train dataset + sampler + one loss forward/backward)
once its checkpoints and data are swapped for tiny stand-ins (mg_llava.demo.tiny_assets / world).

Also guards the child configs against the classic lazy-config mistake: mmengine copies the base's dicts into a
child, so a child that changes `llm_name_or_path` / `prompt_template` must re-point every copy
(model.llm, model.tokenizer, the dataset's tokenizer, both templates).
"""
import glob
import math
import os
import os.path as osp

os.environ['HF_HUB_OFFLINE'] = '1'  # noqa: E402  (must precede the transformers import)
os.environ['TRANSFORMERS_OFFLINE'] = '1'

import pytest
import torch
from mmengine.config import Config
from xtuner.registry import BUILDER
from xtuner.utils import PROMPT_TEMPLATE

from mg_llava.demo.tiny_assets import build_tiny_assets
from mg_llava.demo.world import generate_world
from mg_llava.templates import PROMPT_TEMPLATE_MG

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))
MG_CHILDREN = [c for c in CONFIGS if c.startswith(osp.join('configs', 'mg_llava', ''))]
CHILDREN = MG_CHILDREN + [c for c in CONFIGS if c.startswith(osp.join('configs', 'llava15', ''))]
TINY_IMAGE_SIZE, TINY_IMAGE_SIZE_AUX, TINY_NUM_IMAGE_TOKENS = 112, 256, 64

# name -> (template, PT batch, PT lr, SFT batch, SFT accumulation, SFT lr): spec §5.1 (+ the Qwen2 additions)
RECIPES = {
    'vicuna7b': (PROMPT_TEMPLATE.vicuna, 32, 1e-3, 16, 1, 2e-5),
    'vicuna13b': (PROMPT_TEMPLATE.vicuna, 16, 1e-3, 8, 1, 2e-5),
    'llama3_8b': (PROMPT_TEMPLATE.llama3_chat, 16, 1e-3, 4, 2, 1e-5),
    'phi3_mini': (PROMPT_TEMPLATE_MG.phi3_chat_mgllava, 32, 1e-3, 8, 1, 2e-5),
    'yi34b': (PROMPT_TEMPLATE.qwen_chat, 16, 2e-3, 4, 1, 2e-5),
    'qwen2_7b': (PROMPT_TEMPLATE.qwen_chat, 32, 1e-3, 16, 1, 2e-5),
    'qwen2_1_5b': (PROMPT_TEMPLATE.qwen_chat, 64, 1e-3, 32, 1, 2e-5),
}


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_configs')
    world = generate_world(root / 'world', num_train=8, num_heldout=2)
    assets = build_tiny_assets(root / 'assets', world_dir=root / 'world')
    return dict(assets=assets, world=world)


def _load(path):
    return Config.fromfile(osp.join(ROOT, path))


def _type_name(t):
    t = getattr(t, '__self__', t)  # AutoTokenizer.from_pretrained -> AutoTokenizer
    return getattr(t, '__name__', str(t))


def _tinify(node, tiny, stage):
    """Rewrite, in place and recursively, every checkpoint / data / size setting to the tiny stand-ins."""
    if isinstance(node, (list, tuple)):
        for x in node:
            _tinify(x, tiny, stage)
        return
    if not isinstance(node, dict):
        return
    a, w = tiny['assets'], tiny['world']
    if 'pretrained_model_name_or_path' in node:
        name = _type_name(node.get('type'))
        key = 'tokenizer' if 'Tokenizer' in name else 'clip_vit' if 'Vision' in name else 'llm'
        node['pretrained_model_name_or_path'] = a[key]
    if 'model_name_or_path' in node:  # ConvNeXtTower
        node['model_name_or_path'] = a['convnext']
    if 'quantization_config' in node:  # bitsandbytes 4-bit needs CUDA
        node.pop('quantization_config')
    if 'torch_dtype' in node:
        node['torch_dtype'] = torch.float32
    if 'pretrained_pth' in node:
        node['pretrained_pth'] = None
    if 'data_path' in node:
        node['data_path'] = w[stage]
    if 'image_folder' in node:
        node['image_folder'] = w['images']
    if node.get('box_json_path') is not None:
        node['box_json_path'] = w['boxes']
    if 'offline_processed_text_folder' in node:
        node['offline_processed_text_folder'] = None
    if 'num_image_tokens' in node:
        node['num_image_tokens'] = TINY_NUM_IMAGE_TOKENS
    if 'image_size' in node and 'image_size_aux' in node:  # a vision_spec
        node['image_size'] = TINY_IMAGE_SIZE
        if node['image_size_aux'] is not None:
            node['image_size_aux'] = TINY_IMAGE_SIZE_AUX
    for key in list(node.keys()):
        if key != 'type':
            _tinify(node[key], tiny, stage)


def test_configs_found():
    assert len(MG_CHILDREN) >= 16 and len(CHILDREN) >= 18, CONFIGS


@pytest.mark.parametrize('path', CHILDREN)
def test_child_repoints_every_copy(path):
    cfg = _load(path)
    llm = cfg.model.llm.pretrained_model_name_or_path
    paths = dict(model_llm=llm, model_tokenizer=cfg.model.tokenizer.pretrained_model_name_or_path,
                 dataloader_dataset_tokenizer=cfg.train_dataloader.dataset.tokenizer.pretrained_model_name_or_path,
                 train_dataset_tokenizer=cfg.train_dataset.tokenizer.pretrained_model_name_or_path,
                 tokenizer=cfg.tokenizer.pretrained_model_name_or_path, llm_name_or_path=cfg.llm_name_or_path)
    assert len(set(paths.values())) == 1, paths
    assert llm.startswith('model_zoo/'), llm
    tmpl = cfg.model.template
    assert dict(tmpl) == dict(cfg.train_dataloader.dataset.template) == dict(cfg.train_dataset.template)
    assert dict(tmpl) == dict(cfg.prompt_template)
    assert cfg.train_dataloader.dataset.vision_spec == cfg.vision_spec


@pytest.mark.parametrize('path', CONFIGS)
def test_evaluation_entries_are_complete(path):
    """Every SFT config (and every child) carries the standard suite or the demo's, each entry usable by
    tools/test.py; a broken entry is reported with its name."""
    from mg_llava.evaluation.loop import check_entry
    cfg = _load(path)
    entries = (cfg.get('evaluation') or {}).get('benchmarks', [])
    if '_sft' in osp.basename(path):
        assert entries, path
    for entry in entries:
        check_entry(dict(entry))
    names = [e.get('name', e['benchmark']) for e in entries]
    assert len(names) == len(set(names)), names  # names are output file names


@pytest.mark.parametrize('path', MG_CHILDREN)
def test_recipe(path):
    base = osp.basename(path)[:-3]  # e.g. vicuna7b_pretrain, vicuna7b_sft, vicuna7b_sft_lora
    name, stage = base.split('_pretrain')[0].split('_sft')[0], 'pretrain' if base.endswith('_pretrain') else 'sft'
    tmpl, pt_bs, pt_lr, sft_bs, sft_acc, sft_lr = RECIPES[name]
    cfg = _load(path)
    assert dict(cfg.model.template) == dict(tmpl)
    bs, acc = cfg.train_dataloader.batch_size, cfg.optim_wrapper.get('accumulative_counts', 1)
    lr = cfg.optim_wrapper.optimizer.lr
    if stage == 'pretrain':
        assert (bs, acc, lr) == (pt_bs, 1, pt_lr)
        assert cfg.model.freeze_llm and cfg.model.get('pretrained_pth') is None
        return
    assert (bs, acc) == (sft_bs, sft_acc)
    assert cfg.train_dataloader.sampler.per_device_batch_size == bs * acc
    assert cfg.model.pretrained_pth == f'work_dirs/{name}_pretrain'
    assert osp.isfile(osp.join(ROOT, 'configs', 'mg_llava', f'{name}_pretrain.py'))
    if path.endswith('_lora.py') or path.endswith('_qlora.py'):
        assert lr == 2e-4 and cfg.model.freeze_llm and cfg.model.llm_lora.r == 128
    else:
        assert lr == sft_lr and not cfg.model.freeze_llm
    if path.endswith('_qlora.py'):
        q = cfg.model.llm.quantization_config
        assert q.load_in_4bit and not q.load_in_8bit and q.bnb_4bit_quant_type == 'nf4'
        assert q.bnb_4bit_compute_dtype is torch.float16


def test_phi3_template_is_the_forks():
    t = PROMPT_TEMPLATE_MG.phi3_chat_mgllava
    assert t.INSTRUCTION == '<|user|>{input}<|end|>\n<|assistant|>\n' and t.SYSTEM == '<|system|>{system}<|end|>\n'
    assert t.INSTRUCTION != PROMPT_TEMPLATE.phi3_chat.INSTRUCTION
    assert (t.SUFFIX, t.SUFFIX_AS_EOS, t.SEP, t.STOP_WORDS) == ('<|end|>', True, '\n', ['<|end|>'])


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds_and_runs(path, tiny, monkeypatch):
    cfg = _load(path)
    stage = 'pretrain' if 'pretrain' in osp.basename(path) else 'sft'
    _tinify(cfg._cfg_dict, tiny, stage)
    mg = cfg.model.get('visual_encoder_aux') is not None

    model = BUILDER.build(cfg.model)
    dataset = BUILDER.build(cfg.train_dataloader.dataset)
    assert len(dataset) > 0 and dataset.template == model.template
    sampler = BUILDER.build(dict(cfg.train_dataloader.sampler, dataset=dataset))
    assert 0 <= next(iter(sampler)) < len(dataset)
    sample = next(dataset[i] for i in range(len(dataset)) if 'pixel_values' in dataset[i])
    assert sample['pixel_values'].shape[-1] == TINY_IMAGE_SIZE
    assert ('pixel_values_aux' in sample) == mg and ('boxes' in sample) == mg
    collate = cfg.train_dataloader.collate_fn
    batch = collate['type'](**{k: v for k, v in collate.items() if k != 'type'}, instances=[sample])

    model.train()
    loss = model(**batch, mode='loss')['loss']
    assert math.isfinite(loss.item()), loss
    loss.backward()
    assert model.projector.model[0].weight.grad is not None

    if not mg:  # LLaVA-1.5: no ConvNeXt, no fusion, no object tokens
        assert model.fuse_module is None and model.bbox_projector is None
    if cfg.model.get('llm_lora') is not None:
        from peft import PeftModel
        assert isinstance(model.llm, PeftModel)
        llm_keys = [k for k in model.state_dict() if k.startswith('llm.')]
        assert llm_keys and all('lora_' in k for k in llm_keys), llm_keys[:5]


@pytest.mark.parametrize('path', [c for c in CONFIGS if '_base_' not in c])
def test_every_config_resumes_exactly_and_enters_the_shims_first(path):
    """Issue 7: resume continues the lr schedule only with the optimizer state, RNG and data position; the
    warm-up survives short runs; xtuner's first config read (`use_varlen_attn`) installs mg_llava's shims."""
    cfg = _load(path)
    assert any(_type_name(h.type) == 'ExactResumeHook' for h in cfg.custom_hooks), path
    assert cfg.default_hooks.checkpoint.get('save_optimizer', True) is True, path
    assert [_type_name(s.type) for s in cfg.param_scheduler] == ['WarmupLR', 'CosineAfterWarmupLR'], path
    assert cfg.use_varlen_attn is False, path  # resolving it imported mg_llava.compat
