"""MGLLaVAConfig / TrainingPolicy / losses: the model as a submodule, an MoE LLM's router loss, and the
save_pretrained -> from_pretrained round trip through real local folders."""
import json

import pytest
import torch
import torch.nn as nn
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

from mg_llava.data import mg_llava_collate_fn
from mg_llava.models import MGLLaVAConfig, MGLLaVAModel

from test_model import make_sample, tiny_model


def batch_of(*samples):
    return mg_llava_collate_fn(list(samples), return_hf_format=True)


# ---------------------------------------------------------------- the model inside another model
class Wrapper(nn.Module):
    """What a distillation wrapper looks like: the model plus parts of its own."""

    def __init__(self, student):
        super().__init__()
        self.student = student
        self.head = nn.Linear(4, 4)


@pytest.mark.parametrize('kw', [dict(freeze_llm=True), dict(freeze_llm=False)])
def test_wrapped_state_dict_holds_exactly_the_trained_parts_and_loads_back_strictly(kw):
    student = tiny_model(**kw)
    parent = Wrapper(student)
    sd = parent.state_dict()
    assert set(sd) == {f'student.{k}' for k in student.state_dict()} | {'head.weight', 'head.bias'}
    assert not any(k.startswith('student.visual_encoder.') for k in sd)   # frozen: never saved
    assert any(k.startswith('student.llm.') for k in sd) == (not kw['freeze_llm'])

    other = Wrapper(tiny_model(**kw))
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    result = other.load_state_dict(sd, strict=True)   # frozen keys are not "missing"
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    for k, v in sd.items():
        torch.testing.assert_close(other.state_dict()[k], v)
    with pytest.raises(RuntimeError, match='Missing key'):   # a trained key really missing still fails
        other.load_state_dict({k: v for k, v in sd.items() if 'projector' not in k}, strict=True)


# ---------------------------------------------------------------- MoE LLM: the router loss is kept
def tiny_moe(output_router_logits=True):
    torch.manual_seed(0)
    return Qwen2MoeForCausalLM(Qwen2MoeConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
        shared_expert_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        num_experts=4, num_experts_per_tok=2, max_position_embeddings=256, router_aux_loss_coef=0.5,
        output_router_logits=output_router_logits))


def test_moe_router_loss_equals_hf_own_loss():
    model = tiny_model(llm=tiny_moe(), freeze_llm=False).train()
    batch = batch_of(make_sample(3, 4, n_obj=2, seed=1), make_sample(2, 5, n_obj=1, seed=2))
    losses = model(batch, mode='loss')
    assert set(losses) == {'loss', 'router_loss'} and losses['router_loss'] > 0
    ours = losses['loss'] + losses['router_loss']            # what mmengine's parse_losses sums
    hf = model.llm(inputs_embeds=model.embed_inputs(batch), attention_mask=batch['attention_mask'],
                   labels=batch['labels'], use_cache=False).loss   # HF: CE + coef * load balancing
    torch.testing.assert_close(ours, hf)
    assert not torch.allclose(losses['loss'], hf)            # the auxiliary term is really there
    ours.backward()
    router = model.llm.model.layers[0].mlp.gate.weight
    assert router.grad is not None and router.grad.abs().sum() > 0


def test_moe_without_router_logits_has_only_the_ce_loss():
    model = tiny_model(llm=tiny_moe(output_router_logits=False), freeze_llm=False).train()
    batch = batch_of(make_sample(3, 4, n_obj=2, seed=1))
    losses = model(batch, mode='loss')
    hf = model.llm(inputs_embeds=model.embed_inputs(batch), attention_mask=batch['attention_mask'],
                   labels=batch['labels'], use_cache=False).loss
    assert set(losses) == {'loss'}
    torch.testing.assert_close(losses['loss'], hf)


# ---------------------------------------------------------------- config object and folders
def test_forward_modes_other_than_loss_and_tensor_are_refused():
    model = tiny_model()
    batch = batch_of(make_sample(2, 3, n_obj=1, seed=4))
    assert model(batch, mode='tensor').shape[:2] == batch['input_ids'].shape
    with pytest.raises(ValueError, match="mode must be 'loss' or 'tensor', got 'predict'.*mg_llava.inference"):
        model(batch, mode='predict')


def test_config_fields_and_policy_are_split_and_validated():
    with pytest.raises(ValueError, match="object_pooling must be 'exact' or 'fast'"):
        MGLLaVAConfig(llm='x', visual_encoder='y', object_pooling='slow')
    cfg, rest = MGLLaVAConfig.split_kwargs(dict(llm='x', visual_encoder='y', template='vicuna', freeze_llm=True))
    assert cfg == dict(llm='x', visual_encoder='y', template='vicuna') and rest == dict(freeze_llm=True)
    assert MGLLaVAConfig(llm='x', visual_encoder='y').use_fusion is False   # no high-res tower: LLaVA-1.5
    with pytest.raises(ValueError, match='unknown prompt template'):
        MGLLaVAConfig(llm='x', visual_encoder='y', template='nope').prompt_template


