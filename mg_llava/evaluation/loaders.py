"""What every benchmark module shares (`mg_llava.evaluation.benchmarks`): file readers, ids, prediction files,
question records, entry-file checks and the common prompt suffixes.  Stdlib only; nothing here knows a
benchmark by name (each benchmark's formats are described in its own module).

* Ids: every question and ground-truth item has a string `id`, the key predictions use; `norm_id` makes
  12, 12.0, "12" and "12.0" the same id.
* Readers: `read_json`, `read_jsonl` (-> [(line number, object)]), `iter_tsv` / `read_tsv` (VLMEvalKit TSVs,
  base64 image cells), `read_tsv_cells` (raw cells, for prompts), `json_list`.  Errors are `ScoreError`s naming
  the file and the line / row.
* Predictions: JSON lines {"id": ..., "prediction": "..."} (what the evaluation loop writes), or LLaVA's answer
  files {"question_id": ..., "prompt": "...", "text": "..."} (`model_vqa*.py`); ids may be numbers or strings.
* Question records (`question`): {'id', 'text', 'image': {'path'} | {'b64'} | None, 'box_key', 'where'}; `text`
  is what follows "<image>\\n" in the user turn, `box_key` the key into the benchmark's box json.
* Entry checks (`check_*`): cheap looks at an evaluation entry's files (a JSONL or TSV file is read up to its
  first record) raising `DataError` whose `reason` says what is wrong.
"""
import ast
import csv
import json
import os
import re
import sys

from mg_llava.errors import DataError, ScoreError, require

SHORT_ANSWER = '\nAnswer the question using a single word or phrase.'
YES_NO = '\nPlease answer the question with yes or no.'
JSONL_FIELDS = ('question_id', 'image', 'text')  # a LLaVA question jsonl line

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


def json_id(key):
    """'12' -> 12 (LLaVA files carry integer question ids); anything else stays a string."""
    return int(key) if key.isdigit() and str(int(key)) == key else key


def require_fields(path, where, obj, *keys):
    """`mg_llava.errors.require` raising `ScoreError` (the error of every reader here)."""
    require(path, where, obj, *keys, error=ScoreError)


# --------------------------------------------------------------------------------------------------- readers
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


def json_list(path, key=None):
    """The JSON list in `path` (or under `key` of its object)."""
    data = read_json(path)
    if key is not None:
        data = data.get(key) if isinstance(data, dict) else None
    if not isinstance(data, list):
        raise ScoreError(path, '', f'expected a JSON list{f" under {key!r}" if key else ""}')
    return data


def data_list(path, obj, key='data'):
    """obj[key], which must be a list (ground-truth files {"data": [...]})."""
    data = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(data, list):
        raise ScoreError(path, '', f'expected a JSON object with a "{key}" list')
    return data


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


def tsv_header(path):
    with open(path, encoding='utf-8') as f:
        return [h.strip() for h in f.readline().rstrip('\r\n').split('\t')]


def read_tsv(path):
    """VLMEvalKit TSV -> list of (row number, dict), cells stripped (ground truth).  The base64 `image` cell is
    not kept: only a short one (< 16 chars, a reference to another row's index) survives, as `_image_ref`."""
    rows = []
    for rowno, header, cells in iter_tsv(path):
        img_col = header.index('image') if 'image' in header else None
        row = {h: c.strip() for i, (h, c) in enumerate(zip(header, cells)) if i != img_col}
        if img_col is not None and img_col < len(cells) and 0 < len(cells[img_col]) < 16:
            row['_image_ref'] = cells[img_col].strip()
        rows.append((rowno, row))
    return rows


def read_tsv_cells(path, *required):
    """-> (header, [(rowno, {column: raw cell})]) for prompts: TSV cells are used unstripped (the reference reads
    them with pandas); a required column absent from the header is an error."""
    rows, header = [], None
    for rowno, header, cells in iter_tsv(path):
        rows.append((rowno, dict(zip(header, cells))))
    header = header or tsv_header(path)  # no data rows: the header alone, for the column check
    for key in required:
        if key not in header:
            raise ScoreError(path, 'row 1', f'no {key!r} column')
    return header, rows


def tsv_images(path, rows, optional=False):
    """Resolve every row's `image` cell: base64, or a cell shorter than 16 characters naming the `index` of the
    row holding the image (VLMEvalKit) -> [{'b64'} | None]; an empty cell is an error unless `optional`."""
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


