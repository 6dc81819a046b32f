"""Score one benchmark's predictions offline and print one JSON object (rates in percent).

    python -m mg_llava.evaluation.score --benchmark NAME --data DATA [--annotations FILE] \
        --predictions PRED.jsonl [--option-extractor robust|fork]

PRED.jsonl: one {"id": <id as in the data file>, "prediction": "<model text>"} per line; the id of each benchmark
and the data formats are described in `mg_llava.evaluation.loaders`.

Headline keys: mmbench/seed/sqa/ai2d/mmmu/mmstar/textvqa/ocrvqa/gqa -> accuracy; docvqa -> anls; chartqa ->
relaxed_accuracy; mme -> perception, cognition, categories; hallusion -> aAcc, fAcc, qAcc; pope -> f1, accuracy,
precision, recall, yes_ratio (means over splits) and splits.  Every result also has `benchmark`, `n` and
`missing` (questions without a prediction, scored as wrong).  A prediction id that is not in the data, a
malformed line or a malformed data file is an error (exit status 2, message on stderr naming file and line).

`--option-extractor fork` reproduces the MG-LLaVA fork's letter regex (parity runs, spec section 9); the default
is the robust extractor of `answer_extraction.extract_option`.
"""
import argparse
import json
import sys
from collections import OrderedDict

from . import benchmark_metrics as bm
from . import loaders
from .answer_extraction import OPTION_EXTRACTORS
from .vqa_metrics import anls, exact_match, relaxed_accuracy, vqa_soft_accuracy

MULTIPLE_CHOICE = ('mmbench', 'seed', 'sqa', 'ai2d', 'mmmu', 'mmstar')
BENCHMARKS = MULTIPLE_CHOICE + ('textvqa', 'docvqa', 'ocrvqa', 'chartqa', 'mme', 'hallusion', 'pope', 'gqa')


def load_items(benchmark, data, annotations=None):
    """Ground-truth items of `benchmark` read from `data` (see loaders for the formats)."""
    if annotations and benchmark != 'gqa':
        raise loaders.ScoreError(annotations, '', f'--annotations is only used by gqa, not by {benchmark}')
    if benchmark in MULTIPLE_CHOICE:
        return loaders.load_multiple_choice(data, mmmu=benchmark == 'mmmu', circular=benchmark == 'mmbench')
    if benchmark == 'gqa':
        return loaders.load_gqa(data, annotations)
    return getattr(loaders, f'load_{benchmark}')(data)


def score_items(benchmark, items, predictions, option_extractor='robust'):
    """Metric dict for `items` (from load_items) and `predictions` ({id: text})."""
    if benchmark in MULTIPLE_CHOICE:
        return bm.multiple_choice_scores(items, predictions, circular=benchmark == 'mmbench',
                                         extractor=OPTION_EXTRACTORS[option_extractor])
    if benchmark == 'textvqa':
        return bm.average_of_scores(items, predictions, lambda p, it: vqa_soft_accuracy(p, it['answers']),
                                    'accuracy')
    if benchmark == 'docvqa':
        return bm.average_of_scores(items, predictions, lambda p, it: anls(p, it['answers']), 'anls')
    if benchmark == 'ocrvqa':
        return bm.average_of_scores(items, predictions, lambda p, it: exact_match(p, it['answers']), 'accuracy')
    if benchmark == 'chartqa':
        return bm.average_of_scores(items, predictions, lambda p, it: relaxed_accuracy(p, it['answers']),
                                    'relaxed_accuracy')
    return {'mme': bm.mme_scores, 'hallusion': bm.hallusion_scores, 'pope': bm.pope_scores,
            'gqa': bm.gqa_scores}[benchmark](items, predictions)


def score(benchmark, data, predictions_path, annotations=None, option_extractor='robust'):
    """Load, check ids, score. Returns an OrderedDict starting with `benchmark`."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f'unknown benchmark {benchmark!r}; choose from {", ".join(BENCHMARKS)}')
    items = load_items(benchmark, data, annotations)
    predictions = loaders.read_predictions(predictions_path)
    known = {it['id'] for it in items}
    unknown = [k for k in predictions if k not in known]
    if unknown:
        raise loaders.ScoreError(predictions_path, '', f'prediction id {unknown[0]!r} is not in {data}'
                                 + (f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''))
    result = OrderedDict(benchmark=benchmark)
    result.update(score_items(benchmark, items, predictions, option_extractor))
    if benchmark in MULTIPLE_CHOICE:
        result['option_extractor'] = option_extractor
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m mg_llava.evaluation.score', description=__doc__.split('\n')[0])
    parser.add_argument('--benchmark', required=True, choices=BENCHMARKS)
    parser.add_argument('--data', required=True, help='ground-truth file (or POPE directory)')
    parser.add_argument('--annotations', help='gqa only: official questions json when --data is the LLaVA jsonl')
    parser.add_argument('--predictions', required=True, help='JSON lines {"id", "prediction"}')
    parser.add_argument('--option-extractor', default='robust', choices=sorted(OPTION_EXTRACTORS),
                        help='multiple-choice letter extraction (fork = the fork regex, for parity runs)')
    args = parser.parse_args(argv)
    try:
        result = score(args.benchmark, args.data, args.predictions, args.annotations, args.option_extractor)
    except (loaders.ScoreError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
