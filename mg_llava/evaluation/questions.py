"""Benchmark questions for generation: id, prompt text (spec 4.2), image reference and box key per question.

`load_questions(benchmark, data, image_folder, annotations)` -> list of
`{'id', 'text', 'image': {'path'} | {'b64'} | None, 'box_key', 'where'}` in file order, where `id` is the id the
scorer (`loaders` / `score.load_items`) gives the same question, `text` is what follows "<image>\\n" in the
user turn, `box_key` is the key into the benchmark's box json (spec 4.3, as a string) and `where` names the file
and row/line.  Input formats are the scorer's (see `loaders`), plus:

* textvqa: `data` = LLaVA `llava_textvqa_val_v051_ocr.jsonl` (question_id = IMAGE id, the box key),
  `annotations` = official `TextVQA_0.5.1_val.json`; each line is mapped to the official question_id by
  (image id, question.lower()) with the question recovered from the prompt as xtuner's `prompt_processor`.
* gqa: `data` = LLaVA `llava_gqa_testdev_balanced.jsonl` (+ `annotations` = official questions json to score).
* docvqa / ocrvqa / chartqa: VLMEvalKit TSV `index, image, question[, answer]`; also DocVQA `val_v1.0.json`
  (`image` under image_folder) and the ChartQA json list (`imgname` under image_folder, id = position).
* vqav2 / vizwiz / llava_bench / mmvet: LLaVA jsonl {question_id, image, text}; prediction-only.

TSV cells are used unstripped (the reference reads them with pandas); an empty cell is an absent one.  An
image cell shorter than 16 characters is the `index` of the row holding the image (VLMEvalKit).
"""
import base64
import binascii
import io
import os
import re
import string

from . import loaders
from .loaders import ScoreError, norm_id, read_json, read_jsonl
from .score import BENCHMARKS, MULTIPLE_CHOICE, load_items

MC_SUFFIX = "Answer with the option's letter from the given choices directly."
MC_SUFFIX_CN = '请直接回答选项字母。'
SHORT_ANSWER = '\nAnswer the question using a single word or phrase.'
YES_NO = '\nPlease answer the question with yes or no.'
MME_FROM, MME_TO = 'Please answer yes or no.', 'Please answer the question only a single word yes or no.'
_CJK = re.compile('[\u4e00-\u9fff]')  # xtuner is_cn_string

GVQA = ('docvqa', 'ocrvqa', 'chartqa')
LLAVA_JSONL = ('vqav2', 'vizwiz', 'llava_bench', 'mmvet')
QUESTION_BENCHMARKS = BENCHMARKS + tuple(b for b in GVQA + LLAVA_JSONL if b not in BENCHMARKS)


def multiple_choice_text(question, options, hint=None):
    """Spec 4.2 multiple-choice prompt; options = [(letter, text)] in order."""
    text = (hint + '\n' if hint else '') + question + '\n' + ''.join(f'{k}. {v}\n' for k, v in options)
    return text + (MC_SUFFIX_CN if _CJK.search(text) else MC_SUFFIX)


def _question(id_, text, image, box_key, where):
    return {'id': id_, 'text': text, 'image': image, 'box_key': str(box_key), 'where': where}


def _folder_image(image_folder, rel, path, where):
    if not image_folder:
        raise ScoreError(path, where, 'this benchmark reads images from a folder: image_folder is required')
    return {'path': os.path.abspath(os.path.join(image_folder, str(rel)))}


def _cell(path, where, row, key):
    value = row.get(key, '')
    if value == '':
        raise ScoreError(path, where, f'missing {key!r}')
    return value


# ---------------------------------------------------------------------------------------------------------------
def _tsv_header(path):
    with open(path, encoding='utf-8') as f:
        return [h.strip() for h in f.readline().rstrip('\r\n').split('\t')]


def _read_tsv(path, *required):
    """-> (header, [(rowno, {column: raw cell})]); a required column absent from the header is an error."""
    rows, header = [], None
    for rowno, header, cells in loaders.iter_tsv(path):
        rows.append((rowno, dict(zip(header, cells))))
    header = header or _tsv_header(path)  # no data rows: the header alone, for the column check
    for key in required:
        if key not in header:
            raise ScoreError(path, 'row 1', f'no {key!r} column')
    return header, rows


def _tsv_images(path, rows, optional=False):
    """Resolve every row's `image` cell: base64, or a short cell naming another row's index -> [{'b64'}|None]."""
    by_index = {norm_id(r.get('index', ''), path, f'row {n}'): r.get('image', '').strip() for n, r in rows}
    out = []
    for rowno, row in rows:
        cell, seen = row.get('image', '').strip(), []
        while 0 < len(cell) < 16:
            seen.append(norm_id(cell))
            if seen[-1] not in by_index or seen.count(seen[-1]) > 1:
                raise ScoreError(path, f'row {rowno}', f'image cell refers to index {seen[-1]!r}, which is not a '
                                 'row with an image')
            cell = by_index[seen[-1]]
        if not cell and not optional:
            raise ScoreError(path, f'row {rowno}', 'empty image cell')
        out.append({'b64': cell} if cell else None)
    return out