def unique(items, path):
    """Ground-truth items must have distinct ids."""
    seen = set()
    for it in items:
        if it['id'] in seen:
            raise ScoreError(path, it.get('_where', ''), f'duplicate id {it["id"]!r}')
        seen.add(it['id'])
    return items


# ----------------------------------------------------------------------------------------------- ground truth
def answer_list(cell):
    """A TSV answer cell: one string, or a Python list literal of strings."""
    if cell.startswith('[') and cell.endswith(']'):
        try:
            value = ast.literal_eval(cell)
            if isinstance(value, list):
                return [str(v) for v in value]
        except (ValueError, SyntaxError):
            pass
    return [cell]


def tsv_answers(path):
    """VLMEvalKit TSV (`index`, `answer` = one string or a Python list literal) -> items {id, answers}."""
    items = []
    for rowno, row in read_tsv(path):
        where = f'row {rowno}'
        require_fields(path, where, row, 'index', 'answer')
        items.append({'id': norm_id(row['index'], path, where), 'answers': answer_list(row['answer']),
                      '_where': where})
    return unique(items, path)


def json_answers(path, id_key):
    """{"data": [{id_key: ..., "answers": [...]}, ...]} (TextVQA / DocVQA val files) -> items {id, answers}."""
    items = []
    for i, q in enumerate(data_list(path, read_json(path))):
        where = f'data[{i}]'
        require_fields(path, where, q, id_key, 'answers')
        items.append({'id': norm_id(q[id_key], path, where), 'answers': list(q['answers']), '_where': where})
    return unique(items, path)


def yes_no_label(path, where, value):
    v = str(value).strip().lower()
    if v not in ('yes', 'no'):
        raise ScoreError(path, where, f'answer must be Yes or No, got {value!r}')
    return v


# ------------------------------------------------------------------------------------------------ predictions
def read_prediction_records(path):
    """Predictions file -> [(where, key, prompt, text)] in file order.  A line is {"id", "prediction"} (prompt
    None) or a LLaVA answer line {"question_id", "text"[, "prompt"]}.  Numbers are accepted as text; null is an
    error.  Keys are not checked for duplicates here (a LLaVA TextVQA file repeats its question_id)."""
    records = []
    for lineno, obj in read_jsonl(path):
        where = f'line {lineno}'
        if isinstance(obj, dict) and 'id' in obj and 'prediction' in obj:
            key, text, prompt = obj['id'], obj['prediction'], None
        elif isinstance(obj, dict) and 'question_id' in obj and 'text' in obj:
            key, text, prompt = obj['question_id'], obj['text'], obj.get('prompt')
            if prompt is not None and not isinstance(prompt, str):
                raise ScoreError(path, where, f'"prompt" must be a string, got {prompt!r}')
        else:
            raise ScoreError(path, where, 'expected an object with "id" and "prediction" (or LLaVA\'s '
                             '"question_id" and "text")')
        key = norm_id(key, path, where)
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = str(text)
        if not isinstance(text, str):
            raise ScoreError(path, where, f'prediction for id {key!r} must be a string, got {text!r}')
        records.append((where, key, prompt, text))
    return records


def read_predictions(path):
    """Predictions file -> {id: text}; a repeated id is an error."""
    preds = {}
    for where, key, _, text in read_prediction_records(path):
        if key in preds:
            raise ScoreError(path, where, f'duplicate prediction id {key!r}')
        preds[key] = text
    return preds


# ------------------------------------------------------------------------------------------- question records
def question(id_, text, image, box_key, where):
    return {'id': id_, 'text': text, 'image': image, 'box_key': str(box_key), 'where': where}


def folder_image(image_folder, rel, path, where):
    if not image_folder:
        raise ScoreError(path, where, 'this benchmark reads images from a folder: image_folder is required')
    return {'path': os.path.abspath(os.path.join(image_folder, str(rel)))}


def cell(path, where, row, key):
    """A required TSV cell (raw); an empty cell is an absent one."""
    value = row.get(key, '')
    if value == '':
        raise ScoreError(path, where, f'missing {key!r}')
    return value


