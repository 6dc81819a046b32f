"""save_llava_hf: a LLaVA-1.5-mode MGLLaVAModel as a transformers-native LlavaForConditionalGeneration folder.

The folder is loaded with plain transformers only (LlavaForConditionalGeneration / AutoProcessor /
AutoTokenizer.from_pretrained) and compared with the project model on the project's own inputs
(`build_prompt_sample` + `mg_llava_collate_fn` + `forward(mode='tensor')`).
"""
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

SELECT_LAYER = -3   # not the default -2: the config must carry it
QUESTIONS = ['What color is the circle?', 'Is the square left of the circle? Answer yes or no.']


def build_model(assets, **kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel
    from xtuner.utils import PROMPT_TEMPLATE

    from mg_llava.models import MGLLaVAModel
    torch.manual_seed(0)
    args = dict(
        llm=dict(type=AutoModelForCausalLM.from_pretrained, pretrained_model_name_or_path=assets['llm']),
        visual_encoder=dict(type=CLIPVisionModel.from_pretrained, pretrained_model_name_or_path=assets['clip_vit']),
        tokenizer=dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=assets['tokenizer']),
        template=PROMPT_TEMPLATE.vicuna, visual_encoder_aux=None, visual_select_layer=SELECT_LAYER,
        use_activation_checkpointing=False)
    args.update(kw)
    model = MGLLaVAModel(**args)
    for p in model.llm.parameters():   # std 0.1: logits depend on image and prompt (as build_random_model)
        if p.dim() == 2:
            torch.nn.init.normal_(p, 0.0, 0.1)
    for p in model.projector.parameters():
        torch.nn.init.normal_(p, 0.0, 0.1)
    return model.eval()


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    """tokenizer/, llm/ and clip_vit/ folders as mg_llava.demo.tiny_assets writes them (no ConvNeXt: not needed)."""
    from mg_llava.demo import tiny_assets as ta
    root = tmp_path_factory.mktemp('llava_hf_assets')
    tokenizer = ta.build_tokenizer(ta.vocabulary(vocab_words=QUESTIONS))
    tokenizer.save_pretrained(root / 'tokenizer')
    torch.manual_seed(0)
    ta.build_llm(tokenizer, llm_hidden=64, llm_layers=2, llm_intermediate=128).save_pretrained(root / 'llm')
    ta.build_clip(image_size=56)[0].save_pretrained(root / 'clip_vit')   # 4x4 = 16 image tokens, 4 layers
    from transformers import SiglipVisionConfig, SiglipVisionModel
    SiglipVisionModel(SiglipVisionConfig(image_size=56, patch_size=14, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=4, num_attention_heads=4)).save_pretrained(root / 'siglip')
    return {k: str(root / k) for k in ('tokenizer', 'llm', 'clip_vit', 'siglip')}


@pytest.fixture(scope='module')
def model(assets):
    return build_model(assets)


@pytest.fixture(scope='module')
def spec(model):
    from mg_llava.data import VisionSpec
    return VisionSpec(image_size=model.visual_encoder.config.image_size, image_size_aux=None)


@pytest.fixture(scope='module')
def export(tmp_path_factory, model, spec):
    from mg_llava.models.export_llava_hf import save_llava_hf
    out = tmp_path_factory.mktemp('llava_hf') / 'llava'
    vocab_before = model.llm.get_input_embeddings().weight.clone()
    save_llava_hf(model, str(out), fp32=True, vision_spec=spec)
    assert torch.equal(model.llm.get_input_embeddings().weight, vocab_before)   # the model is not modified
    return str(out)


def images():
    g = np.random.default_rng(0)
    return [Image.fromarray(g.integers(0, 256, (s, s, 3), dtype=np.uint8)) for s in (80, 64)]


def to_hf_ids(input_ids, image_id):
    from xtuner.utils import IMAGE_TOKEN_INDEX
    return input_ids.masked_fill(input_ids == IMAGE_TOKEN_INDEX, image_id)