def _load_multiple_choice(path, mmmu):
    _, rows = _read_tsv(path, 'index', 'question', 'image')
    images = _tsv_images(path, rows)
    out = []
    for (rowno, row), image in zip(rows, images):
        where = f'row {rowno}'
        key = norm_id(_cell(path, where, row, 'index'), path, where)
        if mmmu and not row.get('A'):  # VLMEvalKit/xtuner MMMU_preproc: open question -> 2 options
            row = dict(row, A=row.get('answer', ''), B='Other Answers')
        options = [(k, row[k]) for k in string.ascii_uppercase if row.get(k)]
        text = multiple_choice_text(_cell(path, where, row, 'question'), options, row.get('hint') or None)
        out.append(_question(key, text, image, key, f'{path} {where}'))
    return out


def _load_tsv_simple(benchmark, path, image_folder):
    """docvqa/ocrvqa/chartqa/mme/hallusion TSVs: id = index (hallusion: unnormalised, as its loader)."""
    mme_folder = benchmark == 'mme' and image_folder
    _, rows = _read_tsv(path, 'index', 'question', *(['image_path'] if mme_folder else ['image']))
    images = [None] * len(rows) if mme_folder else _tsv_images(path, rows, optional=benchmark == 'hallusion')
    out = []
    for (rowno, row), image in zip(rows, images):
        where = f'row {rowno}'
        index = _cell(path, where, row, 'index')
        key = index.strip() if benchmark == 'hallusion' else norm_id(index, path, where)
        question = _cell(path, where, row, 'question')
        if benchmark == 'mme':
            text = question.replace(MME_FROM, MME_TO)
            if mme_folder:  # the reference reads image_folder/image_path
                image = _folder_image(image_folder, _cell(path, where, row, 'image_path'), path, where)
        else:
            text = question + (YES_NO if benchmark == 'hallusion' else SHORT_ANSWER)
        out.append(_question(key, text, image, key, f'{path} {where}'))
    return out


# ---------------------------------------------------------------------------------------------------------------
def _json_list(path, key=None):
    data = read_json(path)
    if key is not None:
        data = data.get(key) if isinstance(data, dict) else None
    if not isinstance(data, list):
        raise ScoreError(path, '', f'expected a JSON list{f" under {key!r}" if key else ""}')
    return data


def _require(path, where, obj, *keys):
    if not isinstance(obj, dict):
        raise ScoreError(path, where, 'expected a JSON object')
    for k in keys:
        if obj.get(k) in (None, ''):
            raise ScoreError(path, where, f'missing field {k!r}')


def _load_chartqa_json(path, image_folder):
    out = []
    for i, q in enumerate(_json_list(path)):
        where = f'[{i}]'
        _require(path, where, q, 'imgname', 'query')
        out.append(_question(str(i), q['query'] + SHORT_ANSWER, _folder_image(image_folder, q['imgname'], path,
                                                                              where), i, f'{path} {where}'))
    return out


def _load_docvqa_json(path, image_folder):
    out = []
    for i, q in enumerate(_json_list(path, 'data')):
        where = f'data[{i}]'
        _require(path, where, q, 'questionId', 'question', 'image')
        key = norm_id(q['questionId'], path, where)
        out.append(_question(key, q['question'] + SHORT_ANSWER,
                             _folder_image(image_folder, q['image'], path, where), key, f'{path} {where}'))
    return out


def _load_hallusion_json(path, image_folder):
    out = []
    for i, r in enumerate(_json_list(path)):
        where = f'[{i}]'
        _require(path, where, r, *loaders.HALLUSION_FIELDS, 'question')
        image = None  # visual_input '0': a text-only question
        if str(r['visual_input']) != '0':
            _require(path, where, r, 'filename')
            image = _folder_image(image_folder, r['filename'], path, where)
        key = loaders.hallusion_id(r)
        out.append(_question(key, r['question'] + YES_NO, image, key, f'{path} {where}'))
    return out


def _load_jsonl(path, image_folder, suffix='', id_fn=None):
    """LLaVA question jsonl {question_id, image, text}; id = question_id (or id_fn(qid))."""
    out = []
    for lineno, q in read_jsonl(path):
        where = f'line {lineno}'
        _require(path, where, q, 'question_id', 'image', 'text')
        qid = norm_id(q['question_id'], path, where)
        out.append(_question(id_fn(qid) if id_fn else qid, q['text'] + suffix,
                             _folder_image(image_folder, q['image'], path, where), qid, f'{path} {where}'))
    return out


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


