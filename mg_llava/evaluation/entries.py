"""Checks of a config's `evaluation.benchmarks` entries, run before any model is built (tools/test.py) and by
the dataset validator (tools/check_dataset.py), so a missing or malformed benchmark file shows up in seconds,
not after the model load or half-way through an evaluation.

An entry is dict(name, benchmark, data, image_folder=None, annotations=None, box_file=None, test_questions=None).

* `check_entry(bench)`: keys and settings only (raises ValueError).
* `entry_problems(bench)` -> [(field, path, reason)]: keys/settings (field None) and files: `data` exists and its
  header / first record has what the benchmark's question reader needs, `annotations` parses, `image_folder`
  is a directory, `box_file` and `test_questions` parse.  Whole JSON files are parsed (there is no cheaper
  way to know they parse); a JSONL or TSV file is read up to its first record.
* `check_entries(benchmarks, where)`: every problem of every entry in one ValueError.

Stdlib only (no torch), like the scorer modules.
"""
import json
import os
import os.path as osp

from . import loaders
from . import questions as Q

FOLDER_IMAGES = ('textvqa', 'gqa', 'vqav2', 'vizwiz', 'llava_bench', 'mmvet', 'pope')  # jsonl rows name a file
NEEDS_ANNOTATIONS = ('textvqa', 'gqa')  # the question file lacks the answers (and, for textvqa, the ids)
ENTRY_KEYS = ('name', 'benchmark', 'data', 'image_folder', 'annotations', 'box_file', 'test_questions')
JSONL_FIELDS = ('question_id', 'image', 'text')  # LLaVA question jsonl (questions._load_jsonl)


def entry_name(bench):
    return bench.get('name', bench.get('benchmark'))


def _key_problems(bench):
    problems = [f'unknown key {k!r}' for k in bench if k not in ENTRY_KEYS]
    kind = bench.get('benchmark')
    if kind not in Q.QUESTION_BENCHMARKS:
        problems.append(f'benchmark must be one of {", ".join(Q.QUESTION_BENCHMARKS)}, got {kind!r}')
    if not bench.get('data'):
        problems.append('no `data` file')
    needs_folder = kind in FOLDER_IMAGES or (kind in ('chartqa', 'docvqa') and
                                             not str(bench.get('data', '')).endswith('.tsv'))
    if needs_folder and not bench.get('image_folder'):
        problems.append(f'{kind} reads its images from a folder: set `image_folder`')
    if kind in NEEDS_ANNOTATIONS and not bench.get('annotations'):
        problems.append(f'{kind} needs `annotations` (the official answers file)')
    return problems


def check_entry(bench):
    """A config's benchmark entry is complete (checked before any model is built). Raises ValueError."""
    problems = _key_problems(bench)
    if problems:
        raise ValueError(f'evaluation entry {entry_name(bench)!r}: ' + '; '.join(problems))


# --------------------------------------------------------------------------------------------- file readers
class _Bad(Exception):
    """One file problem (reason); raised by the readers below, collected by entry_problems."""


def _readable(path, folder=False):
    if folder:
        if not osp.isdir(path):
            raise _Bad('not a directory' if osp.exists(path) else 'directory not found')
        return
    if not osp.exists(path):
        raise _Bad('file not found')
    if not osp.isfile(path):
        raise _Bad('not a file')
    if not os.access(path, os.R_OK):
        raise _Bad('not readable (permissions)')


def _json(path):
    _readable(path)
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise _Bad(f'malformed JSON (line {e.lineno}: {e.msg})') from None
    except (UnicodeDecodeError, OSError) as e:
        raise _Bad(f'unreadable ({type(e).__name__}: {e})') from None


