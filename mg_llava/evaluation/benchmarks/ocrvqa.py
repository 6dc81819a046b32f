"""OCR-VQA test.

`data`: a VLMEvalKit TSV (`index`, `question`, base64 `image`, `answer` = one string or a Python list literal);
id = box key = `index`.  Prompt: question + "\\nAnswer the question using a single word or phrase.".
Score: exact match after strip + lower, max over the gold answers (fork/xtuner `general_vqa_dataset.py`).
"""
from mg_llava.errors import ScoreError

from .. import loaders as L
from ..benchmark_metrics import average_scorer
from ..vqa_metrics import exact_match
from . import Benchmark


def read_questions(data, image_folder=None, annotations=None):
    if not data.endswith('.tsv'):
        raise ScoreError(data, '', 'ocrvqa questions are read from a VLMEvalKit .tsv file')
    return L.tsv_questions(data, lambda question: question + L.SHORT_ANSWER)


def read_answers(data, annotations=None):
    return L.tsv_answers(data)


BENCHMARKS = (Benchmark('ocrvqa', read_questions=read_questions, read_answers=read_answers,
                        score=average_scorer(exact_match, 'accuracy'), check_data=L.check_tsv_only('ocrvqa')),)
