"""Offline benchmark scoring (stdlib only: no torch, no pandas).

* `benchmarks`: the registry, one module per benchmark family (files, prompts, ids, ground truth, metric,
  submission files, entry checks); `benchmarks.get(name)`.
* `answer_extraction`: option letters and yes/no from free-form model output.
* `vqa_metrics`: per-question VQA soft accuracy, ANLS, ChartQA relaxed accuracy, GQA match.
* `benchmark_metrics`: helpers shared by the benchmark aggregates.
* `loaders`: the shared readers (JSON, JSONL, TSV, ids, predictions files, question records, entry checks).
* `score`: the CLI, `python -m mg_llava.evaluation.score --benchmark NAME --data FILE --predictions PRED.jsonl`.

(`score` is not imported here, so that `python -m mg_llava.evaluation.score` runs it only once.)
"""
from .answer_extraction import (extract_option, extract_option_fork, mme_yes_no, pope_yes_no,
                                yorn_extraction)
from .benchmarks.gqa import gqa_scores
from .benchmarks.hallusion import hallusion_id, hallusion_scores
from .benchmarks.mme import mme_scores
from .benchmarks.multiple_choice import multiple_choice_scores
from .benchmarks.pope import pope_scores
from .loaders import ScoreError, read_predictions
from .vqa_metrics import anls, normalize_answer, relaxed_accuracy, relaxed_correctness, vqa_soft_accuracy

__all__ = ['ScoreError', 'anls', 'extract_option', 'extract_option_fork', 'gqa_scores', 'hallusion_id',
           'hallusion_scores', 'mme_scores', 'mme_yes_no', 'multiple_choice_scores', 'normalize_answer',
           'pope_scores', 'pope_yes_no', 'read_predictions', 'relaxed_accuracy', 'relaxed_correctness',
           'vqa_soft_accuracy', 'yorn_extraction']
