"""The one prompt encoder of evaluation, chat and the demo: text -> input_ids exactly as training builds them.

Training tokenises a conversation with xtuner (`llava_map_fn` -> `template_map_fn` -> `encode_fn`, see
`mg_llava.data.dataset.tokenize_conversation`). `encode_turns` gives the same ids for a conversation whose last
answer is still to come:

    [BOS] SYSTEM + INSTRUCTION(<image>\\n q1, round=1) | a1 + SUFFIX | [EOS] | SEP | [BOS] INSTRUCTION(q2, round=2) ...

every piece encoded on its own (no special tokens), BOS/EOS from `get_bos_eos_token_ids` and only where training
has them (a SUFFIX_AS_EOS template has neither between rounds), `<image>` -> one IMAGE_TOKEN_INDEX (-200).
Re-encoding a decoded history as one string instead (xtuner's chat) can tokenise differently from training.
`build_prompt_sample` adds the image views and boxes (the training preprocessing) and expands the -200 into
T image + n_obj object slots; `collate_prompts` left-pads a list of such samples for generation.
"""
from xtuner.dataset.utils import get_bos_eos_token_ids
from xtuner.utils import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX

from mg_llava.data.collate import mg_llava_collate_fn
from mg_llava.data.dataset import as_template, expand_visual_slots
from mg_llava.data.preprocess import VisionSpec, preprocess_boxes, preprocess_image

# A box entry with no boxes: preprocess_boxes turns it into one [0,0,0,0] box, training's "no detections".
NO_DETECTIONS = dict(boxes=[], scores=[], labels=[])


def _encode_input(text, tokenizer):
    """encode_fn's input encoding: split at <image> (-> IMAGE_TOKEN_INDEX), chunks without special tokens."""
    chunks = text.split(DEFAULT_IMAGE_TOKEN)
    ids = []
    for i, chunk in enumerate(chunks):
        ids += tokenizer.encode(chunk, add_special_tokens=False)
        if i < len(chunks) - 1:
            ids.append(IMAGE_TOKEN_INDEX)
    return ids


def encode_turns(turns, tokenizer, template=None, system=''):
    """turns: [(input, output), ..., (input, None)] (inputs as training sees them, `<image>` where the image
    goes; at most one in the whole conversation) -> input_ids (list[int]) of the prompt for the last input.
    With an output in the last turn instead of None, the full training sequence (answer, [EOS], SEP).
    `system` goes before round 1; template None: the inputs are used as they are."""
    if sum(text.count(DEFAULT_IMAGE_TOKEN) for text, _ in turns) > 1:
        raise ValueError('one <image> per prompt is supported')
    template = as_template(template)
    bos, eos = get_bos_eos_token_ids(tokenizer)  # as encode_fn (ChatGLM/Qwen differ from bos_token_id)
    ids, needs_bos = [], True
    for n, (text, answer) in enumerate(turns, 1):
        if template is not None:
            prompt = template.INSTRUCTION.format(input=text, round=n)
            if n == 1 and system:
                prompt = template.SYSTEM.format(system=system) + prompt
        else:
            prompt = text
        if needs_bos:
            ids += bos
        ids += _encode_input(prompt, tokenizer)
        if answer is None:
            if n != len(turns):
                raise ValueError('only the last turn may lack an answer')
            break
        suffix = (template.get('SUFFIX') or '') if template is not None else ''
        ids += tokenizer.encode(answer + suffix, add_special_tokens=False)
        needs_bos = not (template is not None and template.get('SUFFIX_AS_EOS', False))
        if needs_bos:
            ids += eos
        sep = (template.get('SEP') or '') if template is not None else ''
        if sep:
            ids += tokenizer.encode(sep, add_special_tokens=False)
    return ids


def encode_prompt(text, tokenizer, template=None, system=''):
    """One user turn (round 1, `<image>` already placed in `text` if wanted) -> input_ids:
    [bos] + chunk + IMAGE_TOKEN_INDEX + chunk."""
    return encode_turns([(text, None)], tokenizer, template, system)


def encode_conversation(turns, tokenizer, template, system='', with_image=True):
    """Chat turns [(question, answer), ..., (question, None)] -> input_ids of the prompt for the last question.

    The same ids training gives the conversation ["<image>\\n" + q1, a1, q2, a2, ...] (without "<image>\\n"
    when with_image=False); the image is placed here, so a question must not contain `<image>`."""
    inputs = []
    for n, (question, answer) in enumerate(turns, 1):
        if DEFAULT_IMAGE_TOKEN in question:
            raise ValueError(f'{DEFAULT_IMAGE_TOKEN} in a question: the session places the image itself')
        inputs.append((DEFAULT_IMAGE_TOKEN + '\n' + question.strip() if n == 1 and with_image else question, answer))
    return encode_turns(inputs, tokenizer, template, system)


def model_vision_spec(model):
    """The VisionSpec a model's images are prepared with (`model.vision_spec`, from its MGLLaVAConfig); None for
    a model object without one."""
    spec = getattr(model, 'vision_spec', None)
    return as_spec(spec) if spec is not None else None


def as_spec(spec):
    """VisionSpec, or a dict of its fields -> VisionSpec."""
    return spec if isinstance(spec, VisionSpec) else VisionSpec(**dict(spec))


def build_prompt_sample(question, image, tokenizer, template, spec, num_image_tokens, box_entry=None,
                        system='', sample_id=None):
    """question (str, without <image>) + PIL image + optional box entry {boxes, scores, labels} in the original
    frame -> a collate-ready sample (no labels): id, input_ids (L,) with T + n_obj visual slots, pixel_values
    (3,s,s), num_image_tokens T, and in MG mode pixel_values_aux (3,S,S) and, with a box entry, boxes (n_obj,4)
    in the S-pixel frame. image None: a text-only sample {id, input_ids} (the question alone, no <image>)."""
    if image is None:
        return dict(id=sample_id, input_ids=encode_prompt(question, tokenizer, template, system))
    ids = encode_prompt(DEFAULT_IMAGE_TOKEN + '\n' + question, tokenizer, template, system)
    views = preprocess_image(image, spec)
    sample = dict(id=sample_id, pixel_values=views['pixel_values'], num_image_tokens=num_image_tokens)
    n_obj = 0
    if spec.image_size_aux:
        sample['pixel_values_aux'] = views['pixel_values_aux']
        if box_entry is not None:
            boxes, _, _ = preprocess_boxes(box_entry['boxes'], box_entry['labels'], box_entry['scores'],
                                           views['orig_size'], spec, skip_bad=True)
            sample['boxes'] = boxes
            n_obj = len(boxes)
    sample['input_ids'], _ = expand_visual_slots(ids, None, num_image_tokens + n_obj)
    return sample


def pad_token_id(tokenizer):
    """The id generation pads with: the tokenizer's pad token, else its EOS (Llama-style tokenizers have none)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def collate_prompts(samples, tokenizer):
    """Prompt samples -> one LEFT-padded batch (mg_llava_collate_fn's dict: input_ids/attention_mask (B,L),
    pixel_values (N_img,3,s,s), boxes, visual_index, ids, ...): generation continues every row at the end."""
    return mg_llava_collate_fn(samples, pad_index=pad_token_id(tokenizer), padding_side='left',
                               return_hf_format=True)
