"""A transformers-native VLM as the Genixer judge: a local folder with a `LlavaForConditionalGeneration`-style
model (any `AutoModelForVision2Seq` class) and its `AutoProcessor`, e.g. llava-hf/llava-1.5-7b-hf saved offline.

It plugs into the evaluation engine's `predict` like a framework export does (same fixed batches, resume files and
rank sharding): `HFJudge` carries `.tokenizer`, `HFPromptBuilder` turns a question dict (filtering.judge_questions)
into {image, prompt} and collates a batch with the processor (left padding: the first answer token follows the
last prompt token of every row), and `hf_p_yes_step` reads the first-token logits -> P(Yes) over {Yes, No}
(judge.p_yes). The prompt is the model's chat template when the processor has one, else LLaVA-1.5's
"USER: <image>\\n{prompt} ASSISTANT:".
"""
import inspect
import os.path as osp

from .judge import left_padded_positions, p_yes, yes_no_ids

LLAVA_PROMPT = 'USER: <image>\n{prompt} ASSISTANT:'


def is_hf_vlm(path):
    """A folder with a transformers config.json and a processor, not a framework export."""
    if osp.isfile(osp.join(path, 'mg_llava_config.json')) or not osp.isfile(osp.join(path, 'config.json')):
        return False
    return osp.isfile(osp.join(path, 'preprocessor_config.json')) or osp.isfile(osp.join(path,
                                                                                      'processor_config.json'))


class HFJudge:
    """model + processor of a local transformers VLM, in eval mode on `device`."""

    def __init__(self, path, dtype=None, device='cpu'):
        from transformers import AutoModelForVision2Seq, AutoProcessor
        self.processor = AutoProcessor.from_pretrained(path)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = 'left'
        self.model = AutoModelForVision2Seq.from_pretrained(path, torch_dtype=dtype).to(device).eval()
        self.dtype = next(self.model.parameters()).dtype
        # what its forward takes: processors also return e.g. token_type_ids, which LLaVA's forward refuses
        self.accepts = set(inspect.signature(self.model.forward).parameters)
        self.chat = getattr(self.processor, 'chat_template', None)
        self.name_or_path = path

    def prompt(self, text):
        if self.chat:
            msg = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': text}]}]
            return self.processor.apply_chat_template(msg, add_generation_prompt=True)
        return LLAVA_PROMPT.format(prompt=text)


class HFPromptBuilder:
    """question dict -> {'id', 'image' (PIL RGB), 'prompt'}; `collate` -> the processor's batch + ids."""

    def __init__(self, judge):
        self.judge = judge

    def __call__(self, q):
        from mg_llava.evaluation import questions as Q
        image = Q.open_image(q)
        if image is None:
            raise ValueError(f'question {q["id"]!r}: the judge needs an image')
        return {'id': q['id'], 'image': image, 'prompt': self.judge.prompt(q['text'].replace('<image>\n', ''))}

    def collate(self, items, tokenizer):
        batch = self.judge.processor(images=[i['image'] for i in items], text=[i['prompt'] for i in items],
                                     padding=True, return_tensors='pt')
        return {'inputs': dict(batch), 'ids': [i['id'] for i in items]}


def hf_p_yes_step(judge):
    """A `predict` step for an HFJudge: batch -> [P(Yes)], one forward, logits of the last position only."""
    import torch
    yes, no = yes_no_ids(judge.tokenizer)

    def step(_, data):
        inputs = {k: v.to(judge.model.device) for k, v in data['inputs'].items() if k in judge.accepts}
        inputs['pixel_values'] = inputs['pixel_values'].to(judge.dtype)
        inputs['position_ids'] = left_padded_positions(inputs['attention_mask'])
        with torch.no_grad():
            try:
                logits = judge.model(**inputs, num_logits_to_keep=1).logits
            except TypeError:  # a model without num_logits_to_keep: full logits, last position read
                logits = judge.model(**inputs).logits
        return p_yes(logits[:, -1], yes, no).tolist()
    return step


def judge_digest(path):
    """What identifies an HF judge for resume: its top-level files (config, weights, processor), bytes included."""
    import os

    from mg_llava.evaluation.resume import files_digest
    return files_digest(path, [f for f in os.listdir(path) if osp.isfile(osp.join(path, f))])
