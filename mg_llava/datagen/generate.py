"""Generation (spec A.5): a generator model of this framework + unlabelled images -> Genixer samples.

    images (id, path) -> prompt = `<image>\\n` + instruction(task, seeded per id) -> the evaluation engine
    (mg_llava.evaluation.loop.predict: the TRAINING preprocessing, fixed left-padded batches dealt to ranks,
    finished batches appended to resumable partial files) -> text -> parse_qa -> LLaVA samples + rejects

Sampling (temperature > 0, default 0.2 as the reference) is Gumbel-max with one torch.Generator per row, seeded
by (seed, image id): a row's tokens depend neither on the batch it shares nor on the rank that runs it, so one
seed gives the same file on 1 or N ranks and after a resume. temperature 0 is greedy. The reference draws its
templates unseeded and centre-crops at generation while training pads to square; both fixed here.
"""
import os.path as osp

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from . import formats as F
from .templates import GROUNDING_TASKS, instruction, sample_rng

AGNOSTIC = 'agnostic'   # the task-agnostic mode's task name: the generic instruction alone


class PerRowSampler(LogitsProcessor):
    """Sampling at `temperature` as argmax(scores / T + Gumbel noise), the noise of row i drawn from its own
    generator (seeded by seeds[i]); used with greedy `generate`, it samples softmax(scores / T) row by row."""

    def __init__(self, seeds, temperature):
        if temperature <= 0:
            raise ValueError('PerRowSampler needs temperature > 0 (temperature 0 is greedy: no sampler)')
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        vocab = scores.shape[-1]
        u = torch.stack([torch.rand(vocab, generator=g, dtype=torch.float64) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12)))
        return scores.float() / self.temperature + gumbel.to(device=scores.device, dtype=torch.float32)


def row_seed(seed, sample_id):
    return int(sample_rng(seed, f'sample/{sample_id}').integers(2 ** 62))


def sampling_kwargs(seed, temperature):
    """generation_kwargs for `predict`: None (greedy) or a callable(batch) -> its per-row sampler."""
    if not temperature:
        return None
    return lambda data: {'logits_processor': LogitsProcessorList(
        [PerRowSampler([row_seed(seed, i) for i in data['ids']], temperature)])}


def generation_questions(items, task, seed=0):
    """[(id, image path)] -> the evaluation engine's question dicts, with the seeded instruction of each id.
    task: one of templates.TASKS (task-specific mode) or 'agnostic' (the generic instruction alone)."""
    questions = []
    for sid, path in items:
        rng = sample_rng(seed, f'generate/{sid}')
        text, index = (instruction('common', rng, task_specific=False) if task == AGNOSTIC
                       else instruction(task, rng, task_specific=True))
        questions.append({'id': sid, 'text': text, 'image': {'path': path}, 'box_key': sid,
                          'where': f'image {path}', 'template': index})
    return questions


def to_samples(questions, predictions, task, image_folder, provenance):
    """Generated texts -> (samples, rejects), in input order. A sample is a LLaVA conversation (every parsed
    question/answer pair a turn) plus question/answer (the first pair), task, template, seed, generator, the raw
    text and, for grounding tasks, the boxes found in it; a reject keeps the text and the reason."""
    samples, rejects = [], []
    for q in questions:
        text = predictions[q['id']]
        image = osp.relpath(q['image']['path'], image_folder) if image_folder else q['image']['path']
        base = {'image': image, 'task': task, 'template': q['template'], **provenance}
        try:
            pairs = F.parse_qa(text)
        except F.FormatError as err:
            rejects.append({'id': q['id'], **base, 'text': text, 'reason': str(err)})
            continue
        conv = []
        for n, (question, answer) in enumerate(pairs):
            conv += [{'from': 'human', 'value': ('<image>\n' if n == 0 else '') + question},
                     {'from': 'gpt', 'value': answer}]
        sample = {'id': f'gen_{q["id"]}', 'source_id': q['id'], **base, 'question': pairs[0][0],
                  'answer': pairs[0][1], 'conversations': conv, 'text': text}
        if task in GROUNDING_TASKS:
            sample['boxes'] = F.parse_boxes(text)
        samples.append(sample)
    return samples, rejects
