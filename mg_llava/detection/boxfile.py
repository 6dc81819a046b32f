"""Inputs, and the box json of spec §2.2 as a resumable, shardable output.

Output file formats (chosen by the extension of OUT; both load with `mg_llava.data.load_box_index`):
  *.json   a JSON list of {"id", "boxes", "scores", "labels"}, one entry per line (the spec §2.2 format);
  other    JSON lines, one entry per line (e.g. boxes.jsonl).
Work in progress is always JSON lines, appended and flushed one entry at a time: OUT itself for a
single-process run writing .jsonl, else `OUT.rank{r}` per rank. A run reads OUT and every `OUT.rank*`
(whatever world size wrote them) to skip finished ids; only the LAST line of a JSON-lines file may be
malformed (an interrupted write): it is ignored, cut off before appending, and its id is done again.
`merge_outputs` folds OUT and the partial files into OUT in input order (atomic replace, idempotent),
then deletes the partial files. The mechanics are `mg_llava.inference.writer` (shared with the evaluation's
partial predictions); this module binds them to the box-entry format.
"""
from __future__ import annotations

import os
import os.path as osp

from mg_llava.inference import writer
from mg_llava.inference.sharding import shard  # noqa: F401  (re-exported: the detector's shards)

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


# ------------------------------------------------------------------------------------------------ output

def _check_entry(e):
    if not isinstance(e, dict) or 'id' not in e:
        raise ValueError('not an object with an "id"')
    n = len(e.get('boxes', []))
    if len(e.get('scores', [])) != n or len(e.get('labels', [])) != n:
        raise ValueError('boxes, scores and labels differ in length')


def output(out):
    """The resumable output OUT: partial files `OUT.rank<r>`, final file OUT."""
    return writer.ShardedJsonl(f'{out}.rank', final=out, check=_check_entry, what='box entry')


def partial_path(out, rank):
    return output(out).path(rank)


def partial_files(out):
    """`OUT.rank<N>` files, by rank number."""
    return output(out).files()


def read_entries(path):
    """Entries of a box file (.json list or JSON lines; a malformed last JSON line is ignored)."""
    return writer.read_file(path, _check_entry, 'box entry')


def done_keys(out):
    """Keys of the ids already in OUT or in any `OUT.rank*` file."""
    return {entry_key(e['id']) for e in output(out).records()}


def trim_partial_tail(path):
    """Cut a malformed last line off a JSON-lines file and make it end with a newline; -> True if cut."""
    return writer.trim_partial_tail(path, _check_entry)


class EntryWriter(writer.JsonlAppender):
    """Appends entries to a JSON-lines file, one flushed line each (after trimming a partial tail)."""

    def __init__(self, path):
        super().__init__(path, _check_entry)


def write_entries(path, entries):
    """Write a whole box file atomically: a JSON list for *.json, JSON lines otherwise."""
    writer.write_atomic(path, entries)


def merge_outputs(out, order):
    """Fold OUT and all `OUT.rank*` files into OUT: one entry per id (first seen wins), ids of `order` (the
    input ids) first in that order, then any other ids already present. Deletes the partial files; running it
    again changes nothing. -> number of entries written."""
    return output(out).merge([entry_key(sid) for sid in order], key=lambda e: entry_key(e['id']))