def _load_textvqa(path, image_folder, annotations):
    if not annotations:
        raise ScoreError(path, '', 'textvqa needs annotations (the official TextVQA_0.5.1_val.json)')
    official = {}  # (image_id, question.lower()) -> [question_id, ...] in file order
    for i, a in enumerate(_json_list(annotations, 'data')):
        _require(annotations, f'data[{i}]', a, 'question_id', 'image_id', 'question')
        official.setdefault((str(a['image_id']), a['question'].lower()), []).append(
            norm_id(a['question_id'], annotations, f'data[{i}]'))
    used = {}
    questions = _load_jsonl(path, image_folder)
    for q in questions:
        # The reference keeps only the last annotation of a repeated (image, question); here the n-th repeat in
        # the jsonl takes the n-th official question, so ids stay unique and match the scorer's.
        key = (q['box_key'], textvqa_question(q['text']))
        n = used[key] = used.get(key, -1) + 1
        if key[1] is None:
            raise ScoreError(q['where'], '', 'cannot find the question in this prompt')
        if n >= len(official.get(key, ())):
            raise ScoreError(q['where'], '', f'no{" further" if n else ""} question of image {key[0]!r} in '
                             f'{annotations} matches {key[1]!r}')
        q['id'] = official[key][n]
    return questions


# ---------------------------------------------------------------------------------------------------------------
def load_questions(benchmark, data, image_folder=None, annotations=None):
    """Questions of `benchmark` in file order (see the module docstring for the formats)."""
    if benchmark not in QUESTION_BENCHMARKS:
        raise ValueError(f'unknown benchmark {benchmark!r}; choose from {", ".join(QUESTION_BENCHMARKS)}')
    data = str(data)
    if benchmark in MULTIPLE_CHOICE:
        return _load_multiple_choice(data, mmmu=benchmark == 'mmmu')
    if benchmark == 'textvqa':
        return _load_textvqa(data, image_folder, annotations)
    if benchmark in ('gqa', 'vqav2', 'vizwiz', 'llava_bench', 'mmvet'):
        return _load_jsonl(data, image_folder)
    if benchmark == 'pope':
        files = loaders.pope_files(data)
        return [q for file, split in files
                for q in _load_jsonl(file, image_folder, YES_NO, (lambda qid, s=split: f'{s}/{qid}')
                                     if len(files) > 1 else None)]
    if data.endswith('.tsv'):
        return _load_tsv_simple(benchmark, data, image_folder)
    if benchmark in ('chartqa', 'docvqa', 'hallusion'):
        return {'chartqa': _load_chartqa_json, 'docvqa': _load_docvqa_json,
                'hallusion': _load_hallusion_json}[benchmark](data, image_folder)
    raise ScoreError(data, '', f'{benchmark} questions are read from a VLMEvalKit .tsv file')


def score_data(benchmark, data, annotations=None):
    """The scorer's items for the files `load_questions` read; None for a prediction-only benchmark or a TSV
    without an `answer` column (a test split)."""
    data = str(data)
    if benchmark in LLAVA_JSONL:
        return None
    if benchmark == 'textvqa':
        if not annotations:
            raise ScoreError(data, '', 'textvqa scoring needs annotations (TextVQA_0.5.1_val.json)')
        return loaders.load_textvqa(str(annotations))
    if benchmark == 'gqa':
        if not annotations:
            raise ScoreError(data, '', 'gqa scoring needs annotations (testdev_balanced_questions.json)')
        return loaders.load_gqa(data, str(annotations))
    if data.endswith('.tsv') and 'answer' not in _tsv_header(data):
        return None
    return load_items(benchmark, data)


def open_image(question):
    """The question's image as RGB PIL image, or None for a text-only question."""
    from PIL import Image, UnidentifiedImageError
    ref = question['image']
    if ref is None:
        return None
    if 'path' in ref:
        where = f'question {question["id"]}, {question["where"]}'
        if not os.path.isfile(ref['path']):
            raise ScoreError(ref['path'], where, 'image file not found')
        try:
            with Image.open(ref['path']) as image:
                return image.convert('RGB')
        except (UnidentifiedImageError, OSError) as e:
            raise ScoreError(ref['path'], where, f'unreadable image ({e})') from None
    try:  # xtuner decode_base64_to_image: b64decode + Image.open
        with Image.open(io.BytesIO(base64.b64decode(ref['b64']))) as image:
            return image.convert('RGB')
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as e:
        raise ScoreError(question['where'], f'id {question["id"]}', f'bad base64 image ({e})') from None
