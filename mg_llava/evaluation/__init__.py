"""Offline benchmark scoring (stdlib only: no torch, no pandas).

* `answer_extraction`: option letters and yes/no from free-form model output.
* `vqa_metrics`: per-question VQA soft accuracy, ANLS, ChartQA relaxed accuracy, GQA match.
* `benchmark_metrics`: benchmark aggregates (MMBench circular, MME, HallusionBench, POPE, GQA, ...).
* `loaders`: the public ground-truth formats and the predictions jsonl.
* `score`: the CLI, `python -m mg_llava.evaluation.score --benchmark NAME --data FILE --predictions PRED.jsonl`.

(`score` is not imported here, so that `python -m mg_llava.evaluation.score` runs it only once.)
"""
from .answer_extraction import (extract_option, extract_option_fork, mme_yes_no, pope_yes_no,
                                yorn_extraction)
from .benchmark_metrics import (gqa_scores, hallusion_scores, mme_scores, multiple_choice_scores, pope_scores)
from .loaders import ScoreError, hallusion_id, read_predictions
from .vqa_metrics import anls, normalize_answer, relaxed_accuracy, relaxed_correctness, vqa_soft_accuracy

__all__ = ['ScoreError', 'anls', 'extract_option', 'extract_option_fork', 'gqa_scores', 'hallusion_id',
           'hallusion_scores', 'mme_scores', 'mme_yes_no', 'multiple_choice_scores', 'normalize_answer',
           'pope_scores', 'pope_yes_no', 'read_predictions', 'relaxed_accuracy', 'relaxed_correctness',
           'vqa_soft_accuracy', 'yorn_extraction']
