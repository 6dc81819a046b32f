"""Shared pieces of the benchmark aggregates (each benchmark's own aggregate is in its module under
`mg_llava.evaluation.benchmarks`: MMBench circular accuracy in `multiple_choice`, MME in `mme`, HallusionBench in
`hallusion`, POPE in `pope`, GQA in `gqa`).

Common contract: `items` is a list of dicts with a unique string `id`; `predictions` maps id -> prediction text.
An item without a prediction is scored as wrong and counted in `missing`. Items are never dropped.  All rates
are in percent.
"""
from collections import OrderedDict, defaultdict


def pct(hits, total):
    return 100.0 * hits / total if total else 0.0


def mean_pct(values):
    values = list(values)
    return pct(sum(values), len(values))


def grouped_accuracy(items, hits, key):
    """{item[key]: mean_pct of its hits} over the items that have a non-empty `key`, sorted by key."""
    groups = defaultdict(list)
    for it, h in zip(items, hits):
        if it.get(key) not in (None, ''):
            groups[it[key]].append(h)
    return OrderedDict((k, mean_pct(v)) for k, v in sorted(groups.items()))


def average_of_scores(items, predictions, score_fn, name):
    """{name: mean (x100) of score_fn(prediction, item), n, missing}; a missing prediction scores 0."""
    scores = [score_fn(predictions[it['id']], it) if it['id'] in predictions else 0.0 for it in items]
    return OrderedDict([(name, 100.0 * sum(scores) / len(scores) if scores else 0.0), ('n', len(items)),
                        ('missing', sum(it['id'] not in predictions for it in items))])


def average_scorer(score_fn, name):
    """score(items, predictions) of a benchmark whose items carry `answers`: the mean of
    score_fn(prediction, answers), reported as `name` (VQA accuracy, ANLS, ...)."""
    def score(items, predictions):
        return average_of_scores(items, predictions, lambda p, it: score_fn(p, it['answers']), name)
    score.__name__ = f'{name}_scores'
    return score
