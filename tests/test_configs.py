"""Every config under configs/ parses, and builds (model + train dataset + sampler + one loss forward/backward)
once its checkpoints and data are swapped for tiny stand-ins (mg_llava.demo.tiny_assets / world).

Also one fact, one place: a backbone config is a few lines, a child that sets the LLM / template / vision spec
/ data files once changes every place that uses them, and a stray top-level setting is refused.
"""
import glob
import json
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
CONFIGS = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if osp.join('_base_', 'benchmarks') not in p)   # benchmark lists: checked through the SFT configs
MG_CHILDREN = [c for c in CONFIGS if c.startswith(osp.join('configs', 'mg_llava', ''))]
CHILDREN = MG_CHILDREN + [c for c in CONFIGS if c.startswith(osp.join('configs', 'llava15', ''))]
TINY_IMAGE_SIZE, TINY_IMAGE_SIZE_AUX, TINY_NUM_IMAGE_TOKENS = 112, 256, 64

# name -> (template, PT batch, PT lr, SFT batch, SFT accumulation, SFT lr): spec §5.1 (+ the Qwen2 additions)
RECIPES = {
    'vicuna7b': ('vicuna', 32, 1e-3, 16, 1, 2e-5),
    'vicuna13b': ('vicuna', 16, 1e-3, 8, 1, 2e-5),
    'llama3_8b': ('llama3_chat', 16, 1e-3, 4, 2, 1e-5),
    'phi3_mini': ('phi3_chat_mgllava', 32, 1e-3, 8, 1, 2e-5),
    'yi34b': ('qwen_chat', 16, 2e-3, 4, 1, 2e-5),
    'qwen2_7b': ('qwen_chat', 32, 1e-3, 16, 1, 2e-5),
    'qwen2_1_5b': ('qwen_chat', 64, 1e-3, 32, 1, 2e-5),
}


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_configs')
    world = generate_world(root / 'world', num_train=8, num_heldout=2)
    assets = build_tiny_assets(root / 'assets', world_dir=root / 'world')
    # LLaVA-MoD stages: a tiny teacher export per mode, and preference pairs from the world's answers
    from mg_llava.models import MGLLaVAModel
    teachers = {}
    for mg in (True, False):
        t = MGLLaVAModel(llm=assets['llm'], tokenizer=assets['tokenizer'], visual_encoder=assets['clip_vit'],
                         visual_encoder_aux=assets['convnext'] if mg else None, use_activation_checkpointing=False,
                         vision_spec=dict(image_size=TINY_IMAGE_SIZE, image_size_aux=TINY_IMAGE_SIZE_AUX))
        teachers[mg] = str(root / f'teacher_{"mg" if mg else "llava15"}')
        t.save_pretrained(teachers[mg], fp32=True)
    pairs = [dict(id=r['id'], image=r['image'], chosen=r['conversations'][:2],
                  rejected=[r['conversations'][0], {'from': 'gpt', 'value': 'purple'}])
             for r in json.load(open(world['sft'])) if r.get('image')]
    (root / 'pref.json').write_text(json.dumps(pairs))
    world = dict(world, preference=str(root / 'pref.json'))
    return dict(assets=assets, world=world, teachers=teachers)


def _load(path):
    return Config.fromfile(osp.join(ROOT, path))


def _type_name(t):
    t = getattr(t, '__self__', t)  # AutoTokenizer.from_pretrained -> AutoTokenizer
    return getattr(t, '__name__', str(t))


def _tinify(cfg, tiny, stage):
    """Point the model and the dataset at the tiny stand-ins (each fact is written once, so once here too)."""
    a, w = tiny['assets'], tiny['world']
    distill = 'student' in cfg.model
    m = cfg.model.student if distill else cfg.model
    mg = m.get('visual_encoder_aux') is not None
    if distill:   # LLaVA-MoD stages: the tiny teacher of the same mode, no previous stage
        cfg.model.update(teacher=tiny['teachers'][mg], pretrained_pth=None, teacher_dtype='float32')
        stage = 'preference' if 'Preference' in _type_name(cfg.model.type) else 'sft'
    m.update(llm=a['llm'], tokenizer=a['tokenizer'], visual_encoder=a['clip_vit'], llm_dtype=None,
             llm_kwargs=None,   # bitsandbytes 4-bit needs CUDA
             visual_encoder_aux=a['convnext'] if mg else None, pretrained_pth=None,
             vision_spec=dict(image_size=TINY_IMAGE_SIZE, image_size_aux=TINY_IMAGE_SIZE_AUX if mg else None))
    ds = cfg.train_dataloader.dataset
    ds.update(data_path=w[stage], image_folder=w['images'], offline_processed_text_folder=None,
              box_json_path=w['boxes'] if ds.get('box_json_path') else None)


