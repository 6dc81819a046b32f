"""DocVQA val.

`data`: a VLMEvalKit TSV (`index`, `question`, base64 `image`, `answer` = one string or a Python list literal),
id = box key = `index`; or the official `val_v1.0.json` ({"data": [{questionId, question, image, answers}]}),
id = box key = `questionId`, images under `image_folder`.
Prompt: question + "\\nAnswer the question using a single word or phrase.".  Score: ANLS (`vqa_metrics.anls`).
"""
from .. import loaders as L
from ..benchmark_metrics import average_scorer
from ..vqa_metrics import anls
from . import Benchmark


def read_questions(data, image_folder=None, annotations=None):
    if data.endswith('.tsv'):
        return L.tsv_questions(data, lambda question: question + L.SHORT_ANSWER)
    out = []
    for i, q in enumerate(L.json_list(data, 'data')):
        where = f'data[{i}]'
        L.require_fields(data, where, q, 'questionId', 'question', 'image')
        key = L.norm_id(q['questionId'], data, where)
        out.append(L.question(key, q['question'] + L.SHORT_ANSWER,
                              L.folder_image(image_folder, q['image'], data, where), key, f'{data} {where}'))
    return out


def read_answers(data, annotations=None):
    if data.endswith('.tsv'):
        return L.tsv_answers(data)
    return L.json_answers(data, 'questionId')


def check_data(data, image_folder=None):
    if data.endswith('.tsv'):
        L.check_tsv_columns(data, 'index', 'question', 'image')
    else:
        L.check_json_records(data, 'data', ('questionId', 'question', 'image', 'answers'))


BENCHMARKS = (Benchmark('docvqa', read_questions=read_questions, read_answers=read_answers,
                        score=average_scorer(anls, 'anls'), headline_keys=('anls',), check_data=check_data,
                        image_folder='unless_tsv'),)
