"""What produced an evaluation's partial files, so that a rerun resumes only its own work.

Each finished batch of a benchmark is appended to <work_dir>/<name>_predictions.partial.rank<r>.jsonl
(`partial_output`: the resumable sharded writer of mg_llava.inference, torn last lines cut off). Next to
them rank 0 writes <name>_predictions.partial.meta.json before the first batch: the fingerprint

    {'format': 1, 'benchmark': name,
     'model': {'export' | 'checkpoint' | 'model': abs path or '', 'digest': 'sha256:<64 hex>'},
     'config': abs config path (tools/test.py),
     'entry': the benchmark entry (file paths made absolute),
     'settings': {'dtype', 'batch_size', 'max_new_tokens', 'generation_kwargs', 'system'}}

(everything that changes an answer or which question a batch holds). A rerun resumes from the partial files
only when the fingerprint is equal; partial files from another model, entry or settings, or with no meta file
(written before fingerprints existed) are refused with `ResumeError` unless `restart` deletes them.

Digests (`export_digest`, `state_dict_digest`) hash every byte of the weights: a multi-GB export costs
seconds (sha256 streams at ~1-2 GB/s), negligible next to the model load.
"""
import hashlib
import json
import os
import os.path as osp

import torch

from mg_llava.errors import ResumeError  # noqa: F401  (raised here)
from mg_llava.inference.writer import ShardedJsonl

FORMAT = 1
PARTIAL = '{name}_predictions.partial.rank'
META = '{name}_predictions.partial.meta.json'
ENTRY_FILES = ('data', 'image_folder', 'annotations', 'box_file', 'test_questions')
# What MGLLaVAModel.from_pretrained reads from an export folder (mg_llava.models.export's layout); anything else there (an eval work dir put
# inside it, say) must not change the digest.
EXPORT_FOLDERS = ('llm', 'llm_adapter', 'visual_encoder', 'visual_encoder_adapter', 'tokenizer')
CHUNK = 1 << 22


def _check_prediction(record):
    if not isinstance(record, dict) or 'id' not in record or 'prediction' not in record:
        raise ValueError('not an object with "id" and "prediction"')


def partial_output(out_dir, name):
    """This benchmark's per-rank partial prediction files (`mg_llava.inference.writer`): rank r appends each
    finished batch's {"id", "prediction"} lines to <out_dir>/<name>_predictions.partial.rank<r>.jsonl."""
    return ShardedJsonl(osp.join(out_dir, PARTIAL.format(name=name)), '.jsonl', check=_check_prediction,
                        what='prediction')


def partial_files(out_dir, name):
    """This benchmark's per-rank partial prediction files in out_dir (by rank)."""
    if not (out_dir and osp.isdir(out_dir)):
        return []
    return partial_output(out_dir, name).files()


def read_partial(out_dir, name):
    """{id: prediction} from every rank's partial file of an interrupted run (a torn last line is ignored)."""
    if not (out_dir and osp.isdir(out_dir)):
        return {}
    return {r['id']: r['prediction'] for r in partial_output(out_dir, name).records()}


def meta_path(out_dir, name):
    return osp.join(out_dir, META.format(name=name))


def _hash_file(h, path):
    h.update(f'{os.path.getsize(path)}\0'.encode())
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            h.update(chunk)


def export_digest(export_dir):
    """'sha256:<hex>' over the files from_pretrained reads (mg_llava_config.json, *.safetensors, the llm/ tokenizer/
    ... folders): each file's relative path, size and bytes, in sorted order."""
    files = [f for f in os.listdir(export_dir) if osp.isfile(osp.join(export_dir, f)) and
             (f == 'mg_llava_config.json' or f.endswith('.safetensors'))]
    for sub in EXPORT_FOLDERS:
        for root, _, names in os.walk(osp.join(export_dir, sub)):
            files += [osp.relpath(osp.join(root, n), export_dir) for n in names]
    return files_digest(export_dir, files)


