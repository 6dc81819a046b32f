"""Checks of a config's `evaluation.benchmarks` entries, run before any model is built (tools/test.py) and by
the dataset validator (tools/check_dataset.py), so a missing or malformed benchmark file shows up in seconds,
not after the model load or half-way through an evaluation.

An entry is dict(name, benchmark, data, image_folder=None, annotations=None, box_file=None, test_questions=None).

* `check_entry(bench)`: keys and settings only (raises ValueError).
* `entry_problems(bench)` -> [(field, path, reason)]: keys/settings (field None) and files: `data` exists and its
  header / first record has what the benchmark's question reader needs (the benchmark's `check_data`),
  `annotations` parses (`check_annotations`), `image_folder` is a directory, `box_file` and `test_questions`
  parse.  Whole JSON files are parsed (there is no cheaper way to know they parse); a JSONL or TSV file is read
  up to its first record.
* `check_entries(benchmarks, where)`: every problem of every entry in one ValueError.

What each benchmark needs comes from the registry (`mg_llava.evaluation.benchmarks`).  Stdlib only (no torch),
like the scorer modules.
"""
from mg_llava.errors import InputError

from . import benchmarks as B
from . import loaders as L

ENTRY_KEYS = ('name', 'benchmark', 'data', 'image_folder', 'annotations', 'box_file', 'test_questions')
FOLDER_IMAGES = tuple(n for n in B.names() if B.get(n).image_folder == 'required')  # jsonl rows name a file
NEEDS_ANNOTATIONS = tuple(n for n in B.names() if B.get(n).needs_annotations)


def _spec(kind):
    """The registered benchmark called `kind`, or None."""
    return B.REGISTRY.get(kind) if isinstance(kind, str) else None


def entry_name(bench):
    return bench.get('name', bench.get('benchmark'))


def _key_problems(bench):
    problems = [f'unknown key {k!r}' for k in bench if k not in ENTRY_KEYS]
    kind = bench.get('benchmark')
    spec = _spec(kind)
    if spec is None:
        problems.append(f'benchmark must be one of {", ".join(B.names())}, got {kind!r}')
    if not bench.get('data'):
        problems.append('no `data` file')
    if spec is not None and spec.needs_image_folder(bench.get('data', '')) and not bench.get('image_folder'):
        problems.append(f'{kind} reads its images from a folder: set `image_folder`')
    if spec is not None and spec.needs_annotations and not bench.get('annotations'):
        problems.append(f'{kind} needs `annotations` (the official answers file)')
    return problems


def check_entry(bench):
    """A config's benchmark entry is complete (checked before any model is built). Raises ValueError."""
    problems = _key_problems(bench)
    if problems:
        raise ValueError(f'evaluation entry {entry_name(bench)!r}: ' + '; '.join(problems))


def _check_box_file(path):
    L.check_readable(path)
    if path.endswith('.jsonl'):
        L.check_first_jsonl(path, ('id',))
    else:
        L.check_json_records(path, fields=('id',))


def entry_problems(bench):
    """Every problem of one entry -> [(field, path, reason)]: field None for a key/setting problem (path None),
    else the entry key whose file is wrong ('data', 'annotations', ...) and the file as written in the entry."""
    out = [(None, None, p) for p in _key_problems(bench)]
    spec = _spec(bench.get('benchmark'))
    checks = [('data', (lambda p: spec.check_data(p, bench.get('image_folder'))) if spec else L.check_readable),
              ('annotations', (spec and spec.check_annotations) or L.check_json),
              ('image_folder', lambda p: L.check_readable(p, folder=True)),
              ('box_file', _check_box_file),
              ('test_questions', lambda p: L.check_first_jsonl(p, ('question_id',)))]
    for field, check in checks:
        path = bench.get(field)
        if not path:
            continue
        try:
            check(str(path))
        except InputError as e:
            out.append((field, str(path), e.reason))
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
