"""Inputs, and the box json of spec §2.2 as a resumable, shardable output.

Output file formats (chosen by the extension of OUT; both load with `mg_llava.data.load_box_index`):
  *.json   a JSON list of {"id", "boxes", "scores", "labels"}, one entry per line (the spec §2.2 format);
  other    JSON lines, one entry per line (e.g. boxes.jsonl).
Work in progress is always JSON lines, appended and flushed one entry at a time: OUT itself for a
single-process run writing .jsonl, else `OUT.rank{r}` per rank. A run reads OUT and every `OUT.rank*`
(whatever world size wrote them) to skip finished ids; only the LAST line of a JSON-lines file may be
malformed (an interrupted write): it is ignored, cut off before appending, and its id is done again.
`merge_outputs` folds OUT and the partial files into OUT in input order (atomic replace, idempotent),
then deletes the partial files.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import re

from mg_llava.errors import DataError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')


def entry_key(sample_id):
    """Ids are matched as `str(id)`, like `load_box_index`; the raw id (int or str) is what gets written."""
    return str(sample_id)


# ------------------------------------------------------------------------------------------------ inputs

def list_image_folder(folder):
    """Every image file under `folder` (recursive) -> [(id, path)] sorted by id = relative path without suffix."""
    items = []
    for root, _, files in os.walk(folder):
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                rel = osp.relpath(osp.join(root, name), folder)
                items.append((osp.splitext(rel)[0].replace(os.sep, '/'), osp.join(root, name)))
    return sorted(items)


def list_image_records(path, image_folder):
    """A .jsonl (or .json list) of {"id" (or "question_id"), "image"} -> ([(id, path)], n_without_image, problems).

    Records without an image are text-only samples (no boxes needed); records without an id are problems.
    """
    from mg_llava.data.dataset import read_records
    items, no_image, problems = [], 0, []
    for i, rec in enumerate(read_records(path)):
        sid = rec.get('id', rec.get('question_id')) if isinstance(rec, dict) else None
        if sid is None:
            problems.append(f'{path} [record {i}]: no "id" (or "question_id")')
        elif not rec.get('image'):
            no_image += 1
        else:
            items.append((sid, osp.join(image_folder, rec['image'])))
    return items, no_image, problems


def unique_items(items):
    """Drop repeated ids (first one wins) -> (items, [(id, path) dropped])."""
    seen, out, dup = set(), [], []
    for sid, path in items:
        (dup if entry_key(sid) in seen else out).append((sid, path))
        seen.add(entry_key(sid))
    return out, dup


def shard(items, rank, world_size):
    """Interleaved shard: balanced, and a prefix finished by an earlier run is spread over all ranks."""
    return items[rank::world_size]


# ------------------------------------------------------------------------------------------------ output

def partial_path(out, rank):
    return f'{out}.rank{rank}'


def partial_files(out):
    """`OUT.rank<N>` files, by rank number."""
    found = [p for p in glob.glob(glob.escape(out) + '.rank*') if re.fullmatch(r'\.rank\d+', p[len(out):])]
    return sorted(found, key=lambda p: int(p[len(out) + 5:]))


def _check_entry(e):
    if not isinstance(e, dict) or 'id' not in e:
        raise ValueError('not an object with an "id"')
    n = len(e.get('boxes', []))
    if len(e.get('scores', [])) != n or len(e.get('labels', [])) != n:
        raise ValueError('boxes, scores and labels differ in length')


def scan_jsonl(path):
    """-> (entries, end, bad): `end` = byte offset after the last good line; `bad` = (line number, reason)
    of a malformed last line, else None. A malformed line followed by more entries raises DataError."""
    entries, end, offset, bad = [], 0, 0, None
    with open(path, 'rb') as f:
        for lineno, raw in enumerate(f, 1):
            offset += len(raw)
            if not raw.strip():
                end = end if bad else offset
                continue
            if bad:
                raise DataError(path, f'line {bad[0]}', f'malformed box entry ({bad[1]}) before more entries')
            try:
                e = json.loads(raw)
                _check_entry(e)
            except ValueError as err:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
                bad = (lineno, str(err))
                continue
            entries.append(e)
            end = offset
    return entries, end, bad


def read_entries(path):
    """Entries of a box file (.json list or JSON lines; a malformed last JSON line is ignored)."""
    if path.endswith('.json'):
        from mg_llava.data.dataset import read_records
        entries = read_records(path)
        for i, e in enumerate(entries):
            try:
                _check_entry(e)
            except ValueError as err:
                raise DataError(path, f'entry {i}', str(err)) from None
        return entries
    return scan_jsonl(path)[0]


def done_keys(out):
    """Keys of the ids already in OUT or in any `OUT.rank*` file."""
    keys = set()
    for path in ([out] if osp.exists(out) else []) + partial_files(out):
        keys.update(entry_key(e['id']) for e in read_entries(path))
    return keys


def trim_partial_tail(path):
    """Cut a malformed last line off a JSON-lines file and make it end with a newline; -> True if cut."""
    if not osp.exists(path):
        return False
    _, end, bad = scan_jsonl(path)
    with open(path, 'rb+') as f:
        f.truncate(end)
        if end:
            f.seek(end - 1)
            if f.read(1) != b'\n':
                f.write(b'\n')
    return bad is not None


def dumps(entry):
    return json.dumps(entry, ensure_ascii=False)


class EntryWriter:
    """Appends entries to a JSON-lines file, one flushed line each (after trimming a partial tail)."""

    def __init__(self, path):
        self.path = path
        self.trimmed = trim_partial_tail(path)
        self._f = open(path, 'a', encoding='utf-8')

    def write(self, entry):
        self._f.write(dumps(entry) + '\n')
        self._f.flush()

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_entries(path, entries):
    """Write a whole box file atomically: a JSON list for *.json, JSON lines otherwise."""
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        lines = [dumps(e) for e in entries]
        if path.endswith('.json'):
            f.write('[\n' + ',\n'.join(lines) + '\n]\n' if lines else '[]\n')
        else:
            f.writelines(line + '\n' for line in lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def merge_outputs(out, order):
    """Fold OUT and all `OUT.rank*` files into OUT: one entry per id (first seen wins), ids of `order` (the
    input ids) first in that order, then any other ids already present. Deletes the partial files; running it
    again changes nothing. -> number of entries written."""
    by_key = {}
    for path in ([out] if osp.exists(out) else []) + partial_files(out):
        for e in read_entries(path):
            by_key.setdefault(entry_key(e['id']), e)
    entries = [by_key.pop(entry_key(sid)) for sid in order if entry_key(sid) in by_key]
    entries += by_key.values()
    write_entries(out, entries)
    for path in partial_files(out):
        os.remove(path)
    return len(entries)