def files_digest(root, files):
    """'sha256:<hex>' over `files` (paths relative to root): each one's path, size and bytes, in sorted order."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.replace(os.sep, '/').encode() + b'\0')
        _hash_file(h, osp.join(root, rel))
    return 'sha256:' + h.hexdigest()


def state_dict_digest(state_dict):
    """'sha256:<hex>' over the sorted names, shapes, dtypes and bytes of the tensors (MGLLaVAModel.state_dict()
    holds only the trained parts, so this is cheap for adapter-only training)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k]
        if not torch.is_tensor(t):
            continue
        t = t.detach().to('cpu').contiguous().reshape(-1)
        h.update(f'{k}\0{tuple(state_dict[k].shape)}\0{t.dtype}\0'.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return 'sha256:' + h.hexdigest()


def short(digest):
    return (digest or '')[:19]  # 'sha256:' + 12 hex digits: enough to tell models apart in messages


def _plain(obj):
    """JSON round trip (tuples -> lists, ConfigDict -> dict) so a stored and a fresh fingerprint compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def fingerprint(name, provenance, bench, settings):
    """The meta-file dict (module docstring) of one benchmark run."""
    entry = {k: (osp.abspath(str(v)) if k in ENTRY_FILES and v else v) for k, v in dict(bench).items()}
    return _plain(dict(format=FORMAT, benchmark=name, **dict(provenance), entry=entry, settings=settings))


def describe_model(model):
    """{'export': '/abs', 'digest': ...} -> "export /abs (sha256:0123456789ab)"."""
    model = model or {}
    kind = next((k for k in model if k != 'digest'), None)
    where = f'{kind} {model[kind]} ' if kind and model[kind] else ''
    return f'{where}({short(model.get("digest")) or "no digest"})'


def _flat(d, prefix=''):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and k != 'model':  # a model is compared (and described) as a whole
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def differences(old, new):
    """Human-readable lines: what differs between two fingerprints."""
    lines = []
    if old.get('model') != new.get('model'):
        lines.append(f'model: partial answers by {describe_model(old.get("model"))}, '
                     f'this run uses {describe_model(new.get("model"))}')
    a, b = _flat({k: v for k, v in old.items() if k != 'model'}), _flat({k: v for k, v in new.items() if k != 'model'})
    lines += [f'{k}: was {a.get(k)!r}, now {b.get(k)!r}' for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return lines


def read_meta(out_dir, name):
    try:
        with open(meta_path(out_dir, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check(out_dir, name, fp, restart=False):
    """-> 'fresh' (no partial files), 'restart' (partial files to delete) or 'resume' (same fingerprint).
    Raises ResumeError when partial files exist, restart is off and the fingerprint is missing or differs."""
    files = partial_files(out_dir, name)
    if not files:
        return 'fresh'
    if restart:
        return 'restart'
    old = read_meta(out_dir, name)
    if old == fp:
        return 'resume'
    how = (f'to go on, use a fresh --work-dir, or rerun with --restart (deletes the partial files of {name!r} '
           f'and evaluates it from scratch)')
    files_txt = ', '.join(osp.basename(f) for f in files)
    if old is None:
        raise ResumeError(f'{out_dir}: benchmark {name!r} has partial predictions of an interrupted run '
                          f'({files_txt}) but no {osp.basename(meta_path(out_dir, name))} saying which model '
                          f'produced them (unknown provenance), so they cannot be resumed by '
                          f'{describe_model(fp.get("model"))}; {how}')
    raise ResumeError(f'{out_dir}: benchmark {name!r} has partial predictions of an interrupted run ({files_txt}) '
                      f'made differently:\n    ' + '\n    '.join(differences(old, fp)) + f'\n  {how}')


def prepare(out_dir, name, fp, restart=False, rank=0):
    """check(); then rank 0 deletes the partial files on restart and writes the meta file (atomically: other
    ranks may read it). Callers on several ranks barrier after this, before reading partial files."""
    state = check(out_dir, name, fp, restart)
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        if state == 'restart':
            for f in partial_files(out_dir, name):
                os.remove(f)
            print(f'{name}: --restart: deleted the partial predictions of an interrupted run in {out_dir}',
                  flush=True)
        tmp = meta_path(out_dir, name) + f'.tmp{os.getpid()}'
        with open(tmp, 'w') as f:
            json.dump(fp, f, indent=2, sort_keys=True)
        os.replace(tmp, meta_path(out_dir, name))
    return state


def cleanup(out_dir, name):
    """Remove the partial files and their meta file (the final predictions file holds everything now)."""
    for f in partial_files(out_dir, name) + [meta_path(out_dir, name)]:
        if osp.exists(f):
            os.remove(f)