def test_config_and_files(export, model):
    cfg = json.load(open(f'{export}/config.json'))
    assert 'auto_map' not in cfg and cfg['architectures'] == ['LlavaForConditionalGeneration']
    assert cfg['vision_feature_layer'] == SELECT_LAYER and cfg['vision_feature_select_strategy'] == 'default'
    assert cfg['image_seq_length'] == model.num_image_tokens == 16 and cfg['projector_hidden_act'] == 'gelu'
    assert cfg['vision_config']['model_type'] == 'clip_vision_model' and cfg['text_config']['model_type'] == 'llama'
    n_vocab = len(model.tokenizer)
    assert cfg['image_token_index'] == n_vocab and cfg['text_config']['vocab_size'] == -(-(n_vocab + 1) // 64) * 64
    from safetensors import safe_open
    with safe_open(f'{export}/model.safetensors', 'pt') as f:
        keys = set(f.keys())
    assert {'multi_modal_projector.linear_1.weight', 'multi_modal_projector.linear_2.bias',
            'language_model.lm_head.weight', 'language_model.model.embed_tokens.weight',
            'vision_tower.vision_model.embeddings.patch_embedding.weight'} <= keys
    proc = json.load(open(f'{export}/processor_config.json'))
    assert proc['patch_size'] == 14 and proc['vision_feature_select_strategy'] == 'default'


def test_logits_match_the_project_model(export, model, spec):
    from transformers import LlavaForConditionalGeneration

    from mg_llava.data import mg_llava_collate_fn
    from mg_llava.inference.prompt import build_prompt_sample
    hf = LlavaForConditionalGeneration.from_pretrained(export, torch_dtype=torch.float32).eval()
    samples = [build_prompt_sample(q, img, model.tokenizer, model.template, spec, model.num_image_tokens)
               for q, img in zip(QUESTIONS, images())]
    data = mg_llava_collate_fn(samples, pad_index=model.tokenizer.pad_token_id, return_hf_format=True)
    with torch.no_grad():
        want = model(data, mode='tensor')
        got = hf(input_ids=to_hf_ids(data['input_ids'], hf.config.image_token_index),
                 attention_mask=data['attention_mask'].long(), pixel_values=data['pixel_values']).logits
    mask = data['attention_mask']
    n_vocab = model.llm.get_output_embeddings().weight.shape[0]
    assert got.shape[-1] > n_vocab
    torch.testing.assert_close(got[mask][:, :n_vocab], want[mask], rtol=1e-4, atol=1e-4)
    assert (want[0, mask[0]] - want[1, mask[0]]).abs().max() > 1e-2   # the two samples really differ


def test_siglip_tower_exports_with_the_full_strategy(tmp_path, assets, spec):
    """SigLIP has no CLS token: 'full' strategy, no extra token in the processor's <image> expansion."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration, SiglipVisionModel

    from mg_llava.data import mg_llava_collate_fn
    from mg_llava.inference.prompt import build_prompt_sample
    from mg_llava.models.export_llava_hf import save_llava_hf
    model = build_model(assets, visual_encoder=dict(type=SiglipVisionModel.from_pretrained,
                                                    pretrained_model_name_or_path=assets['siglip']))
    save_llava_hf(model, str(tmp_path / 'siglip'), fp32=True, vision_spec=spec)
    hf = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / 'siglip')).eval()
    processor = AutoProcessor.from_pretrained(str(tmp_path / 'siglip'))
    assert hf.config.vision_feature_select_strategy == 'full'
    assert hf.config.vision_config.model_type == 'siglip_vision_model'
    img = images()[0]
    sample = build_prompt_sample(QUESTIONS[0], img, model.tokenizer, model.template, spec, model.num_image_tokens)
    prompt = processor.apply_chat_template([{'role': 'user', 'content': [{'type': 'image'},
                                                                         {'type': 'text', 'text': QUESTIONS[0]}]}])
    inputs = processor(images=img, text=prompt, return_tensors='pt')
    assert inputs['input_ids'][0].tolist() == to_hf_ids(torch.tensor(sample['input_ids']),
                                                         hf.config.image_token_index).tolist()
    data = mg_llava_collate_fn([sample], return_hf_format=True)
    with torch.no_grad():
        want = model(data, mode='tensor')
        got = hf(**inputs).logits
    torch.testing.assert_close(got[..., :want.shape[-1]], want, rtol=1e-4, atol=1e-4)


def test_processor_reproduces_the_project_inputs(export, model, spec):
    from transformers import AutoProcessor

    from mg_llava.data import preprocess_image
    from mg_llava.inference.prompt import build_prompt_sample
    processor = AutoProcessor.from_pretrained(export)
    assert type(processor).__name__ == 'LlavaProcessor'
    image_id = processor.tokenizer.convert_tokens_to_ids('<image>')
    img = images()[0]
    system = 'Answer the question using a single word or phrase.'
    messages = [{'role': 'system', 'content': system},
                {'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': QUESTIONS[0]}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=img, text=prompt, return_tensors='pt')
    sample = build_prompt_sample(QUESTIONS[0], img, model.tokenizer, model.template, spec, model.num_image_tokens,
                                 system=system)
    assert inputs['input_ids'][0].tolist() == to_hf_ids(torch.tensor(sample['input_ids']), image_id).tolist()
    assert torch.equal(inputs['pixel_values'][0], sample['pixel_values'])   # square image: bit-identical
    # a non-square image: the processor centre-crops (equal to the project with pad_to_square=False)
    wide = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 90, 3), dtype=np.uint8))
    no_pad = dataclasses.replace(spec, pad_to_square=False)
    assert torch.equal(processor(images=wide, text='<image>', return_tensors='pt')['pixel_values'][0],
                       preprocess_image(wide, no_pad)['pixel_values'])


def test_greedy_generation_matches(export, model, spec):
    """hf.generate(**processor(...)) with the exported generation_config answers what the project's engine does."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from mg_llava.inference.generation import generate
    from mg_llava.inference.prompt import build_prompt_sample, collate_prompts
    hf = LlavaForConditionalGeneration.from_pretrained(export, torch_dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(export)
    assert processor.tokenizer.padding_side == 'left'
    imgs = images()
    want = generate(model, collate_prompts([build_prompt_sample(q, img, model.tokenizer, model.template, spec,
                                                                 model.num_image_tokens)
                                            for q, img in zip(QUESTIONS, imgs)], model.tokenizer), max_new_tokens=6)
    prompts = [processor.apply_chat_template([{'role': 'user', 'content': [{'type': 'image'},
                                                                           {'type': 'text', 'text': q}]}])
               for q in QUESTIONS]
    inputs = processor(images=imgs, text=prompts, padding=True, return_tensors='pt')
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=6)
    got = processor.batch_decode(out[:, inputs['input_ids'].shape[1]:], skip_special_tokens=True)
    assert [g.strip() for g in got] == want and any(want)


@pytest.mark.parametrize('template', ['vicuna', 'llama3_chat', 'qwen_chat', 'phi3_chat_mgllava'])
def test_chat_template_matches_training_tokenisation(export, template):
    """Multi-turn: the Jinja template + the exported tokenizer give encode_conversation's (= xtuner training) ids."""
    from transformers import AutoTokenizer

    from mg_llava.inference.prompt import encode_conversation
    from mg_llava.models.export_llava_hf import chat_template_from
    from mg_llava.templates import resolve_template
    tok = AutoTokenizer.from_pretrained(export)
    image_id = tok.convert_tokens_to_ids('<image>')
    turns = [('What color is the circle?', 'red'), ('Is it left of the square?', 'yes'), ('What shape is it?', None)]
    messages = [{'role': 'system', 'content': 'Answer briefly.'},
                {'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': turns[0][0]}]}]
    for q, a in turns:
        if q != turns[0][0]:
            messages.append({'role': 'user', 'content': q})
        if a is not None:
            messages.append({'role': 'assistant', 'content': a})
    text = tok.apply_chat_template(messages, chat_template=chat_template_from(template), tokenize=False)
    ids = encode_conversation(turns, tok, resolve_template(template), system='Answer briefly.')
    want = to_hf_ids(torch.tensor(ids), image_id)
    assert tok(text)['input_ids'] == want.tolist()