def llava_jsonl_questions(path, image_folder, suffix='', id_fn=None, images=True):
    """LLaVA question jsonl {question_id, image, text} -> questions; id = question_id (or id_fn(question_id)),
    box key = question_id, text = text + suffix.  images=False: no image references (and no image_folder)."""
    out = []
    for lineno, q in read_jsonl(path):
        where = f'line {lineno}'
        require_fields(path, where, q, *JSONL_FIELDS)
        qid = norm_id(q['question_id'], path, where)
        image = folder_image(image_folder, q['image'], path, where) if images else None
        out.append(question(id_fn(qid) if id_fn else qid, q['text'] + suffix, image, qid, f'{path} {where}'))
    return out


def tsv_questions(path, prompt, raw_id=False, optional_images=False):
    """VLMEvalKit TSV (`index`, `question`, base64 `image`) -> questions with text = prompt(question cell);
    id = box key = norm_id(index) (raw_id: the stripped index)."""
    _, rows = read_tsv_cells(path, 'index', 'question', 'image')
    out = []
    for (rowno, row), image in zip(rows, tsv_images(path, rows, optional=optional_images)):
        where = f'row {rowno}'
        index = cell(path, where, row, 'index')
        key = index.strip() if raw_id else norm_id(index, path, where)
        out.append(question(key, prompt(cell(path, where, row, 'question')), image, key, f'{path} {where}'))
    return out


# ------------------------------------------------------------------------------------------------ entry checks
def check_readable(path, folder=False):
    if folder:
        if not os.path.isdir(path):
            raise DataError(path, '', 'not a directory' if os.path.exists(path) else 'directory not found')
        return
    if not os.path.exists(path):
        raise DataError(path, '', 'file not found')
    if not os.path.isfile(path):
        raise DataError(path, '', 'not a file')
    if not os.access(path, os.R_OK):
        raise DataError(path, '', 'not readable (permissions)')


def check_json(path):
    """The parsed JSON file (the whole file: there is no cheaper way to know it parses)."""
    check_readable(path)
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(path, '', f'malformed JSON (line {e.lineno}: {e.msg})') from None
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(path, '', f'unreadable ({type(e).__name__}: {e})') from None


def _check_fields(path, rec, fields, where=''):
    if not isinstance(rec, dict):
        raise DataError(path, '', f'{where}expected a JSON object, got {type(rec).__name__}')
    missing = [k for k in fields if k not in rec]
    if missing:
        raise DataError(path, '', f'{where}first record lacks {", ".join(map(repr, missing))}')


def check_first_jsonl(path, fields=()):
    """The first record of a JSON-lines file; it must be an object with `fields`."""
    check_readable(path)
    try:
        with open(path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    break
            else:
                raise DataError(path, '', 'empty file (no JSON line)')
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(path, '', f'unreadable ({type(e).__name__}: {e})') from None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(path, '', f'line {lineno}: malformed JSON ({e.msg})') from None
    _check_fields(path, rec, fields, f'line {lineno}: ')
    return rec


def check_json_records(path, key=None, fields=()):
    """A JSON list (or the list under `key`) whose first record has `fields`."""
    data = check_json(path)
    if key is not None:
        data = data.get(key) if isinstance(data, dict) else None
    if not isinstance(data, list):
        raise DataError(path, '', f'expected a JSON list{f" under {key!r}" if key else ""}')
    if data:
        _check_fields(path, data[0], fields)
    return data


def check_tsv_columns(path, *required):
    """The TSV header row, which must name every `required` column."""
    check_readable(path)
    try:
        header = tsv_header(path)
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(path, '', f'unreadable ({type(e).__name__}: {e})') from None
    if header == ['']:
        raise DataError(path, '', 'empty TSV (no header row)')
    missing = [c for c in required if c not in header]
    if missing:
        has = ', '.join(header)
        raise DataError(path, '', f'header row lacks column(s) {", ".join(map(repr, missing))} '
                        f'(has {has if len(has) < 200 else has[:200] + "..."})')
    return header


def check_tsv_only(benchmark):
    """check_data of a benchmark whose questions are read from a VLMEvalKit TSV only."""
    def check(data, image_folder=None):
        if data.endswith('.tsv'):
            check_tsv_columns(data, 'index', 'question', 'image')
        else:
            check_readable(data)
            raise DataError(data, '', f'{benchmark} questions are read from a VLMEvalKit .tsv file')
    return check


def check_llava_jsonl(data, image_folder=None):
    check_first_jsonl(data, JSONL_FIELDS)


# ---------------------------------------------------------------------------------------------- submissions
def dump_json(path, obj, **kw):
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, **kw)
    return path
