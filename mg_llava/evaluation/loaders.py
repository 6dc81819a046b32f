"""Read benchmark ground truth and prediction files into the plain `items` lists of `benchmark_metrics`.

Every item has a string `id`, the key predictions must use.  Formats (the public files named in spec 4.3):

* multiple choice (mmbench, seed, sqa, ai2d, mmmu, mmstar): VLMEvalKit/LMUData TSV with columns `index`,
  `answer` (a letter), option columns `A`..`Z` (blank = no such option), optional `category`, `l2-category`,
  `split`; `question`, `hint` and the base64 `image` column are ignored.  id = `index`.  MMMU rows with a blank
  `A` are open questions: A := answer text, B := 'Other Answers', answer := 'A' (VLMEvalKit MMMU_preproc).
  A TSV without `answer` (test split) is an error: it cannot be scored locally.
* textvqa: `TextVQA_0.5.1_val.json` ({"data": [{question_id, answers[10]}...]}).  id = `question_id`.
  (LLaVA's `llava_textvqa_val_v051_ocr.jsonl` is not accepted: its `question_id` is the IMAGE id, not unique.)
* docvqa: DocVQA `val_v1.0.json` ({"data": [{questionId, answers}...]}), id = `questionId`; or a VLMEvalKit
  TSV (`index`, `answer` = one string or a Python list literal), id = `index`.
* ocrvqa: VLMEvalKit TSV (`index`, `answer` = one string or a Python list literal), id = `index`.
* chartqa: ChartQA `test_human.json` / `test_augmented.json` (list of {imgname, query, label}); id = the
  0-based position in the list.  Or a TSV with `index`, `answer`.
* mme: VLMEvalKit MME TSV (`index`, `category`, `answer` Yes/No, `image_path`), the format of spec 4.3 and the
  fork; id = `index`.  The two questions of an image are paired by `image_path`, or, without that column, by
  the `image` cell (VLMEvalKit stores a short row index in place of a repeated image).
* hallusion: the official `HallusionBench.json` (list of {category VD|VS, subcategory, visual_input, set_id,
  figure_id, question_id, gt_answer '1'|'0'}); id = "{category}_{subcategory}_{visual_input}_{set_id}_
  {figure_id}_{question_id}" (`hallusion_id`), which keeps set/figure/question at `_`-positions 3/4/5 like
  VLMEvalKit's index.  Or VLMEvalKit's TSV: `index` (positions 3/4/5 give set/figure/question), `category`,
  `l2-category` (= subcategory), `answer` Yes/No; id = `index`.
* pope: a directory with `coco_pope_{adversarial,popular,random}.json` (JSON lines {question_id, image, text,
  label}) or one such file.  question_ids restart at 0 in every split, so with a directory the id is
  "{split}/{question_id}" (e.g. "adversarial/17"); with a single file it is the bare question_id.
* gqa: official `testdev_balanced_questions.json` ({question_id: {answer, isBalanced, types{structural}}}),
  id = question_id.  With --annotations, --data is LLaVA's `llava_gqa_testdev_balanced.jsonl` (the questions
  asked) and the annotations file gives the answers.

Predictions: JSON lines {"id": ..., "prediction": "..."}; ids may be numbers or strings (12 and "12" are the
same id).  Errors name the file and the line/row.
"""
import ast
import csv
import json
import os
import re
import string
import sys

from mg_llava.errors import ScoreError


_INT_FLOAT = re.compile(r'-?\d+\.0+')