def test_configs_found():
    assert len(MG_CHILDREN) >= 16 and len(CHILDREN) >= 18, CONFIGS


def _code_lines(path):
    lines = [ln.split('#')[0].rstrip() for ln in open(osp.join(ROOT, path))]
    return [ln for ln in lines if ln.strip()]


@pytest.mark.parametrize('path', CHILDREN)
def test_backbone_config_is_at_most_8_lines(path):
    """A new LLM backbone is a short child config: the base does everything else."""
    lines = _code_lines(path)
    assert len(lines) <= 8, (path, lines)


USER_CHILD = """
from mmengine.config import read_base
with read_base():
    from mg_llava.configs.mg_llava.vicuna7b_sft import *  # noqa: F401,F403
model.update(llm={llm!r}, tokenizer={tok!r}, template='qwen_chat', visual_encoder={vit!r},
             visual_encoder_aux={aux!r}, llm_dtype=None, pretrained_pth=None,
             vision_spec=dict(image_size=112, image_size_aux=256, max_objects=7))
train_dataloader.dataset.update(data_path={data!r}, image_folder={images!r}, box_json_path={boxes!r})
"""


def test_a_fact_set_once_in_a_child_changes_every_place_that_uses_it(tiny, tmp_path):
    from mg_llava.engine.wiring import complete_train_dataloader
    a, w = tiny['assets'], tiny['world']
    path = tmp_path / 'my_config.py'
    path.write_text(USER_CHILD.format(llm=a['llm'], tok=a['tokenizer'], vit=a['clip_vit'], aux=a['convnext'],
                                      data=w['sft'], images=w['images'], boxes=w['boxes']))
    cfg = Config.fromfile(str(path))
    dl = complete_train_dataloader(cfg, cfg.train_dataloader)
    ds = dl['dataset']
    assert ds['tokenizer']['pretrained_model_name_or_path'] == a['tokenizer']
    assert ds['template'] == 'qwen_chat' and ds['data_path'] == w['sft'] and ds['box_json_path'] == w['boxes']
    assert ds['vision_spec']['max_objects'] == 7 and ds['vision_spec']['nms_iou'] == 0.2   # merged with the base
    assert ds['num_image_tokens'] == 64                       # 112 px / patch 14, read from the ViT's config
    assert dl['sampler']['per_device_batch_size'] == 16       # batch 16 x accumulation 1
    dataset = BUILDER.build(ds)
    model = BUILDER.build(cfg.model)
    assert dict(dataset.template) == dict(model.template) == dict(PROMPT_TEMPLATE.qwen_chat)
    assert dataset.spec == model.vision_spec and dataset.num_image_tokens == model.num_image_tokens
    assert dataset.tokenizer.get_vocab() == model.tokenizer.get_vocab()


