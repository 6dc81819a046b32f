"""Official submission / judge-input files written next to the generic `<name>_predictions.jsonl`.

`write_outputs(benchmark, questions, predictions, out_dir, name)` -> list of the paths written:

* vqav2 -> `<name>_submission.json` `[{"question_id": int, "answer"}]`, answer = EvalAI-normalised prediction
  (LLaVA `scripts/convert_vqav2_for_submission.py`); with `test_questions` (the full
  `llava_vqav2_mscoco_test2015.jsonl`) the list follows that file and questions without a prediction get ''.
* vizwiz -> `<name>_submission.json` `[{"image": file name, "answer"}]`, EvalAI-normalised
  (`convert_vizwiz_for_submission.py`; like it, a question without a prediction is an error).
* mmvet -> `<name>_submission.json` `{"v1_<qid>": prediction}`, indent 2 (`convert_mmvet_for_eval.py`).
* llava_bench -> `<name>_answers.jsonl` {question_id, prompt, text, answer_id, model_id, metadata}, the file
  LLaVA's `model_vqa.py` writes and its GPT review scripts read.
* gqa -> `<name>_submission.json` `[{"questionId", "prediction": rstrip('.').lower()}]`, the input of the
  official GQA `eval.py` (`convert_gqa_for_eval.py`; the reference GQADataset.evaluate).

Other benchmarks write nothing.  Except where noted, questions without a prediction are left out (the
reference converts only the answers it has).
"""
import json
import os
import uuid

from .loaders import ScoreError, norm_id, read_jsonl
from .vqa_metrics import gqa_normalize, normalize_answer


def _json_id(key):
    """'12' -> 12 (LLaVA files carry integer question ids); anything else stays a string."""
    return int(key) if key.isdigit() and str(int(key)) == key else key


def _dump(path, obj, **kw):
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, **kw)
    return path


def _vqav2(questions, predictions, test_questions):
    if test_questions is None:
        return [{'question_id': _json_id(q['id']), 'answer': normalize_answer(predictions[q['id']])}
                for q in questions if q['id'] in predictions]
    out = []
    for lineno, x in read_jsonl(test_questions):
        if not isinstance(x, dict) or 'question_id' not in x:
            raise ScoreError(test_questions, f'line {lineno}', 'missing field "question_id"')
        key = norm_id(x['question_id'], test_questions, f'line {lineno}')
        out.append({'question_id': x['question_id'],
                    'answer': normalize_answer(predictions[key]) if key in predictions else ''})
    return out


def _vizwiz(questions, predictions, path):
    out = []
    for q in questions:
        if q['id'] not in predictions:
            raise ScoreError(q['where'], f'id {q["id"]}', f'no prediction; a VizWiz submission ({path}) needs '
                             'an answer for every question')
        out.append({'image': os.path.basename(q['image']['path']), 'answer': normalize_answer(predictions[q['id']])})
    return out


def write_outputs(benchmark, questions, predictions, out_dir, name, test_questions=None, model_id=None):
    """Write the official files of `benchmark` (module docstring) into out_dir; returns their paths.

    questions: `questions.load_questions` output; predictions: {id: text}; test_questions: vqav2 only, the
    full test2015 question jsonl; model_id: llava_bench `model_id` (default `name`)."""
    os.makedirs(out_dir, exist_ok=True)
    answered = [q for q in questions if q['id'] in predictions]
    submission = os.path.join(out_dir, f'{name}_submission.json')
    if benchmark == 'vqav2':
        return [_dump(submission, _vqav2(questions, predictions, test_questions))]
    if benchmark == 'vizwiz':
        return [_dump(submission, _vizwiz(questions, predictions, submission))]
    if benchmark == 'mmvet':
        return [_dump(submission, {f'v1_{q["id"]}': predictions[q['id']] for q in answered}, indent=2)]
    if benchmark == 'gqa':
        return [_dump(submission, [{'questionId': q['id'], 'prediction': gqa_normalize(predictions[q['id']])}
                                   for q in answered])]
    if benchmark == 'llava_bench':
        path = os.path.join(out_dir, f'{name}_answers.jsonl')
        with open(path, 'w', encoding='utf-8') as f:
            for q in answered:
                f.write(json.dumps({'question_id': _json_id(q['id']), 'prompt': q['text'],
                                    'text': predictions[q['id']], 'answer_id': uuid.uuid4().hex,
                                    'model_id': model_id or name, 'metadata': {}}) + '\n')
        return [path]
    return []
