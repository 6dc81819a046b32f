"""VizWiz-VQA test (prediction-only: scored by the EvalAI server).

`data`: a LLaVA question jsonl ({question_id, image, text}, images under `image_folder`), e.g.
`llava_test.jsonl`; id = box key = question_id; prompt = text, verbatim.
Submission: `<name>_submission.json` `[{"image": file name, "answer"}]`, EvalAI-normalised
(`convert_vizwiz_for_submission.py`; like it, a question without a prediction is an error).
"""
import os

from mg_llava.errors import ScoreError

from .. import loaders as L
from ..vqa_metrics import normalize_answer
from . import Benchmark


def read_questions(data, image_folder=None, annotations=None):
    return L.llava_jsonl_questions(data, image_folder)


def write_submission(questions, predictions, out_dir, name, test_questions=None, model_id=None):
    path = os.path.join(out_dir, f'{name}_submission.json')
    rows = []
    for q in questions:
        if q['id'] not in predictions:
            raise ScoreError(q['where'], f'id {q["id"]}', f'no prediction; a VizWiz submission ({path}) needs '
                             'an answer for every question')
        rows.append({'image': os.path.basename(q['image']['path']), 'answer': normalize_answer(predictions[q['id']])})
    return [L.dump_json(path, rows)]


BENCHMARKS = (Benchmark('vizwiz', read_questions=read_questions, headline_keys=(),
                        write_submission=write_submission, check_data=L.check_llava_jsonl,
                        image_folder='required'),)
