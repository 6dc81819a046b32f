"""Official submission / judge-input files written next to the generic `<name>_predictions.jsonl`.

`write_outputs(benchmark, questions, predictions, out_dir, name)` -> list of the paths written, by the
benchmark's `write_submission` (`mg_llava.evaluation.benchmarks`): VQAv2, VizWiz, MM-Vet -> `<name>_submission.json`,
GQA -> `<name>_submission.json` (the official eval.py input), LLaVA-Bench -> `<name>_answers.jsonl`; each module
describes its file.  Other benchmarks write nothing.
"""
import os

from . import benchmarks as B


def write_outputs(benchmark, questions, predictions, out_dir, name, test_questions=None, model_id=None):
    """Write the official files of `benchmark` into out_dir; returns their paths.

    questions: `questions.load_questions` output; predictions: {id: text}; test_questions: vqav2 only, the
    full test2015 question jsonl; model_id: llava_bench `model_id` (default `name`)."""
    writer = B.get(benchmark).write_submission
    os.makedirs(out_dir, exist_ok=True)
    if writer is None:
        return []
    return writer(questions, predictions, out_dir, name, test_questions=test_questions, model_id=model_id)
