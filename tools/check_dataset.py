"""Validate a training config's dataset before a run: every sample's text, image and boxes.

    python tools/check_dataset.py CONFIG [--cfg-options k=v ...] [--max-samples N]

First checks the vision spec against the towers' configs (`check_config_geometry`: image size, patch, token
count, ConvNeXt stride) and stops there on a mismatch. Then builds `cfg.train_dataloader.dataset` with
on_bad_sample='skip' (so the build reports every bad sample, duplicated box ids included, instead of
stopping at the first), then checks each kept sample with the functions training uses
(the dataset's own tokenisation, `load_image`, `preprocess_boxes(skip_bad=True)` and its stats).
Prints each problem category with its count and up to 5 example sample ids (and their file), then a
summary. Exit status 0 ("OK") when there is no error, 1 ("FAILED: N errors") otherwise; warnings
(boxes dropped by NMS, the object caps or the crop) do not fail.
"""
import argparse
import collections
import os.path as osp
import sys

import numpy as np
from mmengine.config import Config, DictAction
from xtuner.registry import BUILDER
from xtuner.utils import IMAGE_TOKEN_INDEX

from mg_llava.data import DataError, MGLLaVADataset, load_image, preprocess_boxes
from mg_llava.data.dataset import describe_duplicate
from mg_llava.data.geometry import check_config_geometry
from mg_llava.errors import BoxError, ImageError
from mg_llava.engine.wiring import complete_train_dataloader

MAX_EXAMPLES = 5


class Report:
    """Problems grouped by (level, category): count of samples and a few (id, file, detail) examples."""

    def __init__(self):
        self.groups = collections.OrderedDict()

    def add(self, level, category, sid, path, detail=''):
        g = self.groups.setdefault((level, category), dict(count=0, examples=[]))
        g['count'] += 1
        if len(g['examples']) < MAX_EXAMPLES:
            g['examples'].append((sid, path, detail))

    def num(self, level):
        return sum(g['count'] for (lv, _), g in self.groups.items() if lv == level)

    def print(self):
        for level in ('error', 'warning'):
            groups = [(c, g) for (lv, c), g in self.groups.items() if lv == level]
            if groups:
                print(f'\n{level.upper()}S')
            for category, g in groups:
                print(f'  [{level}] {category}: {g["count"]} sample(s)')
                for sid, path, detail in g['examples']:
                    print(f'      id {sid!r} in {path}' + (f': {detail}' if detail else ''))


def build_dataset(ds_cfg):
    """The completed dataset dict (the run's: model facts filled in) -> the dataset, skipping bad samples."""
    ds_cfg = dict(ds_cfg, on_bad_sample='skip')
    dataset = BUILDER.build(ds_cfg)
    if not isinstance(dataset, MGLLaVADataset):
        sys.exit(f'train_dataloader.dataset is a {type(dataset).__name__}, not an MGLLaVADataset')
    return dataset


def check_text(dataset, report):
    """Problems found by the dataset's tokenisation at build time, and duplicated ids."""
    for sid, reason in dataset.problems:
        category, _, detail = reason.partition(': ') if reason.startswith('cannot tokenise') else (reason, '', '')
        report.add('error', category, sid, dataset.data_path, detail)
    ids = list(dataset.text['id']) + [sid for sid, _ in dataset.problems]
    for sid, n in collections.Counter(ids).items():
        if n > 1:
            report.add('error', 'duplicated sample id', sid, dataset.data_path, f'{n} samples share it')


def check_box_ids(dataset, report):
    """Ids repeated in the box json (the dataset left them out of its index; training would stop on them)."""
    for sid, positions in dataset.box_duplicates.items():
        report.add('error', 'duplicated box id', sid, dataset.box_json_path, describe_duplicate(positions))


def check_boxes(dataset, sid, size, text_len, report):
    """Boxes of one decoded image sample, as training prepares them -> number of object tokens."""
    entry, path = dataset.boxes.get(sid), dataset.box_json_path
    if entry is None:
        if sid not in dataset.box_duplicates:   # a duplicated id is reported once, by check_box_ids
            report.add('error', 'missing box entry for an image sample', sid, path)
        return None
    try:
        boxes, _, st = preprocess_boxes(entry.get('boxes', []), entry.get('labels', []), entry.get('scores', []),
                                        size, dataset.spec, text_len=text_len, max_length=dataset.max_length,
                                        skip_bad=True)
    except BoxError as e:
        report.add('error', 'malformed boxes', sid, path, str(e))
        return None
    w, h = size
    if st['degenerate']:
        report.add('error', 'degenerate boxes (x2<x1, y2<y1 or non-finite)', sid, path,
                   f'{st["degenerate"]} of {st["raw"]} boxes')
    if st['outside']:
        report.add('error', 'out-of-frame boxes (entirely outside the image)', sid, path,
                   f'{st["outside"]} of {st["raw"]} boxes, image {w}x{h}')
    valid = st['raw'] - st['degenerate'] - st['outside']
    if valid > st['after_nms']:
        report.add('warning', 'boxes suppressed by NMS', sid, path, f'{valid - st["after_nms"]} of {valid}')
    if st['after_nms'] > st['kept'] + st['cropped']:
        report.add('warning', 'boxes dropped by the object caps', sid, path,
                   f'{st["after_nms"] - st["kept"] - st["cropped"]} of {st["after_nms"]}')
    if st['cropped']:
        report.add('warning', 'boxes cropped away by the centre crop', sid, path, f'{st["cropped"]}')
    if st['raw'] and not st['kept']:
        report.add('warning', 'no box survives (one empty object token is used)', sid, path)
    return len(boxes)


