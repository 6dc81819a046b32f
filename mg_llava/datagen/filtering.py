"""The two Genixer filters' data plumbing: generated samples in, kept samples + a score for every sample out.
Samples are matched by id end to end (never by position); a sample that cannot be scored is named or counted.

  judge  sample -> judge_prompt(question, answer) + its image -> the evaluation engine's batches with a judge
         step (judge.p_yes_step, or judge.reference_step) -> kept when the score is in the band (reference mode:
         and the judge said Yes); --score answer: the question itself + the answer's tokens (judge.answer_step)
  clip   REC sample -> (expression, box) -> crop (>= 50 px) -> 100 * cos(CLIP image, CLIP text) >= threshold
"""
import os.path as osp
import re

from mg_llava.errors import DataError

from . import formats as F
from .judge import in_band, judge_prompt
from .templates import load

CLIP_THRESHOLD = 25.0   # 100 * cosine; recalibrate per CLIP and data (the reference's raw dot > 60 is no cosine)


def check_samples(samples, path, need=('id', 'image', 'question', 'answer')):
    """Every sample a dict with `need` and a unique id; DataError naming the file and the sample otherwise."""
    seen = set()
    for n, s in enumerate(samples):
        where = f'id {s.get("id")!r}' if isinstance(s, dict) and 'id' in s else f'sample {n}'
        if not isinstance(s, dict) or any(not s.get(k) for k in need):
            raise DataError(path, where, f'a generated sample needs {", ".join(need)}')
        if s['id'] in seen:
            raise DataError(path, where, 'id repeated: samples are matched by id')
        seen.add(s['id'])


def judge_questions(samples, image_root):
    """Generated samples -> the evaluation engine's question dicts (the judge prompt about each sample)."""
    return [{'id': s['id'], 'text': judge_prompt(s['question'], s['answer']),
             'image': {'path': osp.join(image_root, s['image'])}, 'box_key': s.get('source_id', s['id']),
             'where': 'judged sample'} for s in samples]


def answer_questions(samples, image_root):
    """Generated samples -> question dicts asking the generated question itself, its answer carried (--score answer)."""
    return [dict(q, text=s['question'], answer=s['answer'])
            for q, s in zip(judge_questions(samples, image_root), samples)]


def judge_keep(score, band, mode='p_yes'):
    """p_yes / answer: score is a float in the band. reference_geomean: score is {'score', 'said'}: said Yes and in
    band."""
    if mode in ('p_yes', 'answer'):
        return in_band(score, band)
    return (score['score'] is not None and score['said'].strip().lower().startswith('yes')
            and in_band(score['score'], band))


def select(samples, scores, band, mode='p_yes', key='judge_score'):
    """-> (kept samples, each with its score under `key`; every sample's {id, score, kept}) in input order."""
    kept, table = [], []
    for s in samples:
        score = scores[s['id']]
        keep = judge_keep(score, band, mode)
        table.append({'id': s['id'], key: score, 'kept': keep})
        if keep:
            kept.append({**s, key: score})
    return kept, table


def _template_patterns():
    pats = []
    for text in load('rec_questions'):
        parts = [re.escape(p) for p in text.split('<expr>')]
        pats.append(re.compile('^' + '(?P<e>.+?)'.join(parts[:2]) + ''.join(
            f'(?P=e){p}' for p in parts[2:]) + '$', re.S))
    return pats


def rec_expression(question):
    """The expression of a generated REC question: the `<expr>` of the REC template it matches, else the
    question without a trailing '?' (template-agnostic fallback)."""
    q = question.strip()
    for pat in _template_patterns():
        m = pat.match(q)
        if m:
            return m.group('e').strip()
    return q.rstrip('?').strip()


def rec_target(sample):
    """-> (expression, normalised box) of a REC sample; FormatError with the reason otherwise."""
    expression = rec_expression(sample['question'])
    if F.parse_box_groups(expression):
        raise F.FormatError('the expression itself holds a box')
    boxes = F.parse_boxes(sample['answer'])
    if not boxes:
        raise F.FormatError('no [x1,y1,x2,y2] box in the answer')
    x1, y1, x2, y2 = boxes[0]
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise F.FormatError(f'box {boxes[0]} is not a normalised xyxy box')
    return expression, boxes[0]
