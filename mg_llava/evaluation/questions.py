"""Benchmark questions for generation and the ground truth to score them, looked up in the benchmark registry.

`load_questions(benchmark, data, image_folder, annotations)` -> list of
`{'id', 'text', 'image': {'path'} | {'b64'} | None, 'box_key', 'where'}` in file order, where `id` is the id the
scorer gives the same question (`score_data`), `text` is what follows "<image>\\n" in the user turn (spec 4.2,
the reference's prompt byte for byte), `box_key` is the key into the benchmark's box json (spec 4.3, as a
string) and `where` names the file and row/line.  Each benchmark's formats and prompts are described in its
module under `mg_llava.evaluation.benchmarks`; the shared readers are in `mg_llava.evaluation.loaders`.

`open_image(question)` decodes a question's image (PIL, imported only then).
"""
import base64
import io

from . import benchmarks as B
from .benchmarks.multiple_choice import MC_SUFFIX, MC_SUFFIX_CN, multiple_choice_text  # noqa: F401
from .benchmarks.textvqa import textvqa_question  # noqa: F401
from .loaders import SHORT_ANSWER, YES_NO, ScoreError, tsv_header  # noqa: F401

QUESTION_BENCHMARKS = B.names()


def load_questions(benchmark, data, image_folder=None, annotations=None):
    """Questions of `benchmark` in file order (see the benchmark's module for the formats)."""
    return B.get(benchmark).read_questions(str(data), image_folder, annotations and str(annotations))


def score_data(benchmark, data, annotations=None):
    """The scorer's items for the files `load_questions` read (the same `data` / `annotations`); None for a
    prediction-only benchmark or a TSV without an `answer` column (a test split)."""
    bench, data = B.get(benchmark), str(data)
    if not bench.scored or (data.endswith('.tsv') and 'answer' not in tsv_header(data)):
        return None
    return bench.read_answers(data, annotations and str(annotations))


def open_image(question):
    """The question's image as RGB PIL image, or None for a text-only question. The image is read by the one
    loader of the project (`mg_llava.data.preprocess.load_image`, imported here: the scorer stays torch-free);
    its ImageError becomes a ScoreError naming the question and its row of the benchmark file."""
    from mg_llava.data.preprocess import ImageError, load_image
    ref = question['image']
    if ref is None:
        return None
    if 'path' in ref:
        where = f'question {question["id"]}, {question["where"]}'
        try:
            return load_image(ref['path'])
        except ImageError as e:
            reason = 'image file not found' if e.reason == 'file not found' else f'unreadable image ({e.reason})'
            raise ScoreError(ref['path'], where, reason) from None
    try:  # xtuner decode_base64_to_image: b64decode + Image.open
        return load_image(io.BytesIO(base64.b64decode(ref['b64'])))
    except ValueError as e:  # binascii.Error and ImageError are ValueErrors
        reason = e.reason if isinstance(e, ImageError) else e
        raise ScoreError(question['where'], f'id {question["id"]}', f'bad base64 image ({reason})') from None
