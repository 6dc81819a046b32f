"""Export a LLaVA-1.5-mode MGLLaVAModel as a transformers-native `LlavaForConditionalGeneration` folder.

`save_llava_hf(model, save_dir)` writes what plain `transformers` (4.48) loads with no mg_llava code:

    config.json                 LlavaConfig: vision_config = the ViT's config, text_config = the LLM's,
                                vision_feature_layer = visual_select_layer, 'default' strategy for CLIP (drops
                                CLS; 'full' for SigLIP), projector_hidden_act 'gelu', image_token_index,
                                image_seq_length = num_image_tokens
    model*.safetensors          vision_tower.vision_model.*, multi_modal_projector.linear_{1,2}.*,
                                language_model.model.*, language_model.lm_head.*  (fp16 unless fp32=True)
    generation_config.json      greedy, eos = EOS + the template's one-token STOP_WORDS, pad (as MGLLaVAModel.generate)
    tokenizer files             the model's tokenizer + an added special `<image>` token (id = image_token_index),
                                padding_side='left' (batched generation)
    preprocessor_config.json    CLIPImageProcessor = the VisionSpec's resize / centre crop / mean / std
    processor_config.json, chat_template.json   LlavaProcessor (patch size, strategy) + the prompt template as
                                a Jinja chat template

    LlavaForConditionalGeneration.from_pretrained(save_dir); AutoProcessor.from_pretrained(save_dir)

Weights map one to one (Llava's projector is Linear-GELU-Linear like MLPProjector depth 2; its vision tower is
the same HF CLIP/SigLIP class; its language model is the same AutoModelForCausalLM class), so for the same ids
and pixel values the folder gives the project's logits, plus the columns of the added vocabulary rows (the
<image> row, and padding rows up to a multiple of 64 as llava-hf does, when the LLM had no spare row).

What the folder cannot express (the project's own preprocessing/tokenisation differs there):
* pad-to-square: `VisionSpec.pad_to_square` (xtuner expand2square on the mean colour) has no CLIPImageProcessor
  option in transformers 4.48 (no LlavaImageProcessor yet). Square images give bit-identical pixel values; pad
  non-square images yourself (centre them on a max(W, H) square of colour `tuple(int(m * 255) for m in mean)`)
  before the processor, or they are centre-cropped instead of padded.
* tokenisation: xtuner encodes the prompt in pieces (text before `<image>`, after it, each answer, SEP) while a
  processor tokenises the rendered chat string at once (split only at special tokens such as `<image>`). The ids
  agree for word-level tokenizers (tested) and usually for byte-level BPE; a BPE merge across a piece boundary or
  a SentencePiece prefix space on the text after `<image>` gives the model slightly different input.
* the image processor is the slow CLIPImageProcessor (bit-identical to mg_llava's preprocessing on square images);
  `AutoProcessor.from_pretrained(..., use_fast=True)` would resize with torchvision and differ slightly.
* multi-token STOP_WORDS: generation_config only holds token ids (stop_strings would make every `generate` call
  require `tokenizer=`); such words must be cut from the decoded text.
* MG-LLaVA itself: the ConvNeXt tower, Conv-Gate fusion and object tokens have no Llava counterpart (refused).
"""
import copy
import json
import string

import torch
import torch.nn as nn

from .folder_io import write_atomically

IMAGE_TOKEN = '<image>'
VISION_TOWERS = {  # project ViT class -> (Llava vision_feature_select_strategy, extra non-image tokens)
    'CLIPVisionModel': ('default', 1),    # CLS first: 'default' drops it, as low_res_features does
    'SiglipVisionModel': ('full', 0),     # no CLS: every token is an image token
}
WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
                'pytorch_model.bin.index.json')


# ------------------------------------------------------------------------------------------------- checks
def _select_layer(model):
    return int(model.config.visual_select_layer)


def _is_peft(module):
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a project dependency
        PeftModel = ()
    return isinstance(module, PeftModel) or any('lora_' in n for n, _ in module.named_parameters())


