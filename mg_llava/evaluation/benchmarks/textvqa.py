"""TextVQA val (LLaVA's question file + the official answers).

`data`: LLaVA `llava_textvqa_val_v051_ocr.jsonl` ({question_id, image, text}); its question_id is the IMAGE id,
shared by the image's questions (it is the box key).  `annotations`: the official `TextVQA_0.5.1_val.json`
({"data": [{question_id, image_id, question, answers[10]}, ...]}).  `image_folder`: the train_images folder.

* Ids: each jsonl line is mapped to the official question_id by (image id, question.lower()), the question
  recovered from the prompt as xtuner's `prompt_processor` (LLaVA `eval_textvqa.py`).  The reference keeps only
  the last annotation of a repeated (image, question); here the n-th repeat in the jsonl takes the n-th official
  question, so ids stay unique.
* Prompt: the jsonl `text`, verbatim.
* Ground truth: every question of `annotations` (without `annotations`, the scorer also takes the official json
  itself as `data`).  Score: VQA soft accuracy (m4c `TextVQAAccuracyEvaluator`).
* Predictions may be keyed by the official question_id (what the evaluation loop writes), or be LLaVA's own
  answer file ({question_id = image id, prompt, text}: resolved like `eval_textvqa.py`, the n-th answer to a
  repeated (image, question) taking the n-th question), or use the jsonl question_id as id when that image has
  a single question in `data`.
"""
import re

from mg_llava.errors import ScoreError

from .. import loaders as L
from ..benchmark_metrics import average_scorer
from ..vqa_metrics import vqa_soft_accuracy
from . import Benchmark


def textvqa_question(prompt):
    """xtuner `textvqa_dataset.prompt_processor`: the question of a LLaVA TextVQA prompt, lower-cased (or None)."""
    lines = prompt.split('\n')
    if prompt.startswith('OCR tokens: '):
        match = re.search(r'Question: (.*?) Short answer:', prompt, re.DOTALL)
        question = match.group(1) if match else None
    elif 'Reference OCR token: ' in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith('Reference OCR token:') else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        question = None
    return None if question is None else question.lower()


def read_questions(data, image_folder=None, annotations=None, images=True):
    if not annotations:
        raise ScoreError(data, '', 'textvqa needs annotations (the official TextVQA_0.5.1_val.json)')
    official = {}  # (image_id, question.lower()) -> [question_id, ...] in file order
    for i, a in enumerate(L.json_list(annotations, 'data')):
        L.require_fields(annotations, f'data[{i}]', a, 'question_id', 'image_id', 'question')
        official.setdefault((str(a['image_id']), a['question'].lower()), []).append(
            L.norm_id(a['question_id'], annotations, f'data[{i}]'))
    used = {}
    questions = L.llava_jsonl_questions(data, image_folder, images=images)
    for q in questions:
        key = (q['box_key'], textvqa_question(q['text']))
        n = used[key] = used.get(key, -1) + 1
        if key[1] is None:
            raise ScoreError(q['where'], '', 'cannot find the question in this prompt')
        if n >= len(official.get(key, ())):
            raise ScoreError(q['where'], '', f'no{" further" if n else ""} question of image {key[0]!r} in '
                             f'{annotations} matches {key[1]!r}')
        q['id'] = official[key][n]
    return questions


def read_answers(data, annotations=None):
    if annotations:
        return L.json_answers(annotations, 'question_id')
    if data.endswith('.jsonl'):
        raise ScoreError(data, '', 'textvqa scoring needs annotations (TextVQA_0.5.1_val.json)')
    return L.json_answers(data, 'question_id')  # the official file given as `data`


def prediction_resolver(items, data, annotations=None):
    """Keys of LLaVA's answer files: (jsonl question_id = image id, prompt) or a jsonl question_id that names one
    question (see the module docstring)."""
    if not annotations:
        return None
    by_image, by_question = {}, {}
    for q in read_questions(data, None, annotations, images=False):
        by_image.setdefault(q['box_key'], []).append(q['id'])
        by_question.setdefault((q['box_key'], textvqa_question(q['text'])), []).append(q['id'])
    taken = {}

    def resolve(key, prompt):
        if prompt is not None:
            pair = (key, textvqa_question(prompt))
            ids = by_question.get(pair, [])
            if ids:
                n = taken[pair] = taken.get(pair, -1) + 1
                if n < len(ids):
                    return ids[n], ''
                return None, (f'answer {n + 1} to image {key!r} and question {pair[1]!r}: {data} asks it only '
                              f'{len(ids)} time(s)')
        ids = by_image.get(key, [])
        if len(ids) == 1:
            return ids[0], ''
        if ids:
            return None, (f'prediction id {key!r} is the question_id of {len(ids)} questions in {data} (LLaVA keys '
                          'TextVQA by image): key each prediction by the official question_id, or give its '
                          '"prompt" as LLaVA\'s answer files do')
        return None, ''
    return resolve


def check_annotations(path):
    L.check_json_records(path, 'data', ('question_id', 'image_id', 'question', 'answers'))


BENCHMARKS = (Benchmark('textvqa', read_questions=read_questions, read_answers=read_answers,
                        score=average_scorer(vqa_soft_accuracy, 'accuracy'), check_data=L.check_llava_jsonl,
                        check_annotations=check_annotations, image_folder='required', needs_annotations=True,
                        prediction_resolver=prediction_resolver),)