def test_default_export_is_fp16(tmp_path, model):
    from safetensors import safe_open

    from mg_llava.models.export_llava_hf import save_llava_hf
    save_llava_hf(model, str(tmp_path / 'fp16'))
    with safe_open(str(tmp_path / 'fp16' / 'model.safetensors'), 'pt') as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {'F16'}
    assert json.load(open(tmp_path / 'fp16' / 'config.json'))['torch_dtype'] == 'float16'


def test_refuses_mg_and_unmerged_lora_models(tmp_path, assets):
    from peft import LoraConfig

    from mg_llava.models import ConvNeXtTower
    from mg_llava.models.export_llava_hf import save_llava_hf
    tower = dict(type=ConvNeXtTower, model_name_or_path='convnext_atto',
                 model_kwargs=dict(dims=(8, 8, 16, 16), depths=(1, 1, 1, 1)))
    mg = build_model(assets, visual_encoder_aux=tower)
    with pytest.raises(ValueError, match='MG-LLaVA branches'):
        save_llava_hf(mg, str(tmp_path / 'mg'))
    lora = build_model(assets, llm_lora=dict(type=LoraConfig, r=4, lora_alpha=8, task_type='CAUSAL_LM'))
    with pytest.raises(ValueError, match='unmerged LoRA'):
        save_llava_hf(lora, str(tmp_path / 'lora'))
    assert not any(tmp_path.iterdir())   # nothing written