def _resolve_spec(model, vision_spec):
    from mg_llava.data.preprocess import VisionSpec
    spec = vision_spec if vision_spec is not None else getattr(model, 'vision_spec', None)
    if spec is None:
        return VisionSpec(image_size=model.visual_encoder.config.image_size, image_size_aux=None)
    if isinstance(spec, dict):
        spec = VisionSpec(**spec)
    return spec


def _refusals(model, spec):
    """Why this model cannot become a LlavaForConditionalGeneration (empty list: it can)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    why = []
    if model.visual_encoder_aux is not None or model.fuse_module is not None or model.bbox_projector is not None:
        why.append('it has MG-LLaVA branches (high-res ConvNeXt tower / Conv-Gate fusion / object tokens), which '
                   "Llava cannot express: only a LLaVA-1.5-mode model (visual_encoder_aux=None) exports to "
                   "save_format='huggingface'; use the default 'xtuner' format")
    for name in ('llm', 'visual_encoder'):
        if _is_peft(getattr(model, name)):
            why.append(f'its {name} carries unmerged LoRA adapters: merge them first '
                       f'(model.{name} = model.{name}.merge_and_unload())')
    llm, vit = model.llm, model.visual_encoder
    if not _is_peft(llm):
        if getattr(llm, 'is_loaded_in_4bit', False) or getattr(llm, 'is_loaded_in_8bit', False):
            why.append('its LLM is quantised (QLoRA): load the LLM unquantised, merge, then export')
        model_type = getattr(llm.config, 'model_type', None)
        native = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
        if native != type(llm).__name__ or not type(llm).__module__.startswith('transformers.'):
            why.append(f'its LLM ({type(llm).__module__}.{type(llm).__name__}, model_type {model_type!r}) is not the '
                       'transformers-native causal LM AutoModelForCausalLM builds for its config, so Llava could not '
                       'rebuild it without remote code')
    if not _is_peft(vit) and (type(vit).__name__ not in VISION_TOWERS
                              or not type(vit).__module__.startswith('transformers.')):
        why.append(f'its vision tower is a {type(vit).__name__}; Llava takes {" / ".join(VISION_TOWERS)}')
    projector = getattr(model.projector, 'model', None)
    if not (isinstance(projector, nn.Sequential) and len(projector) == 3 and isinstance(projector[0], nn.Linear)
            and isinstance(projector[1], nn.GELU) and getattr(projector[1], 'approximate', 'none') == 'none'
            and isinstance(projector[2], nn.Linear) and projector[0].bias is not None
            and projector[2].bias is not None):
        why.append('its projector is not Linear-GELU-Linear (projector_depth=2), the only Llava projector')
    if model.tokenizer is None:
        why.append('it has no tokenizer (the folder needs one, with the <image> token added)')
    if spec.image_size_aux is not None:
        why.append(f'its VisionSpec has image_size_aux={spec.image_size_aux} (MG-LLaVA preprocessing: the low-res '
                   'view is downsampled from the high-res one); LLaVA-1.5 mode needs image_size_aux=None')
    vit_size = getattr(vit.config, 'image_size', None)
    if spec.image_size != vit_size:
        why.append(f'its VisionSpec image_size={spec.image_size} differs from the ViT image_size={vit_size}')
    metas = [n for n, p in model.named_parameters() if p.is_meta]
    if metas:
        why.append(f'{len(metas)} parameters were never loaded (meta tensors, e.g. {metas[:3]})')
    return why


# ------------------------------------------------------------------------------------------------- pieces
def _new_rows(weight, n, generator):
    """`n` new rows for `weight` (rows, dim), drawn as the llava-hf conversion script
    (transformers/models/llava/convert_llava_weights_to_hf.py) draws the <image>/<pad> rows: from
    N(mean, 1e-5 * covariance) of the existing rows; only the mean when that covariance is singular (fewer rows
    than dimensions), as transformers' resize_token_embeddings(mean_resizing=True) falls back to."""
    w = weight.detach().float()
    mu = w.mean(0)
    centred = w - mu
    sigma = 1e-5 * (centred.T @ centred) / w.shape[0]
    chol, info = torch.linalg.cholesky_ex(sigma)
    if int(info) != 0:
        return mu.expand(n, -1).clone()
    z = torch.randn(n, w.shape[1], generator=generator).to(w.device)
    return mu + z @ chol.T


