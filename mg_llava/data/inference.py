"""Prompt-only samples for evaluation and chat, built with the same preprocessing as training."""
from xtuner.dataset.utils import get_bos_eos_token_ids
from xtuner.utils import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX

from .dataset import as_template, expand_visual_slots
from .preprocess import preprocess_boxes, preprocess_image


def encode_prompt(text, tokenizer, template=None, system=''):
    """One user turn -> input_ids as xtuner's encode_fn builds them: [bos] + chunk + IMAGE_TOKEN_INDEX + chunk."""
    template = as_template(template)
    if template is not None:
        prompt = template.INSTRUCTION.format(input=text, round=1)
        if system:
            prompt = template.SYSTEM.format(system=system) + prompt
    else:
        prompt = text
    ids = list(get_bos_eos_token_ids(tokenizer)[0])  # as xtuner's encode_fn (ChatGLM/Qwen differ from bos_token_id)
    chunks = prompt.split(DEFAULT_IMAGE_TOKEN)
    if len(chunks) > 2:
        raise ValueError('one <image> per prompt is supported')
    for i, chunk in enumerate(chunks):
        ids += tokenizer.encode(chunk, add_special_tokens=False)
        if i < len(chunks) - 1:
            ids.append(IMAGE_TOKEN_INDEX)
    return ids


def build_prompt_sample(question, image, tokenizer, template, spec, num_image_tokens, box_entry=None,
                        system='', sample_id=None):
    """question (str, without <image>) + PIL image + optional box entry {boxes, scores, labels} in the
    original frame -> a collate-ready sample (no labels)."""
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
