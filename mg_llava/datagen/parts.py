"""The resumable partial output of a datagen tool (generation, judge, CLIP filter): OUT.parts/ holds each rank's
finished batches and the fingerprint of the run that wrote them (mg_llava.evaluation.resume), so a rerun with the
same model, inputs and settings goes on where it stopped, and any other run is refused (ResumeError) unless
`restart` deletes them."""
import os
import os.path as osp

from mg_llava.evaluation import resume as R
from mg_llava.inference.sharding import barrier


def open_parts(out, name, model, entry, settings, restart=False, rank=0):
    """model: {'export': path, 'digest': ...}; entry: {key: input path or None}; settings: what changes a result.
    Checks / writes the fingerprint (ResumeError on a mismatch), waits for every rank -> the parts folder."""
    parts = out + '.parts'
    entry = {k: v and osp.abspath(v) for k, v in entry.items()}
    R.prepare(parts, name, R.fingerprint(name, {'model': model}, entry, settings), restart, rank)
    barrier()
    return parts


def close_parts(parts, name):
    """The final files are written: remove the partial files, their fingerprint and the folder if empty."""
    R.cleanup(parts, name)
    if osp.isdir(parts) and not os.listdir(parts):
        os.rmdir(parts)