def norm_id(value, path='', where=''):
    """12, 12.0, "12", "12.0" -> "12"; other strings stripped; anything else is an error."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise ScoreError(path, where, f'id must be a string or an integer, got {value!r}')
    if isinstance(value, float):
        if not value.is_integer():
            raise ScoreError(path, where, f'id must be a string or an integer, got {value!r}')
        value = int(value)
    text = str(value).strip()
    return text.split('.')[0] if _INT_FLOAT.fullmatch(text) else text


def read_json(path):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ScoreError(path, f'line {e.lineno}', f'malformed JSON ({e.msg})') from None


def read_jsonl(path):
    """-> list of (line number, object)."""
    rows = []
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise ScoreError(path, f'line {lineno}', f'malformed JSON ({e.msg})') from None
    return rows


def iter_tsv(path):
    """Yield (row number, header, raw cells) of a TSV (header = row 1); cells are not stripped."""
    limit = sys.maxsize
    while True:  # base64 images exceed csv's default 128 KiB field limit
        try:
            csv.field_size_limit(limit)
            break
        except OverflowError:
            limit //= 2
    with open(path, encoding='utf-8', newline='') as f:
        reader = csv.reader(f, delimiter='\t')
        header = next(reader, None)
        if not header:
            raise ScoreError(path, '', 'empty TSV')
        header = [h.strip() for h in header]
        for rowno, cells in enumerate(reader, 2):
            if cells:
                yield rowno, header, cells


def read_tsv(path):
    """VLMEvalKit TSV -> list of (row number, dict).  The base64 `image` cell is not kept: only a short one
    (< 16 chars, a reference to another row's index) survives, as `_image_ref`."""
    rows = []
    for rowno, header, cells in iter_tsv(path):
        img_col = header.index('image') if 'image' in header else None
        row = {h: c.strip() for i, (h, c) in enumerate(zip(header, cells)) if i != img_col}
        if img_col is not None and img_col < len(cells) and 0 < len(cells[img_col]) < 16:
            row['_image_ref'] = cells[img_col].strip()
        rows.append((rowno, row))
    return rows


def _require(path, where, row, *keys):
    if not isinstance(row, dict):
        raise ScoreError(path, where, f'expected a JSON object, got {type(row).__name__}')
    for k in keys:
        if row.get(k) in (None, ''):
            raise ScoreError(path, where, f'missing field {k!r}')


def _unique(items, path):
    seen = set()
    for it in items:
        if it['id'] in seen:
            raise ScoreError(path, it.get('_where', ''), f'duplicate id {it["id"]!r}')
        seen.add(it['id'])
    return items


def read_predictions(path):
    """JSON lines {"id", "prediction"} -> {id: text}.  Numbers are accepted as text; null is an error."""
    preds = {}
    for lineno, obj in read_jsonl(path):
        where = f'line {lineno}'
        if not isinstance(obj, dict) or 'id' not in obj or 'prediction' not in obj:
            raise ScoreError(path, where, 'expected an object with "id" and "prediction"')
        key = norm_id(obj['id'], path, where)
        text = obj['prediction']
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = str(text)
        if not isinstance(text, str):
            raise ScoreError(path, where, f'prediction for id {key!r} must be a string, got {text!r}')
        if key in preds:
            raise ScoreError(path, where, f'duplicate prediction id {key!r}')
        preds[key] = text
    return preds


# ---------------------------------------------------------------------------------------------------------------
def load_multiple_choice(path, mmmu=False, circular=False):
    items = []
    for rowno, row in read_tsv(path):
        where = f'row {rowno}'
        if 'answer' not in row:
            raise ScoreError(path, '', 'no "answer" column (a test split?): it cannot be scored locally')
        _require(path, where, row, 'index')
        if mmmu and not row.get('A'):
            row['A'], row['B'] = row.get('answer', ''), 'Other Answers'
        options = {k: row[k] for k in string.ascii_uppercase if row.get(k)}
        answer = row.get('answer', '')
        if mmmu and answer not in string.ascii_uppercase:
            answer = 'A'  # VLMEvalKit: a non-letter MMMU answer is the re-formulated option A
        if answer not in options:
            raise ScoreError(path, where, f'answer {answer!r} is not one of its options {sorted(options)}')
        item = {'id': norm_id(row['index'], path, where), 'answer': answer, 'options': options,
                'category': row.get('category'), 'l2_category': row.get('l2-category'), 'split': row.get('split'),
                '_where': where}
        if circular:
            try:
                item['index'] = int(item['id'])
            except ValueError:
                raise ScoreError(path, where, f'circular evaluation needs an integer index, got {row["index"]!r}')
        items.append(item)
    return _unique(items, path)


def _data_list(path, obj, key='data'):
    data = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(data, list):
        raise ScoreError(path, '', f'expected a JSON object with a "{key}" list')
    return data


def _load_json_answers(path, id_key):
    """{"data": [{id_key: ..., "answers": [...]}, ...]} (TextVQA / DocVQA val files) -> items."""
    items = []
    for i, q in enumerate(_data_list(path, read_json(path))):
        where = f'data[{i}]'
        _require(path, where, q, id_key, 'answers')
        items.append({'id': norm_id(q[id_key], path, where), 'answers': list(q['answers']), '_where': where})
    return _unique(items, path)


def load_textvqa(path):
    return _load_json_answers(path, 'question_id')


def _answer_list(cell):
    if cell.startswith('[') and cell.endswith(']'):
        try:
            value = ast.literal_eval(cell)
            if isinstance(value, list):
                return [str(v) for v in value]
        except (ValueError, SyntaxError):
            pass
    return [cell]


def _load_tsv_answers(path):
    items = []
    for rowno, row in read_tsv(path):
        where = f'row {rowno}'
        _require(path, where, row, 'index', 'answer')
        items.append({'id': norm_id(row['index'], path, where), 'answers': _answer_list(row['answer']),
                      '_where': where})
    return _unique(items, path)


def load_docvqa(path):
    if path.endswith('.tsv'):
        return _load_tsv_answers(path)
    return _load_json_answers(path, 'questionId')


def load_ocrvqa(path):
    """VLMEvalKit OCRVQA TSV (`index`, `answer` = one string or a Python list literal); id = `index`."""
    return _load_tsv_answers(path)


def load_chartqa(path):
    if path.endswith('.tsv'):
        return _load_tsv_answers(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise ScoreError(path, '', 'expected a JSON list of {"query", "label"} objects')
    items = []
    for i, q in enumerate(data):
        where = f'[{i}]'
        if not isinstance(q, dict) or 'label' not in q:
            raise ScoreError(path, where, 'missing field "label"')
        label = q['label']
        items.append({'id': str(i), 'answers': [str(x) for x in label] if isinstance(label, list) else [str(label)],
                      '_where': where})
    return items


def _yes_no_label(path, where, value):
    v = str(value).strip().lower()
    if v not in ('yes', 'no'):
        raise ScoreError(path, where, f'answer must be Yes or No, got {value!r}')
    return v


def load_mme(path):
    items = []
    for rowno, row in read_tsv(path):
        where = f'row {rowno}'
        _require(path, where, row, 'index', 'category', 'answer')
        key = norm_id(row['index'], path, where)
        image = row.get('image_path') or (norm_id(row['_image_ref']) if row.get('_image_ref') else key)
        items.append({'id': key, 'category': row['category'], 'image': image,
                      'answer': _yes_no_label(path, where, row['answer']), '_where': where})
    return _unique(items, path)


HALLUSION_FIELDS = ('category', 'subcategory', 'visual_input', 'set_id', 'figure_id', 'question_id')


def hallusion_id(record):
    """Prediction id of one HallusionBench.json record."""
    return '_'.join(str(record[k]) for k in HALLUSION_FIELDS)


def load_hallusion(path):
    items = []
    if path.endswith('.tsv'):
        for rowno, row in read_tsv(path):
            where = f'row {rowno}'
            _require(path, where, row, 'index', 'answer')
            parts = row['index'].split('_')
            if len(parts) < 6:
                raise ScoreError(path, where, f'index {row["index"]!r} lacks the _set_figure_question fields')
            items.append({'id': row['index'], 'category': row.get('category', ''),
                          'subcategory': row.get('l2-category', ''), 'set_id': parts[3], 'figure_id': parts[4],
                          'question_id': parts[5], 'answer': _yes_no_label(path, where, row['answer']),
                          '_where': where})
        return _unique(items, path)
    data = read_json(path)
    if not isinstance(data, list):
        raise ScoreError(path, '', 'expected the HallusionBench.json list')
    for i, r in enumerate(data):
        where = f'[{i}]'
        _require(path, where, r, *HALLUSION_FIELDS, 'gt_answer')
        if str(r['gt_answer']) not in ('0', '1'):
            raise ScoreError(path, where, f'gt_answer must be "0" or "1", got {r["gt_answer"]!r}')
        item = {k: str(r[k]) for k in HALLUSION_FIELDS}
        item.update(id=hallusion_id(r), answer='yes' if str(r['gt_answer']) == '1' else 'no', _where=where)
        items.append(item)
    return _unique(items, path)


def _pope_split(filename):
    stem = os.path.splitext(os.path.basename(filename))[0]
    return stem[len('coco_pope_'):] if stem.startswith('coco_pope_') else stem


def pope_files(path):
    """A POPE directory or file -> [(file, split)]; the split names the ids only with several files."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.startswith('coco_pope_') and f.endswith('.json'))
        if not files:
            raise ScoreError(path, '', 'no coco_pope_<split>.json files in this directory')
    else:
        files = [path]
    return [(f, _pope_split(f)) for f in files]


def load_pope(path):
    files = pope_files(path)
    items = []
    for file, split in files:
        for lineno, q in read_jsonl(file):
            where = f'line {lineno}'
            if not isinstance(q, dict):
                raise ScoreError(file, where, 'expected a JSON object')
            _require(file, where, q, 'question_id', 'label')
            qid = norm_id(q['question_id'], file, where)
            items.append({'id': f'{split}/{qid}' if len(files) > 1 else qid, 'split': split,
                          'label': _yes_no_label(file, where, q['label']), '_where': f'{file} {where}'})
    return _unique(items, path)


def load_gqa(path, annotations=None):
    gt = read_json(annotations or path)
    if not isinstance(gt, dict):
        raise ScoreError(annotations or path, '', 'expected a JSON object {question_id: {answer, ...}}')
    if annotations:
        ids = []
        for lineno, q in read_jsonl(path):
            where = f'line {lineno}'
            _require(path, where, q, 'question_id')
            qid = norm_id(q['question_id'], path, where)
            if qid not in gt:
                raise ScoreError(path, where, f'question_id {qid!r} is not in {annotations}')
            ids.append(qid)
    else:
        ids = list(gt)
    items = []
    for qid in ids:
        q = gt[qid]
        if not isinstance(q, dict) or 'answer' not in q:
            raise ScoreError(annotations or path, qid, 'missing field "answer"')
        items.append({'id': norm_id(qid), 'answer': q['answer'], 'balanced': bool(q.get('isBalanced', True)),
                      'structural': (q.get('types') or {}).get('structural'), '_where': qid})
    return _unique(items, path)
