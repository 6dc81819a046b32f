"""VQAv2 test-dev / test (prediction-only: scored by the EvalAI server).

`data`: a LLaVA question jsonl ({question_id, image, text}, images under `image_folder`), e.g.
`llava_vqav2_mscoco_test-dev2015.jsonl`; id = box key = question_id; prompt = text, verbatim.
`test_questions` (optional entry key): the full `llava_vqav2_mscoco_test2015.jsonl`, so that the submission
lists every test question.
Submission: `<name>_submission.json` `[{"question_id": int, "answer"}]`, answer = EvalAI-normalised prediction
(LLaVA `scripts/convert_vqav2_for_submission.py`); with `test_questions` the list follows that file and questions
without a prediction get ''; without it, questions without a prediction are left out.
"""
import os

from mg_llava.errors import ScoreError

from .. import loaders as L
from ..vqa_metrics import normalize_answer
from . import Benchmark


def read_questions(data, image_folder=None, annotations=None):
    return L.llava_jsonl_questions(data, image_folder)


def write_submission(questions, predictions, out_dir, name, test_questions=None, model_id=None):
    if test_questions is None:
        rows = [{'question_id': L.json_id(q['id']), 'answer': normalize_answer(predictions[q['id']])}
                for q in questions if q['id'] in predictions]
    else:
        rows = []
        for lineno, x in L.read_jsonl(test_questions):
            if not isinstance(x, dict) or 'question_id' not in x:
                raise ScoreError(test_questions, f'line {lineno}', 'missing field "question_id"')
            key = L.norm_id(x['question_id'], test_questions, f'line {lineno}')
            rows.append({'question_id': x['question_id'],
                         'answer': normalize_answer(predictions[key]) if key in predictions else ''})
    return [L.dump_json(os.path.join(out_dir, f'{name}_submission.json'), rows)]


BENCHMARKS = (Benchmark('vqav2', read_questions=read_questions, headline_keys=(), write_submission=write_submission,
                        check_data=L.check_llava_jsonl, image_folder='required'),)