def test_a_stray_top_level_setting_is_refused_with_the_place_to_set_it(tiny, tmp_path):
    from mg_llava.engine.wiring import complete_train_dataloader
    path = tmp_path / 'old_habit.py'
    path.write_text(USER_CHILD.format(llm='x', tok='x', vit='x', aux='x', data='d.json', images='i', boxes=None)
                    + "data_path = 'mine.json'\n")
    cfg = Config.fromfile(str(path))
    with pytest.raises(ValueError, match=r"`data_path = 'mine.json'` is not read by anything; the run uses "
                                         r"train_dataloader.dataset.data_path = 'd.json'"):
        complete_train_dataloader(cfg, cfg.train_dataloader)


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
    assert cfg.model.template == tmpl
    bs, acc = cfg.train_dataloader.batch_size, cfg.optim_wrapper.get('accumulative_counts', 1)
    lr = cfg.optim_wrapper.optimizer.lr
    if stage == 'pretrain':
        assert (bs, acc, lr) == (pt_bs, 1, pt_lr)
        assert cfg.model.freeze_llm and cfg.model.get('pretrained_pth') is None
        return
    assert (bs, acc) == (sft_bs, sft_acc)
    from mg_llava.engine.wiring import complete_train_dataloader
    assert complete_train_dataloader(cfg, cfg.train_dataloader)['sampler']['per_device_batch_size'] == bs * acc
    assert cfg.model.pretrained_pth == f'work_dirs/{name}_pretrain'
    assert osp.isfile(osp.join(ROOT, 'configs', 'mg_llava', f'{name}_pretrain.py'))
    if path.endswith('_lora.py') or path.endswith('_qlora.py'):
        assert lr == 2e-4 and cfg.model.freeze_llm and cfg.model.llm_lora.r == 128
    else:
        assert lr == sft_lr and not cfg.model.freeze_llm
    if path.endswith('_qlora.py'):
        q = cfg.model.llm_kwargs.quantization_config
        assert q.load_in_4bit and not q.load_in_8bit and q.bnb_4bit_quant_type == 'nf4'
        assert q.bnb_4bit_compute_dtype == 'float16'   # BitsAndBytesConfig reads the name


def test_phi3_template_is_the_forks():
    t = PROMPT_TEMPLATE_MG.phi3_chat_mgllava
    assert t.INSTRUCTION == '<|user|>{input}<|end|>\n<|assistant|>\n' and t.SYSTEM == '<|system|>{system}<|end|>\n'
    assert t.INSTRUCTION != PROMPT_TEMPLATE.phi3_chat.INSTRUCTION
    assert (t.SUFFIX, t.SUFFIX_AS_EOS, t.SEP, t.STOP_WORDS) == ('<|end|>', True, '\n', ['<|end|>'])


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds_and_runs(path, tiny, monkeypatch):
    cfg = _load(path)
    stage = 'pretrain' if any(s in osp.basename(path) for s in ('pretrain', 'adaptor')) else 'sft'
    _tinify(cfg, tiny, stage)
    distill = 'student' in cfg.model
    mg = (cfg.model.student if distill else cfg.model).get('visual_encoder_aux') is not None
    from mg_llava.engine.wiring import complete_train_dataloader
    dataloader = complete_train_dataloader(cfg, cfg.train_dataloader)

    wrapper = BUILDER.build(cfg.model)
    model = wrapper.student if distill else wrapper   # a distillation stage trains its student
    dataset = BUILDER.build(dataloader['dataset'])
    assert len(dataset) > 0 and dataset.template == model.template
    sampler = BUILDER.build(dict(dataloader['sampler'], dataset=dataset))
    assert 0 <= next(iter(sampler)) < len(dataset)
    sample = next(dataset[i] for i in range(len(dataset)) if 'pixel_values' in dataset[i])
    assert sample['pixel_values'].shape[-1] == TINY_IMAGE_SIZE
    assert ('pixel_values_aux' in sample) == mg and ('boxes' in sample) == mg
    collate = dataloader['collate_fn']
    batch = collate['type'](**{k: v for k, v in collate.items() if k != 'type'}, instances=[sample])

    wrapper.train()
    losses = wrapper(**batch, mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)   # what mmengine's parse_losses optimises
    assert math.isfinite(loss.item()), losses
    loss.backward()
    assert model.projector.model[0].weight.grad is not None
    if distill:
        assert not any(p.requires_grad for p in wrapper.teacher.parameters())
        assert ('router_loss' in losses) == (model.config.moe is not None and wrapper.moe_loss_enable)

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
    assert _type_name(cfg.train_cfg.type) == 'TrainLoop' and cfg.train_cfg.type.__module__ == 'mg_llava.engine.loops'


@pytest.mark.parametrize('path', CONFIGS)
def test_remote_code_is_off(path):
    """Issue 8: no shipped config runs code from a model folder; `model.trust_remote_code=True` turns it on."""
    assert _load(path).model.get('trust_remote_code', False) is False
