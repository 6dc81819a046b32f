"""One resumable, sharded JSON-lines output: evaluation predictions and detector box files both use it.

    rank r appends to   prefix + str(r) + suffix        (its partial file; one per rank)
    a rerun reads       final (if the caller has one) + every partial file, whatever world size wrote them
    at the end          merge(): final <- final + partial files, one record per key, keys in a given order

Each append is one write of whole lines, flushed at once (a record, or a batch of records), so an interrupted
run leaves at most one torn LAST line in a file: readers ignore it, and an appender cuts it off before
appending (its key is simply done again). A malformed line followed by more lines is not an interruption but a
damaged file: `DataError` naming file and line. Records are `json.dumps(record, ensure_ascii=False)` lines.
A final file ending in `.json` is a JSON list written one record per line; anything else is JSON lines.

Callers choose the names (these are pinned by their tests and users' work dirs):
  detection  OUT.rank<r>                                   final OUT        (mg_llava.detection.boxfile)
  evaluation <work_dir>/<name>_predictions.partial.rank<r>.jsonl, no final (mg_llava.evaluation.resume)
Stdlib only (tools and the box-file layer import it without torch).
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import re

from mg_llava.errors import DataError


def dumps(record):
    return json.dumps(record, ensure_ascii=False)


def scan_jsonl(path, check=None, what='record'):
    """-> (records, end, bad): `end` = byte offset after the last good line; `bad` = (line number, reason) of a
    malformed last line, else None. check(record) raises ValueError for a record of the wrong shape (a malformed
    line too). A malformed line followed by more records raises DataError."""
    records, end, offset, bad = [], 0, 0, None
    with open(path, 'rb') as f:
        for lineno, raw in enumerate(f, 1):
            offset += len(raw)
            if not raw.strip():
                end = end if bad else offset
                continue
            if bad:
                raise DataError(path, f'line {bad[0]}', f'malformed {what} ({bad[1]}) before more entries')
            try:
                record = json.loads(raw)
                if check is not None:
                    check(record)
            except ValueError as err:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
                bad = (lineno, str(err))
                continue
            records.append(record)
            end = offset
    return records, end, bad


def read_file(path, check=None, what='record'):
    """Records of a whole file: a `.json` list (every element checked; a bad one is a DataError naming it) or
    JSON lines (a torn last line is ignored)."""
    if not path.endswith('.json'):
        return scan_jsonl(path, check, what)[0]
    from mg_llava.data.dataset import read_records as read_json_list  # the project's json/jsonl reader
    records = read_json_list(path)
    for i, record in enumerate(records):
        try:
            if check is not None:
                check(record)
        except ValueError as err:
            raise DataError(path, f'entry {i}', str(err)) from None
    return records


def trim_partial_tail(path, check=None):
    """Cut a malformed last line off a JSON-lines file and make it end with a newline; -> True if cut."""
    if not osp.exists(path):
        return False
    _, end, bad = scan_jsonl(path, check)
    with open(path, 'rb+') as f:
        f.truncate(end)
        if end:
            f.seek(end - 1)
            if f.read(1) != b'\n':
                f.write(b'\n')
    return bad is not None


class JsonlAppender:
    """Appends records to a JSON-lines file (created with its folder if needed), after trimming a torn tail.
    `trimmed` says whether a torn last line was cut off. Every write() is flushed at once."""

    def __init__(self, path, check=None):
        self.path = path
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        self.trimmed = trim_partial_tail(path, check)
        self._f = open(path, 'a', encoding='utf-8')

    def write(self, record):
        self.write_many([record])

    def write_many(self, records):
        """All `records` as one flushed write (a batch's answers are kept, or redone, together)."""
        self._f.write(''.join(dumps(r) + '\n' for r in records))
        self._f.flush()

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_atomic(path, records):
    """Write a whole file atomically (temporary file, fsync, rename): a JSON list for *.json, else JSON lines."""
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        lines = [dumps(r) for r in records]
        if path.endswith('.json'):
            f.write('[\n' + ',\n'.join(lines) + '\n]\n' if lines else '[]\n')
        else:
            f.writelines(line + '\n' for line in lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardedJsonl:
    """The partial files `prefix<rank>suffix` (+ an optional `final` file) of one resumable output.

    check(record) raises ValueError for a record of the wrong shape; `what` names a record in errors.
    """

    def __init__(self, prefix, suffix='', final=None, check=None, what='record'):
        self.prefix, self.suffix, self.final = str(prefix), suffix, final
        self.check, self.what = check, what

    def path(self, rank):
        """Rank `rank`'s partial file."""
        return f'{self.prefix}{rank}{self.suffix}'

    def files(self):
        """Existing partial files, by rank number."""
        pattern = re.compile(r'(\d+)' + re.escape(self.suffix))
        found = [(int(m.group(1)), p) for p in glob.glob(glob.escape(self.prefix) + '*')
                 if (m := pattern.fullmatch(p[len(self.prefix):]))]
        return [p for _, p in sorted(found)]

    def records(self):
        """Every record of the final file (if it exists) and of the partial files, in that order."""
        paths = ([self.final] if self.final and osp.exists(self.final) else []) + self.files()
        return [r for path in paths for r in read_file(path, self.check, self.what)]

    def appender(self, rank):
        """A JsonlAppender on rank `rank`'s partial file."""
        return JsonlAppender(self.path(rank), self.check)

    def remove(self):
        """Delete the partial files."""
        for path in self.files():
            os.remove(path)

    def merge(self, order, key):
        """Fold the final file and the partial files into the final file: one record per key(record) (first seen
        wins), the keys of `order` first in that order, then any other keys already present; the partial files
        are deleted. Running it again changes nothing. -> number of records written."""
        by_key = {}
        for record in self.records():
            by_key.setdefault(key(record), record)
        records = [by_key.pop(k) for k in order if k in by_key]
        records += by_key.values()
        write_atomic(self.final, records)
        self.remove()
        return len(records)