def path_model(assets, **kw):
    """A model whose components come from local folders (the from_pretrained(local_dir) code path)."""
    torch.manual_seed(0)
    kw.setdefault('use_activation_checkpointing', False)
    return MGLLaVAModel(llm=assets['llm'], tokenizer=assets['tokenizer'], visual_encoder=assets['clip_vit'],
                        **kw)


def world_batch(model, tiny_world):
    from PIL import Image

    from mg_llava.inference.prompt import build_prompt_sample
    rec = json.load(open(tiny_world['sft']))[0]
    image = Image.open(f"{tiny_world['images']}/{rec['image']}")
    sample = build_prompt_sample('What colour is the shape?', image, model.tokenizer, model.template,
                                 model.vision_spec, model.num_image_tokens)
    ids = sample['input_ids'] + model.tokenizer.encode(' red', add_special_tokens=False)
    sample['input_ids'], sample['labels'] = ids, [-100] * len(sample['input_ids']) + ids[len(sample['input_ids']):]
    sample['labels'] = [-100] * (len(ids) - 1) + ids[-1:]
    return batch_of(sample)


@pytest.mark.parametrize('kind', ['mg', 'llava15', 'lora'])
def test_save_pretrained_from_pretrained_round_trip_gives_the_same_loss(kind, tiny_assets, tiny_world, tmp_path):
    from peft import LoraConfig
    kw = dict(freeze_llm=False)
    if kind != 'llava15':
        kw.update(visual_encoder_aux=tiny_assets['convnext'], object_box_position=True,
                  vision_spec=dict(image_size=112, image_size_aux=256))
    if kind == 'lora':
        kw.update(freeze_llm=True, llm_lora=dict(type=LoraConfig, r=4, lora_alpha=8, task_type='CAUSAL_LM'))
    model = path_model(tiny_assets, **kw).eval()
    with torch.no_grad():   # make every trained part differ from a fresh build
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    batch = world_batch(model, tiny_world)
    with torch.no_grad():
        want = model(batch, mode='loss')['loss']
    model.save_pretrained(tmp_path / 'out', fp32=True)
    meta = json.loads((tmp_path / 'out' / 'mg_llava_config.json').read_text())
    assert meta['version'] == 2 and meta['config']['template'] == 'vicuna'
    assert meta['config']['vision_spec']['image_size'] == 112
    back = MGLLaVAModel.from_pretrained(str(tmp_path / 'out'))
    assert back.config.use_fusion == (kind != 'llava15') and back.vision_spec == model.vision_spec
    with torch.no_grad():
        got = back(world_batch(back, tiny_world), mode='loss')['loss']
    torch.testing.assert_close(got, want)


def test_from_pretrained_refuses_a_folder_of_another_format(tmp_path):
    (tmp_path / 'mg_llava_config.json').write_text(json.dumps({'format': 'mg_llava', 'version': 1}))
    with pytest.raises(ValueError, match='re-export it'):
        MGLLaVAModel.from_pretrained(str(tmp_path))


def test_to_hf_save_format_huggingface_writes_a_plain_transformers_llava(tiny_assets, tmp_path):
    """`xtuner convert pth_to_hf ... --save-format huggingface` goes through `to_hf`: a LLaVA-1.5-mode model
    becomes a folder plain transformers loads (logit parity: tests/test_export_llava_hf.py); an MG model is
    refused and leaves no folder behind."""
    from transformers import LlavaForConditionalGeneration
    model = path_model(tiny_assets, freeze_llm=False).eval()
    model.to_hf(cfg=None, save_dir=str(tmp_path / 'hf'), fp32=True, save_format='huggingface')
    hf = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / 'hf'))
    assert hf.config.vision_feature_layer == model.config.visual_select_layer
    mg = path_model(tiny_assets, visual_encoder_aux=tiny_assets['convnext'],
                    vision_spec=dict(image_size=112, image_size_aux=256))
    (tmp_path / 'mg').mkdir()   # pth_to_hf makes the folder before calling to_hf
    with pytest.raises(ValueError, match="save_format='huggingface'"):
        mg.to_hf(cfg=None, save_dir=str(tmp_path / 'mg'), save_format='huggingface')
    assert not (tmp_path / 'mg').exists()
    with pytest.raises(ValueError, match='save_format must be one of'):
        mg.to_hf(cfg=None, save_dir=str(tmp_path / 'x'), save_format='onnx')
