"""POPE (object hallucination, yes/no).

`data`: a directory with `coco_pope_{adversarial,popular,random}.json` (JSON lines {question_id, image, text,
label}) or one such file; images under `image_folder` (COCO val2014).  question_ids restart in every split, so
with a directory the id is "{split}/{question_id}" (e.g. "adversarial/17"); with a single file it is the bare
question_id.  The box key is the question_id (one box file for the three splits).
* Prompt: text + "\\nPlease answer the question with yes or no.".
* Score: LLaVA `eval_pope.py`: per split TP/FP/TN/FN with 'yes' positive, accuracy, precision, recall, F1,
  yes-ratio; headline = mean over splits.  Divisions by zero give 0 (the reference raises).  A missing prediction
  is counted as the wrong answer.
* Predictions may also be keyed by the bare question_id when it names one question over the split files, and
  by "{split}/{question_id}" with a single file.
"""
import os
from collections import OrderedDict, defaultdict

from mg_llava.errors import DataError, ScoreError

from .. import loaders as L
from ..answer_extraction import pope_yes_no
from ..benchmark_metrics import pct
from . import Benchmark


def _pope_split(filename):
    stem = os.path.splitext(os.path.basename(filename))[0]
    return stem[len('coco_pope_'):] if stem.startswith('coco_pope_') else stem


def pope_files(path):
    """A POPE directory or file -> [(file, split)]; the split names the ids only with several files."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.startswith('coco_pope_') and f.endswith('.json'))
        if not files:
            raise ScoreError(path, '', 'no coco_pope_<split>.json files in this directory')
    else:
        files = [path]
    return [(f, _pope_split(f)) for f in files]


def read_questions(data, image_folder=None, annotations=None):
    files = pope_files(data)
    return [q for file, split in files
            for q in L.llava_jsonl_questions(file, image_folder, L.YES_NO, (lambda qid, s=split: f'{s}/{qid}')
                                             if len(files) > 1 else None)]


def load_pope(path, annotations=None):
    """Ground truth -> items {id, split, qid (the bare question_id), label 'yes'|'no'}."""
    files = pope_files(path)
    items = []
    for file, split in files:
        for lineno, q in L.read_jsonl(file):
            where = f'line {lineno}'
            if not isinstance(q, dict):
                raise ScoreError(file, where, 'expected a JSON object')
            L.require_fields(file, where, q, 'question_id', 'label')
            qid = L.norm_id(q['question_id'], file, where)
            items.append({'id': f'{split}/{qid}' if len(files) > 1 else qid, 'split': split, 'qid': qid,
                          'label': L.yes_no_label(file, where, q['label']), '_where': f'{file} {where}'})
    return L.unique(items, path)


def pope_split_scores(labels, preds):
    """labels, preds: lists of 'yes'/'no' -> dict (percent) with the confusion counts."""
    tp = sum(p == 'yes' and t == 'yes' for p, t in zip(preds, labels))
    fp = sum(p == 'yes' and t != 'yes' for p, t in zip(preds, labels))
    tn = sum(p == 'no' and t != 'yes' for p, t in zip(preds, labels))
    fn = sum(p == 'no' and t == 'yes' for p, t in zip(preds, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(labels)
    return OrderedDict([('f1', 100.0 * f1), ('accuracy', pct(tp + tn, n)), ('precision', 100.0 * precision),
                        ('recall', 100.0 * recall), ('yes_ratio', pct(sum(p == 'yes' for p in preds), n)),
                        ('n', n), ('tp', tp), ('fp', fp), ('tn', tn), ('fn', fn)])


def pope_scores(items, predictions, yes_no=pope_yes_no):
    """items: {id, split, label 'yes'|'no'} -> f1/accuracy/precision/recall/yes_ratio (mean of splits), splits.

    A missing prediction is counted as the wrong answer (the opposite of the label)."""
    per_split = defaultdict(lambda: ([], []))
    for it in items:
        label = 'no' if it['label'] == 'no' else 'yes'  # eval_pope: anything but 'no' is positive
        if it['id'] in predictions:
            pred = yes_no(predictions[it['id']])
        else:
            pred = 'no' if label == 'yes' else 'yes'
        per_split[it['split']][0].append(label)
        per_split[it['split']][1].append(pred)
    splits = OrderedDict((s, pope_split_scores(*per_split[s])) for s in sorted(per_split))
    out = OrderedDict()
    for key in ('f1', 'accuracy', 'precision', 'recall', 'yes_ratio'):
        out[key] = sum(v[key] for v in splits.values()) / len(splits) if splits else 0.0
    out['n'] = len(items)
    out['missing'] = sum(it['id'] not in predictions for it in items)
    out['splits'] = splits
    return out


def prediction_resolver(items, data, annotations=None):
    """A bare question_id that is unique over the split files; "{split}/{question_id}" with a single file."""
    by_qid, by_split_key = defaultdict(list), {}
    for it in items:
        by_qid[it['qid']].append(it['id'])
        by_split_key[f'{it["split"]}/{it["qid"]}'] = it['id']

    def resolve(key, prompt=None):
        if key in by_split_key:
            return by_split_key[key], ''
        ids = by_qid.get(key, [])
        if len(ids) == 1:
            return ids[0], ''
        if ids:
            return None, (f'prediction id {key!r} is the question_id of {len(ids)} questions '
                          f'({", ".join(ids)}): key it as "split/question_id"')
        return None, ''
    return resolve


def check_data(data, image_folder=None):
    """A folder of coco_pope_<split>.json files (pope_files), or one file."""
    fields = L.JSONL_FIELDS + ('label',)
    if not os.path.isdir(data):
        L.check_first_jsonl(data, fields)
        return
    files = [f for f in sorted(os.listdir(data)) if f.startswith('coco_pope_') and f.endswith('.json')]
    if not files:
        raise DataError(data, '', 'no coco_pope_<split>.json files in this directory')
    for f in files:
        try:
            L.check_first_jsonl(os.path.join(data, f), fields)
        except DataError as e:
            raise DataError(data, '', f'{f}: {e.reason}') from None


BENCHMARKS = (Benchmark('pope', read_questions=read_questions, read_answers=load_pope, score=pope_scores,
                        headline_keys=('f1', 'accuracy', 'precision', 'recall', 'yes_ratio'), check_data=check_data,
                        image_folder='required', prediction_resolver=prediction_resolver),)
