"""MM-Vet (prediction-only: judged by GPT with the official evaluator).

`data`: LLaVA's `llava-mm-vet.jsonl` ({question_id, image, text}, images under `image_folder`); id = box key =
question_id; prompt = text, verbatim.
Submission: `<name>_submission.json` `{"v1_<question_id>": prediction}`, indent 2 (`convert_mmvet_for_eval.py`);
questions without a prediction are left out.
"""
import os

from .. import loaders as L
from . import Benchmark


def read_questions(data, image_folder=None, annotations=None):
    return L.llava_jsonl_questions(data, image_folder)


def write_submission(questions, predictions, out_dir, name, test_questions=None, model_id=None):
    return [L.dump_json(os.path.join(out_dir, f'{name}_submission.json'),
                        {f'v1_{q["id"]}': predictions[q['id']] for q in questions if q['id'] in predictions},
                        indent=2)]


BENCHMARKS = (Benchmark('mmvet', read_questions=read_questions, headline_keys=(), write_submission=write_submission,
                        check_data=L.check_llava_jsonl, image_folder='required'),)
