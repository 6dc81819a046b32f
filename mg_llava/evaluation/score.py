"""Score one benchmark's predictions offline and print one JSON object (rates in percent).

    python -m mg_llava.evaluation.score --benchmark NAME --data DATA [--annotations FILE] \
        --predictions PRED.jsonl [--option-extractor robust|fork]

`--data` and `--annotations` are an evaluation entry's `data` and `annotations` (configs/_base_/mg_llava_sft.py
PART 6, tools/test.py): the scorer reads the ground truth exactly as the evaluation loop does, through the same
benchmark object (`mg_llava.evaluation.benchmarks`, whose modules describe each benchmark's files and ids).
E.g. TextVQA: `--data llava_textvqa_val_v051_ocr.jsonl --annotations TextVQA_0.5.1_val.json`; GQA: `--data
llava_gqa_testdev_balanced.jsonl --annotations testdev_balanced_questions.json`; POPE: `--data` the folder of
coco_pope_*.json files.  (TextVQA and GQA also take their official json alone as `--data`.)

PRED.jsonl: the `<name>_predictions.jsonl` the evaluation writes, one {"id": <question id>, "prediction":
"<model text>"} per line, or a LLaVA answer file ({"question_id", "prompt", "text"} per line).  Besides the
questions' own ids a benchmark may accept other keys (TextVQA: LLaVA's image-keyed answers; POPE: bare
question_ids that are unique over the splits); see its module.

Headline keys: mmbench/seed/sqa/ai2d/mmmu/mmstar/textvqa/ocrvqa/gqa -> accuracy; docvqa -> anls; chartqa ->
relaxed_accuracy; mme -> perception, cognition, categories; hallusion -> aAcc, fAcc, qAcc; pope -> f1, accuracy,
precision, recall, yes_ratio (means over splits) and splits.  Every result also has `benchmark`, `n` and
`missing` (questions without a prediction, scored as wrong).  A prediction id that is not in the data, a
malformed line or a malformed data file is an error (exit status 2, message on stderr naming file and line).
Prediction-only benchmarks (vqav2, vizwiz, llava_bench, mmvet) have no ground truth here: exit status 2.

`--option-extractor fork` reproduces the MG-LLaVA fork's letter regex (parity runs, spec section 9); the default
is the robust extractor of `answer_extraction.extract_option`.
"""
import argparse
import json
import sys
from collections import OrderedDict

from mg_llava.errors import ScoreError

from . import benchmarks as B
from . import loaders
from .answer_extraction import OPTION_EXTRACTORS

BENCHMARKS = B.scored_names()


def _scored(benchmark, data):
    bench = B.get(benchmark)
    if not bench.scored:
        raise ScoreError(data, '', f'{benchmark} is prediction-only (no ground truth to score here; the evaluation '
                         'writes its official submission file); scored benchmarks: ' + ', '.join(BENCHMARKS))
    return bench


def load_items(benchmark, data, annotations=None):
    """Ground-truth items of `benchmark` read from an entry's `data` and `annotations`."""
    bench = _scored(benchmark, data)
    if annotations and not bench.needs_annotations:
        users = ', '.join(sorted(n for n in BENCHMARKS if B.get(n).needs_annotations))
        raise ScoreError(annotations, '', f'--annotations is only used by {users}, not by {benchmark}')
    return bench.read_answers(str(data), annotations and str(annotations))


def score_items(benchmark, items, predictions, option_extractor='robust'):
    """Metric dict for `items` (from load_items) and `predictions` ({id: text})."""
    return B.get(benchmark).score_items(items, predictions, option_extractor)


def match_predictions(benchmark, items, records, path, data, annotations=None):
    """Prediction records (loaders.read_prediction_records) -> {item id: text}.  A key is an item's id or one
    the benchmark's resolver accepts; an unknown key (all of them listed as a count), an ambiguous one or two
    predictions for one question are errors."""
    bench = B.get(benchmark)
    known = {it['id'] for it in items}
    resolve = bench.prediction_resolver(items, str(data), annotations and str(annotations)) \
        if bench.prediction_resolver else None
    preds, unknown = {}, []
    for where, key, prompt, text in records:
        qid, problem = (key, '') if key in known else resolve(key, prompt) if resolve else (None, '')
        if problem:
            raise ScoreError(path, where, problem)
        if qid is None:
            unknown.append(key)
            continue
        if qid in preds:
            raise ScoreError(path, where, f'duplicate prediction id {key!r}'
                             + (f' (question {qid!r})' if qid != key else ''))
        preds[qid] = text
    if unknown:
        raise ScoreError(path, '', f'prediction id {unknown[0]!r} is not in {data}'
                         + (f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''))
    return preds


def score(benchmark, data, predictions_path, annotations=None, option_extractor='robust'):
    """Load, match ids, score. Returns an OrderedDict starting with `benchmark`."""
    bench = B.get(benchmark)
    items = load_items(benchmark, data, annotations)
    records = loaders.read_prediction_records(predictions_path)
    predictions = match_predictions(benchmark, items, records, predictions_path, data, annotations)
    result = OrderedDict(benchmark=benchmark)
    result.update(bench.score_items(items, predictions, option_extractor))
    if 'option_extractor' in bench.options:
        result['option_extractor'] = option_extractor
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m mg_llava.evaluation.score', description=__doc__.split('\n')[0])
    parser.add_argument('--benchmark', required=True, choices=B.names())
    parser.add_argument('--data', required=True, help="the evaluation entry's `data` (file or POPE directory)")
    parser.add_argument('--annotations', help="the evaluation entry's `annotations` (textvqa, gqa)")
    parser.add_argument('--predictions', required=True,
                        help='JSON lines {"id", "prediction"} (or a LLaVA answer file)')
    parser.add_argument('--option-extractor', default='robust', choices=sorted(OPTION_EXTRACTORS),
                        help='multiple-choice letter extraction (fork = the fork regex, for parity runs)')
    args = parser.parse_args(argv)
    try:
        result = score(args.benchmark, args.data, args.predictions, args.annotations, args.option_extractor)
    except (ScoreError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
