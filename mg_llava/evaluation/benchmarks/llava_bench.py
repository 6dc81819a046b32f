"""LLaVA-Bench (in-the-wild / COCO; prediction-only: judged by GPT with LLaVA's review scripts).

`data`: LLaVA's `questions.jsonl` ({question_id, image, text}, images under `image_folder`); id = box key =
question_id; prompt = text, verbatim.
Output: `<name>_answers.jsonl` {question_id, prompt, text, answer_id, model_id, metadata}, the file LLaVA's
`model_vqa.py` writes and its GPT review scripts read (model_id: the entry name unless given); questions without
a prediction are left out.
"""
import json
import os
import uuid

from .. import loaders as L
from . import Benchmark


def read_questions(data, image_folder=None, annotations=None):
    return L.llava_jsonl_questions(data, image_folder)


def write_submission(questions, predictions, out_dir, name, test_questions=None, model_id=None):
    path = os.path.join(out_dir, f'{name}_answers.jsonl')
    with open(path, 'w', encoding='utf-8') as f:
        for q in questions:
            if q['id'] in predictions:
                f.write(json.dumps({'question_id': L.json_id(q['id']), 'prompt': q['text'],
                                    'text': predictions[q['id']], 'answer_id': uuid.uuid4().hex,
                                    'model_id': model_id or name, 'metadata': {}}) + '\n')
    return [path]


BENCHMARKS = (Benchmark('llava_bench', read_questions=read_questions, headline_keys=(),
                        write_submission=write_submission, check_data=L.check_llava_jsonl,
                        image_folder='required'),)