def _tokenizer_with_image_token(tokenizer):
    from transformers import AddedToken
    tok = copy.deepcopy(tokenizer)
    tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tok.pad_token is None:  # MGLLaVAModel.generate pads with EOS then; no new vocabulary row for a <pad>
        tok.pad_token = tok.eos_token
    tok.padding_side = tok.init_kwargs['padding_side'] = 'left'   # init_kwargs: what tokenizer_config.json saves
    if 'token_type_ids' in tok.model_input_names:  # a decoder LM takes none: processor(...) output goes to generate
        tok.model_input_names = tok.init_kwargs['model_input_names'] = [
            n for n in tok.model_input_names if n != 'token_type_ids']
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    if tok.encode(IMAGE_TOKEN, add_special_tokens=False) != [image_id]:
        raise ValueError(f'the tokenizer does not map {IMAGE_TOKEN!r} to one token after adding it')
    return tok, image_id


def _resized_vocab(llm, n_rows, pad_to_multiple_of, seed=0):
    """{state-dict key: tensor} replacing the LLM's input/output embedding matrices (and an output bias) by copies
    with `n_rows` rows (rounded up to `pad_to_multiple_of`); {} when they are large enough already."""
    emb, head = llm.get_input_embeddings(), llm.get_output_embeddings()
    old = emb.weight.shape[0]
    if n_rows <= old:
        return {}, old
    if pad_to_multiple_of:
        n_rows = -(-n_rows // pad_to_multiple_of) * pad_to_multiple_of
    g = torch.Generator().manual_seed(seed)
    # The added rows are initialised like llava-hf's conversion (see _new_rows). They are the ONLY difference from
    # the project model: the embedding rows are never read (the <image> slots are overwritten by the projected
    # image features), so logits over the original vocabulary are unchanged; only the added rows' logit columns are
    # new. The output rows use the output matrix's own statistics (the conversion samples them from the input
    # embeddings' distribution), so a new logit is close to the mean logit and is not generated in practice.
    new = {}
    grown_emb = torch.cat([emb.weight.detach(), _new_rows(emb.weight, n_rows - old, g).to(emb.weight.dtype)])
    tied = head is not None and head.weight is emb.weight
    grown_head = grown_emb if tied else None
    if head is not None and not tied:
        grown_head = torch.cat([head.weight.detach(), _new_rows(head.weight, n_rows - old, g).to(head.weight.dtype)])
    bias = getattr(head, 'bias', None) if head is not None else None
    for name, p in llm.named_parameters(remove_duplicate=False):
        if p is emb.weight:
            new[name] = grown_emb
        elif head is not None and p is head.weight:
            new[name] = grown_head
        elif bias is not None and p is bias:
            new[name] = torch.cat([bias.detach(), bias.detach().float().mean().expand(n_rows - old).to(bias.dtype)])
    return new, n_rows


def _jinja_format(fmt, fields):
    """A python format string (xtuner template part) -> Jinja source, each {name} -> fields[name] (Jinja source).
    None when it uses other fields or format specs (then no chat template is written)."""
    out = []
    for literal, name, spec, conv in string.Formatter().parse(fmt or ''):
        if literal:
            out.append('{{ ' + json.dumps(literal, ensure_ascii=False) + ' }}')
        if name is not None:
            if name not in fields or spec or conv:
                return None
            out.append(fields[name])
    return ''.join(out)


def chat_template_from(template):
    """xtuner prompt template (dict / name) -> Jinja chat template rendering what xtuner's template_map_fn +
    encode_fn (and mg_llava's prompt encoder, `encode_turns`) build:
        [SYSTEM(system) before round 1] INSTRUCTION(input, round) answer SUFFIX [EOS] SEP [BOS] INSTRUCTION(...) ...
    with the image as "<image>\\n" + stripped text (llava_map_fn). The first BOS is the tokenizer's
    (add_special_tokens=True). None when the template cannot be expressed."""
    from mg_llava.templates import resolve_template
    t = resolve_template(template)
    if t is None:
        return None
    user_input = ("{%- if ns.n_img > 0 -%}{{ '" + IMAGE_TOKEN + "\\n' }}{{ ns.text | trim }}"
                  "{%- else -%}{{ ns.text }}{%- endif -%}")
    instruction = _jinja_format(t.get('INSTRUCTION'), {'input': user_input, 'round': '{{ ns.round }}'})
    system = _jinja_format(t.get('SYSTEM') or '', {'system': '{{ ns.system }}'})
    suffix = _jinja_format(t.get('SUFFIX') or '', {})
    sep = _jinja_format(t.get('SEP') or '', {})
    if None in (instruction, system, suffix, sep):
        return None
    need_eos = not t.get('SUFFIX_AS_EOS', False)
    return (
        "{%- set ns = namespace(system='', round=0, needs_bos=false, text='', n_img=0) -%}"
        "{%- for message in messages -%}"
        "{%- if message['content'] is string -%}"
        "{%- set ns.text = message['content'] -%}{%- set ns.n_img = 0 -%}"
        "{%- else -%}"
        "{%- set ns.text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text')"
        " | join('') -%}"
        "{%- set ns.n_img = message['content'] | selectattr('type', 'equalto', 'image') | list | length -%}"
        "{%- endif -%}"
        "{%- if message['role'] == 'system' -%}{%- set ns.system = ns.text -%}"
        "{%- elif message['role'] == 'user' -%}"
        "{%- set ns.round = ns.round + 1 -%}"
        "{%- if ns.needs_bos -%}{{ bos_token }}{%- endif -%}"
        "{%- if ns.round == 1 and ns.system -%}" + system + "{%- endif -%}"
        + instruction +
        "{%- elif message['role'] == 'assistant' -%}"
        "{{ ns.text }}" + suffix + ("{{ eos_token }}" if need_eos else '') + sep +
        "{%- set ns.needs_bos = " + ('true' if need_eos else 'false') + " -%}"
        "{%- endif -%}"
        "{%- endfor -%}")


def _generation_config(tokenizer, template):
    """What MGLLaVAModel.generate does: greedy, stop at EOS or a one-token STOP_WORD, pad with pad (or EOS)."""
    from transformers import GenerationConfig

    from mg_llava.templates import resolve_template
    stop = [tokenizer.eos_token_id]
    for word in (resolve_template(template) or {}).get('STOP_WORDS', []) or []:
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) == 1 and ids[0] not in stop:
            stop.append(ids[0])
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=stop if len(stop) > 1 else stop[0],
                            pad_token_id=tokenizer.pad_token_id, do_sample=False, num_beams=1)


