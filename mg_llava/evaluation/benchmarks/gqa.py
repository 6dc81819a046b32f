"""GQA testdev (balanced).

`data`: LLaVA's `llava_gqa_testdev_balanced.jsonl` ({question_id, image, text}, images under `image_folder`);
id = box key = question_id; prompt = text, verbatim.  `annotations`: the official
`testdev_balanced_questions.json` ({question_id: {answer, isBalanced, types{structural}}}), whose entries for the
questions of `data` are the ground truth.  Without `annotations` the scorer takes the official json itself as
`data` (every question in it).
* Score: official `eval.py` accuracy over balanced questions, plus binary (structural type != 'query') / open;
  a prediction is right when LLaVA `convert_gqa_for_eval.py`'s `rstrip('.').lower()` equals the answer.
* Submission: `<name>_submission.json` `[{"questionId", "prediction": rstrip('.').lower()}]`, the input of the
  official GQA `eval.py` (`convert_gqa_for_eval.py`; the reference GQADataset.evaluate); questions without a
  prediction are left out.
"""
import os
from collections import OrderedDict

from mg_llava.errors import DataError, ScoreError

from .. import loaders as L
from ..benchmark_metrics import mean_pct
from ..vqa_metrics import gqa_match, gqa_normalize
from . import Benchmark


def read_questions(data, image_folder=None, annotations=None):
    return L.llava_jsonl_questions(data, image_folder)


def load_gqa(path, annotations=None):
    """Ground truth -> items {id, answer, balanced, structural}: the questions of the jsonl `path` answered by
    `annotations`, or (no annotations) every question of the official json `path`."""
    if not annotations and path.endswith('.jsonl'):
        raise ScoreError(path, '', 'gqa scoring needs annotations (testdev_balanced_questions.json)')
    gt = L.read_json(annotations or path)
    if not isinstance(gt, dict):
        raise ScoreError(annotations or path, '', 'expected a JSON object {question_id: {answer, ...}}')
    if annotations:
        ids = []
        for lineno, q in L.read_jsonl(path):
            where = f'line {lineno}'
            L.require_fields(path, where, q, 'question_id')
            qid = L.norm_id(q['question_id'], path, where)
            if qid not in gt:
                raise ScoreError(path, where, f'question_id {qid!r} is not in {annotations}')
            ids.append(qid)
    else:
        ids = list(gt)
    items = []
    for qid in ids:
        q = gt[qid]
        if not isinstance(q, dict) or 'answer' not in q:
            raise ScoreError(annotations or path, qid, 'missing field "answer"')
        items.append({'id': L.norm_id(qid), 'answer': q['answer'], 'balanced': bool(q.get('isBalanced', True)),
                      'structural': (q.get('types') or {}).get('structural'), '_where': qid})
    return L.unique(items, path)


def gqa_scores(items, predictions):
    """items: {id, answer, [balanced bool], [structural type]} -> accuracy, binary, open, n, missing."""
    scored = [it for it in items if it.get('balanced', True)]
    hits = [gqa_match(predictions[it['id']], it['answer']) if it['id'] in predictions else 0.0 for it in scored]
    out = OrderedDict([('accuracy', mean_pct(hits))])
    typed = [(it.get('structural'), h) for it, h in zip(scored, hits) if it.get('structural')]
    if typed:
        out['binary'] = mean_pct(h for s, h in typed if s != 'query')
        out['open'] = mean_pct(h for s, h in typed if s == 'query')
    out['n'] = len(scored)
    out['missing'] = sum(it['id'] not in predictions for it in scored)
    return out


def write_submission(questions, predictions, out_dir, name, test_questions=None, model_id=None):
    path = os.path.join(out_dir, f'{name}_submission.json')
    return [L.dump_json(path, [{'questionId': q['id'], 'prediction': gqa_normalize(predictions[q['id']])}
                               for q in questions if q['id'] in predictions])]


def check_annotations(path):
    if not isinstance(L.check_json(path), dict):
        raise DataError(path, '', 'expected a JSON object {question_id: {answer, ...}}')


BENCHMARKS = (Benchmark('gqa', read_questions=read_questions, read_answers=load_gqa, score=gqa_scores,
                        headline_keys=('accuracy', 'binary', 'open'), write_submission=write_submission,
                        check_data=L.check_llava_jsonl, check_annotations=check_annotations,
                        image_folder='required', needs_annotations=True),)
