"""ChartQA test.

`data`: the ChartQA `test_human.json` / `test_augmented.json` (a list of {imgname, query, label}), images
`imgname` under `image_folder`, id = box key = the 0-based position in the list; or a VLMEvalKit TSV (`index`,
`question`, base64 `image`, `answer`), id = `index`.
Prompt: query + "\\nAnswer the question using a single word or phrase.".  Score: relaxed accuracy (numbers within
5 %, else case-insensitive exact match; `vqa_metrics.relaxed_accuracy`).
"""
from mg_llava.errors import ScoreError

from .. import loaders as L
from ..benchmark_metrics import average_scorer
from ..vqa_metrics import relaxed_accuracy
from . import Benchmark


def read_questions(data, image_folder=None, annotations=None):
    if data.endswith('.tsv'):
        return L.tsv_questions(data, lambda question: question + L.SHORT_ANSWER)
    out = []
    for i, q in enumerate(L.json_list(data)):
        where = f'[{i}]'
        L.require_fields(data, where, q, 'imgname', 'query')
        out.append(L.question(str(i), q['query'] + L.SHORT_ANSWER,
                              L.folder_image(image_folder, q['imgname'], data, where), i, f'{data} {where}'))
    return out


def read_answers(data, annotations=None):
    if data.endswith('.tsv'):
        return L.tsv_answers(data)
    data_ = L.read_json(data)
    if not isinstance(data_, list):
        raise ScoreError(data, '', 'expected a JSON list of {"query", "label"} objects')
    items = []
    for i, q in enumerate(data_):
        where = f'[{i}]'
        if not isinstance(q, dict) or 'label' not in q:
            raise ScoreError(data, where, 'missing field "label"')
        label = q['label']
        items.append({'id': str(i), 'answers': [str(x) for x in label] if isinstance(label, list) else [str(label)],
                      '_where': where})
    return items


def check_data(data, image_folder=None):
    if data.endswith('.tsv'):
        L.check_tsv_columns(data, 'index', 'question', 'image')
    else:
        L.check_json_records(data, fields=('imgname', 'query', 'label'))  # label: the scorer's answer


BENCHMARKS = (Benchmark('chartqa', read_questions=read_questions, read_answers=read_answers,
                        score=average_scorer(relaxed_accuracy, 'relaxed_accuracy'),
                        headline_keys=('relaxed_accuracy',), check_data=check_data, image_folder='unless_tsv'),)