def _first_jsonl(path, fields=()):
    """The first record of a JSON-lines file; it must be an object with `fields`."""
    _readable(path)
    try:
        with open(path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    break
            else:
                raise _Bad('empty file (no JSON line)')
    except (UnicodeDecodeError, OSError) as e:
        raise _Bad(f'unreadable ({type(e).__name__}: {e})') from None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise _Bad(f'line {lineno}: malformed JSON ({e.msg})') from None
    _fields(rec, fields, f'line {lineno}: ')
    return rec


def _fields(rec, fields, where=''):
    if not isinstance(rec, dict):
        raise _Bad(f'{where}expected a JSON object, got {type(rec).__name__}')
    missing = [k for k in fields if k not in rec]
    if missing:
        raise _Bad(f'{where}first record lacks {", ".join(map(repr, missing))}')


def _json_records(path, key=None, fields=()):
    """A JSON list (or the list under `key`) whose first record has `fields`."""
    data = _json(path)
    if key is not None:
        data = data.get(key) if isinstance(data, dict) else None
    if not isinstance(data, list):
        raise _Bad(f'expected a JSON list{f" under {key!r}" if key else ""}')
    if data:
        _fields(data[0], fields, '')
    return data


def _tsv_columns(path, *required):
    _readable(path)
    try:
        with open(path, encoding='utf-8') as f:
            header = [h.strip() for h in f.readline().rstrip('\r\n').split('\t')]
    except (UnicodeDecodeError, OSError) as e:
        raise _Bad(f'unreadable ({type(e).__name__}: {e})') from None
    if header == ['']:
        raise _Bad('empty TSV (no header row)')
    missing = [c for c in required if c not in header]
    if missing:
        has = ', '.join(header)
        raise _Bad(f'header row lacks column(s) {", ".join(map(repr, missing))} '
                   f'(has {has if len(has) < 200 else has[:200] + "..."})')
    return header


def _check_data(kind, data, image_folder):
    """Raise _Bad when `data` cannot be what questions.load_questions(kind, ...) reads."""
    if kind in Q.MULTIPLE_CHOICE:
        _tsv_columns(data, 'index', 'question', 'image')
    elif kind in ('textvqa', 'gqa') + Q.LLAVA_JSONL:
        _first_jsonl(data, JSONL_FIELDS)
    elif kind == 'pope':  # a folder of coco_pope_<split>.json files, or one such file (loaders.pope_files)
        if osp.isdir(data):
            files = [f for f in sorted(os.listdir(data)) if f.startswith('coco_pope_') and f.endswith('.json')]
            if not files:
                raise _Bad('no coco_pope_<split>.json files in this directory')
            for f in files:
                try:
                    _first_jsonl(osp.join(data, f), JSONL_FIELDS + ('label',))
                except _Bad as e:
                    raise _Bad(f'{f}: {e}') from None
        else:
            _first_jsonl(data, JSONL_FIELDS + ('label',))
    elif data.endswith('.tsv'):
        mme_folder = kind == 'mme' and image_folder
        header = _tsv_columns(data, 'index', 'question', 'image_path' if mme_folder else 'image')
        if kind == 'mme' and 'answer' in header and 'category' not in header:  # loaders.load_mme scores by it
            raise _Bad("header row has 'answer' but lacks 'category' (MME scores per category)")
    elif kind == 'chartqa':
        _json_records(data, fields=('imgname', 'query', 'label'))  # label: the scorer's answer
    elif kind == 'docvqa':
        _json_records(data, 'data', ('questionId', 'question', 'image', 'answers'))
    elif kind == 'hallusion':
        _json_records(data, fields=loaders.HALLUSION_FIELDS + ('question', 'gt_answer'))
    else:
        _readable(data)
        raise _Bad(f'{kind} questions are read from a VLMEvalKit .tsv file')


def _check_annotations(kind, path):
    if kind == 'textvqa':
        _json_records(path, 'data', ('question_id', 'image_id', 'question', 'answers'))
    elif kind == 'gqa':
        if not isinstance(_json(path), dict):
            raise _Bad('expected a JSON object {question_id: {answer, ...}}')
    else:
        _json(path)


def _check_box_file(path):
    _readable(path)
    if path.endswith('.jsonl'):
        _first_jsonl(path, ('id',))
    else:
        _json_records(path, fields=('id',))


def entry_problems(bench):
    """Every problem of one entry -> [(field, path, reason)]: field None for a key/setting problem (path None),
    else the entry key whose file is wrong ('data', 'annotations', ...) and the file as written in the entry."""
    out = [(None, None, p) for p in _key_problems(bench)]
    kind = bench.get('benchmark')
    checks = [('data', lambda p: _check_data(kind, p, bench.get('image_folder')) if kind in Q.QUESTION_BENCHMARKS
               else _readable(p)),
              ('annotations', lambda p: _check_annotations(kind, p)),
              ('image_folder', lambda p: _readable(p, folder=True)),
              ('box_file', _check_box_file),
              ('test_questions', lambda p: _first_jsonl(p, ('question_id',)))]
    for field, check in checks:
        path = bench.get(field)
        if not path:
            continue
        try:
            check(str(path))
        except _Bad as e:
            out.append((field, str(path), str(e)))
    return out


def format_problem(bench, problem):
    field, path, reason = problem
    where = f'`{field}` {path}: ' if field else ''
    return f'evaluation entry {entry_name(bench)!r}: {where}{reason}'


def check_entries(benchmarks, where=''):
    """Raise ValueError listing every problem of every entry (one per line), prefixed by `where` (the config)."""
    lines = [format_problem(b, p) for b in benchmarks for p in entry_problems(b)]
    if lines:
        raise ValueError(f'{where + ": " if where else ""}{len(lines)} problem(s) in `evaluation.benchmarks` '
                         f'(nothing was evaluated):\n  ' + '\n  '.join(lines))