def check_samples(dataset, report, max_samples=None):
    """Decode every image and prepare its boxes; returns per-sample (id, has_image, text, objects) rows."""
    rows, n = [], len(dataset) if max_samples is None else min(max_samples, len(dataset))
    for i in range(n):
        row = dataset.text[i]
        sid, input_ids = row['id'], row['input_ids']
        text_len = len(input_ids) - input_ids.count(IMAGE_TOKEN_INDEX)
        if row['image'] is None:
            rows.append((sid, False, text_len, 0))
            continue
        path = osp.join(dataset.image_folder, row['image'])
        try:
            size = load_image(path).size
        except ImageError as e:
            category = 'missing image file' if e.reason == 'file not found' else 'unreadable image file'
            report.add('error', category, sid, path, '' if e.reason == 'file not found' else e.reason)
            continue
        n_obj = 0
        if dataset.boxes is not None:
            n_obj = check_boxes(dataset, sid, size, len(input_ids), report)
            if n_obj is None:
                continue
        rows.append((sid, True, text_len, n_obj))
    return rows, n


def print_summary(dataset, rows, scanned):
    T = dataset.num_image_tokens
    text = np.array([r[2] for r in rows] or [0])
    objs = np.array([r[3] for r in rows if r[1]] or [0])
    total = [r[2] + (T + r[3] if r[1] else 0) for r in rows] or [0]
    k = int(np.argmax(total))
    print('\nSUMMARY')
    print(f'  samples: {len(dataset) + len(dataset.problems)} in {dataset.data_path} '
          f'({len(dataset.problems)} dropped at build time; {scanned} scanned, {len(rows)} measured below)')
    n_image = sum(im is not None for im in dataset.text['image'])
    print(f'  image samples: {n_image}, text-only: {len(dataset) - n_image}  (of the {len(dataset)} kept)')
    print(f'  text tokens: mean {text.mean():.1f}, max {text.max()}')
    print(f'  object tokens per image: mean {objs.mean():.1f}, max {objs.max()}'
          + ('' if dataset.boxes is not None else '  (no box json: no object tokens)'))
    print(f'  max total sequence length (text + {T} image + object tokens): {total[k]}'
          + (f' (id {rows[k][0]!r})' if rows else ''))


# ------------------------------------------------------------------------------------------ evaluation entries
def check_evaluation(cfg, report):
    """When the config has an `evaluation` dict (tools/test.py), check each benchmark entry's keys and files as
    tools/test.py does before building a model, so a missing benchmark file is found before training.
    Reported per entry: sample id = the entry name, path = the file (or the config's evaluation dict)."""
    from mg_llava.evaluation.entries import entry_name, entry_problems
    ev = cfg.get('evaluation')
    if not isinstance(ev, dict):
        return
    for bench in ev.get('benchmarks') or []:
        for field, path, reason in entry_problems(dict(bench)):
            if field is None:
                report.add('error', 'evaluation entry: bad key or setting', entry_name(bench),
                           'evaluation.benchmarks', reason)
            else:
                report.add('error', 'evaluation entry: missing or unreadable file', entry_name(bench), path,
                           f'`{field}`: {reason}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Check a config\'s train dataset (text, images, boxes) before training.')
    p.add_argument('config', help='config file path')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='override config settings, e.g. train_dataloader.dataset.max_length=512')
    p.add_argument('--max-samples', type=int, default=None, help='scan only the first N samples\' images/boxes')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    try:   # the dataset the run would build: the model's tokenizer, template and vision spec filled in
        ds_cfg = complete_train_dataloader(cfg, cfg.train_dataloader)['dataset']
    except ValueError as e:   # e.g. a top-level `data_path = ...` nothing reads
        print(f'FAILED: {e}')
        return 1
    geometry = check_config_geometry(cfg.model, ds_cfg)
    if geometry:   # training would stop at step 1 whatever the data: say so before reading any of it
        print('vision spec vs towers (from the config, before reading any data):')
        print('\n'.join(f'  [error] {msg}' for msg in geometry))
        print(f'FAILED: {len(geometry)} errors')
        return 1
    try:
        dataset = build_dataset(ds_cfg)
    except (DataError, OSError) as e:   # unreadable data/box file: nothing else can be checked
        print(f'cannot build the dataset: {type(e).__name__}: {e}')
        print('FAILED: 1 errors')
        return 1
    print(f'dataset: {len(dataset) + len(dataset.problems)} samples in {dataset.data_path}, '
          f'images in {dataset.image_folder}, boxes in {dataset.box_json_path}')
    report = Report()
    check_evaluation(cfg, report)
    check_text(dataset, report)
    check_box_ids(dataset, report)
    rows, scanned = check_samples(dataset, report, args.max_samples)
    report.print()
    print_summary(dataset, rows, scanned)
    errors, warnings = report.num('error'), report.num('warning')
    print(f'\n{errors} errors, {warnings} warnings')
    print(f'FAILED: {errors} errors' if errors else 'OK')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