def _image_processor(spec):
    from transformers import CLIPImageProcessor
    from transformers.image_utils import PILImageResampling
    s = spec.image_size
    # = preprocess._resize_and_crop + _normalize: bicubic shortest-edge resize, centre crop, /255, mean/std.
    # Not expressible: spec.pad_to_square (see the module docstring).
    return CLIPImageProcessor(do_resize=True, size={'shortest_edge': s}, resample=PILImageResampling.BICUBIC,
                              do_center_crop=True, crop_size={'height': s, 'width': s}, do_rescale=True,
                              rescale_factor=1 / 255, do_normalize=True, image_mean=list(spec.mean),
                              image_std=list(spec.std), do_convert_rgb=True)


# ------------------------------------------------------------------------------------------------- export
def save_llava_hf(model, save_dir, fp32=False, save_pretrained_kwargs=None, vision_spec=None, pad_to_multiple_of=64):
    """Write `model` (LLaVA-1.5 mode, LoRA merged) to `save_dir` as a transformers LlavaForConditionalGeneration
    folder with its LlavaProcessor (see the module docstring). The model itself is not modified.

    fp32: weights in float32 (default float16, like the xtuner-format export). save_pretrained_kwargs: passed to
    `save_pretrained` (e.g. max_shard_size; safetensors always). vision_spec: VisionSpec or dict (default
    `model.vision_spec`, else VisionSpec(image_size=<ViT image_size>, image_size_aux=None)). pad_to_multiple_of:
    the grown vocabulary is rounded up to it (64, as llava-hf) when the <image> token needs a new row.
    Raises ValueError (before writing anything) when the model cannot be expressed. Returns the LlavaConfig.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    spec = _resolve_spec(model, vision_spec)
    why = _refusals(model, spec)
    if why:
        raise ValueError("cannot export as a transformers Llava folder (save_format='huggingface'): "
                         + '; '.join(why))
    llm, vit = model.llm, model.visual_encoder
    strategy, extra_tokens = VISION_TOWERS[type(vit).__name__]
    dtype = torch.float32 if fp32 else torch.float16
    dtype_name = str(dtype).split('.')[-1]

    tokenizer, image_id = _tokenizer_with_image_token(model.tokenizer)
    grown, n_rows = _resized_vocab(llm, max(len(tokenizer), image_id + 1), pad_to_multiple_of)
    text_config, vision_config = copy.deepcopy(llm.config), copy.deepcopy(vit.config)
    text_config.vocab_size, text_config.use_cache, text_config.torch_dtype = n_rows, True, dtype_name
    vision_config.torch_dtype = dtype_name
    config = LlavaConfig(vision_config=vision_config, text_config=text_config, image_token_index=image_id,
                         projector_hidden_act='gelu', vision_feature_select_strategy=strategy,
                         vision_feature_layer=_select_layer(model), image_seq_length=model.num_image_tokens,
                         multimodal_projector_bias=True, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=getattr(text_config, 'tie_word_embeddings', False),
                         torch_dtype=dtype_name)

    lm_state = {k: grown.get(k, v) for k, v in llm.state_dict().items()}
    proj = model.projector.model   # MLPProjector: model.0 Linear, model.1 GELU, model.2 Linear
    state = {**{f'vision_tower.{k}': v for k, v in vit.state_dict().items()},
             **{f'language_model.{k}': v for k, v in lm_state.items()},
             **{f'multi_modal_projector.linear_{i}.{w}': getattr(proj[j], w)
                for i, j in ((1, 0), (2, 2)) for w in ('weight', 'bias')}}
    state = {k: (v.detach().to('cpu', dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in state.items()}
    with torch.device('meta'):  # no second copy of the weights: the tensors above are assigned into it
        hf = LlavaForConditionalGeneration(config)
    hf.load_state_dict(state, strict=True, assign=True)
    hf.tie_weights()
    hf.generation_config = _generation_config(tokenizer, model.template)

    vit_cfg = vit.config
    chat_template = chat_template_from(model.template)
    tokenizer.chat_template = chat_template
    processor = LlavaProcessor(image_processor=_image_processor(spec), tokenizer=tokenizer,
                               patch_size=vit_cfg.patch_size, vision_feature_select_strategy=strategy,
                               chat_template=chat_template, image_token=IMAGE_TOKEN,
                               num_additional_image_tokens=extra_tokens)

    kw = dict(save_pretrained_kwargs or {})
    kw['safe_serialization'] = True

    def write(tmp):
        hf.save_pretrained(tmp, **kw)
        processor.save_pretrained(tmp)
    # weight files of an earlier export there are removed first (another shard count would leave stale shards)
    write_atomically(write, save_dir, stale=lambda name: name in WEIGHT_FILES or (
        name.startswith('model-') and name.endswith('.safetensors')))
    return config

