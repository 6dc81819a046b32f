"""Offline box generation: images -> tags -> OWLv2 boxes -> box json (spec §2.2, §3).

    python tools/detect_boxes.py --images DIR_OR_JSONL --detector OWLV2_DIR --out boxes.jsonl \\
        (--tags-file vocab.txt | --tagger CLIP_DIR --vocabulary vocab.txt [--tag-threshold 0.02 --max-tags 10]) \\
        [--image-folder DIR] [--batch-size 8] [--num-workers 4] [--device cuda] [--dtype float32] \\
        [--box-threshold 0.2]
    torchrun --nproc-per-node 8 tools/detect_boxes.py ...        # sharded: rank r takes ids[r::world]

Inputs: a folder (recursive; id = relative path without suffix, e.g. "sub/0001") or a .jsonl/.json of
{"id" (or "question_id"), "image"} records, image paths relative to --image-folder (default: the file's
folder). Output: OUT ending in .json -> the spec §2.2 JSON list; anything else -> JSON lines. Either loads
with `mg_llava.data.load_box_index`. Boxes are xyxy in original-image pixels, `int`-truncated, unclipped.

Settings from the reference (spec §3): queries "a photo of <tag>", OWLv2 score threshold 0.2 (strict >),
boxes scaled by max(W, H) (OWLv2 pads to a square at the bottom/right), no NMS, no cap (training does NMS
and capping, spec §2.4). Tags: RAM++ in the reference, which is not on PyPI; here a fixed vocabulary or a
zero-shot CLIP tagger (see mg_llava/detection/tagger.py). NEW: boxes entirely outside the image are dropped.

Robustness: results are appended and flushed one JSON line per image (OUT for one process writing .jsonl,
else OUT.rank{r}); a rerun skips ids already written anywhere (OUT or any OUT.rank*; a cut-off last line is
redone) and logs "skipping N done". Unreadable/missing images are reported on stderr (id and file) and
skipped -- the run goes on, the count is printed at the end, a rerun retries them. At the end rank 0 merges
everything into OUT in input order (`--merge-only` does just that, e.g. after a crashed multi-GPU run).
"""
import argparse
import datetime
import os
import os.path as osp
import sys
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from mg_llava.data.preprocess import ImageError, load_image
from mg_llava.detection import boxfile
from mg_llava.detection.owl import BOX_THRESHOLD, OwlDetector, image_tensor
from mg_llava.detection.tagger import MAX_TAGS, TAG_THRESHOLD, ClipTagger, FixedTags, read_vocabulary

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
DIST_TIMEOUT = datetime.timedelta(hours=48)   # ranks wait for the slowest one before the merge


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--images', required=True, help='image folder, or .jsonl/.json of {"id", "image"} records')
    p.add_argument('--image-folder', help='root of the "image" paths of a jsonl (default: its folder)')
    p.add_argument('--detector', help='local Owlv2ForObjectDetection + Owlv2Processor directory')
    p.add_argument('--out', required=True, help='box file to write (.json: JSON list; else JSON lines)')
    tags = p.add_mutually_exclusive_group()
    tags.add_argument('--tags-file', help='query every tag of this vocabulary (one per line) on every image')
    tags.add_argument('--tagger', help='local CLIPModel + CLIPProcessor directory: zero-shot tags per image')
    p.add_argument('--vocabulary', help='tag vocabulary of --tagger (one per line)')
    p.add_argument('--tag-threshold', type=float, default=TAG_THRESHOLD, help='min CLIP softmax probability')
    p.add_argument('--max-tags', type=int, default=MAX_TAGS, help='at most this many CLIP tags per image')
    p.add_argument('--box-threshold', type=float, default=BOX_THRESHOLD,
                   help='keep boxes with OWLv2 score > this (reference: 0.2)')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--num-workers', type=int, default=4, help='image decoding/preprocessing processes')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--dtype', choices=sorted(DTYPES), default='float32')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--merge-only', action='store_true', help='only merge OUT.rank* into OUT, detect nothing')
    args = p.parse_args(argv)
    if not args.merge_only:
        if not args.detector:
            p.error('--detector is required')
        if not (args.tags_file or args.tagger):
            p.error('give --tags-file or --tagger (with --vocabulary)')
        if args.tagger and not args.vocabulary:
            p.error('--tagger needs --vocabulary')
        if args.batch_size < 1 or args.max_tags < 1:
            p.error('--batch-size and --max-tags must be >= 1')
    return args


def log(msg, rank=0, world=1):
    tqdm.write(f'[detect_boxes{f" rank {rank}" if world > 1 else ""}] {msg}', file=sys.stderr)


def list_inputs(args):
    """-> unique [(id, path)] in input order; reports records without id and repeated ids."""
    if osp.isdir(args.images):
        items, no_image, problems = boxfile.list_image_folder(args.images), 0, []
    else:
        folder = args.image_folder if args.image_folder is not None else osp.dirname(osp.abspath(args.images))
        items, no_image, problems = boxfile.list_image_records(args.images, folder)
    items, dup = boxfile.unique_items(items)
    return items, no_image, problems, dup


class _Images(torch.utils.data.Dataset):
    """Decode + preprocess in loader workers; a bad image becomes an item with `error`, never an exception."""

    def __init__(self, items, processors):
        self.items, self.processors = items, processors

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        sid, path = self.items[i]
        item = {'id': sid, 'path': path, 'error': None}
        try:
            image = load_image(path)
            item['size'] = image.size
            item['pixels'] = {k: image_tensor(proc, image) for k, proc in self.processors.items()}
        except ImageError as e:
            item['error'] = e.reason
        except Exception as e:  # noqa: BLE001  (a preprocessing failure must not stop the run)
            item['error'] = f'{type(e).__name__}: {e}'
        return item


def build_models(args, device):
    dtype = DTYPES[args.dtype]
    detector = OwlDetector(args.detector, device=device, dtype=dtype, threshold=args.box_threshold)
    if args.tags_file:
        tagger = FixedTags(read_vocabulary(args.tags_file))
    else:
        tagger = ClipTagger(args.tagger, read_vocabulary(args.vocabulary), device=device, dtype=dtype,
                            threshold=args.tag_threshold, max_tags=args.max_tags)
    return detector, tagger


def run_shard(args, todo, working, rank, world, device):
    """Detect boxes for `todo` [(id, path)], appending to `working` -> stats dict."""
    detector, tagger = build_models(args, device)
    processors = {'owl': detector.image_processor}
    if tagger.image_processor is not None:
        processors['tag'] = tagger.image_processor
    loader = torch.utils.data.DataLoader(_Images(todo, processors), batch_size=args.batch_size,
                                         num_workers=args.num_workers, collate_fn=list, shuffle=False)
    stats = {'written': 0, 'bad': 0, 'boxes': 0, 'dropped_outside': 0, 'no_tags': 0}
    bar = tqdm(total=len(todo), desc=f'boxes{f" rank {rank}" if world > 1 else ""}', unit='img',
               disable=args.no_progress, position=rank if world > 1 else None, dynamic_ncols=True)
    with boxfile.EntryWriter(working) as writer, bar:
        if writer.trimmed:
            log(f'{working}: dropped a cut-off last line (that id is redone)', rank, world)
        for batch in loader:
            good = []
            for item in batch:
                if item['error'] is None:
                    good.append(item)
                else:
                    stats['bad'] += 1
                    log(f'bad image skipped: id {item["id"]!r}, file {item["path"]}: {item["error"]}', rank, world)
            if good:
                tag_pixels = torch.stack([g['pixels']['tag'] for g in good]) if 'tag' in processors else None
                tag_lists = tagger.tag(len(good), tag_pixels)
                results = detector.detect(torch.stack([g['pixels']['owl'] for g in good]), tag_lists,
                                          [g['size'] for g in good])
                for g, tags, (entry, dropped) in zip(good, tag_lists, results):
                    writer.write({'id': g['id'], **entry})
                    stats['written'] += 1
                    stats['boxes'] += len(entry['boxes'])
                    stats['dropped_outside'] += dropped
                    stats['no_tags'] += not tags
            bar.update(len(batch))
    return stats


def main(argv=None):
    args = parse_args(argv)
    world = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    device = args.device
    if world > 1 and not args.merge_only:
        if device.startswith('cuda'):
            device = f'cuda:{int(os.environ.get("LOCAL_RANK", 0))}'
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group('gloo', timeout=DIST_TIMEOUT)
    t0 = time.time()
    items, no_image, problems, dup = list_inputs(args)
    if rank == 0:
        for msg in problems:
            log(f'record skipped: {msg}')
        for sid, path in dup:
            log(f'repeated id skipped: {sid!r} ({path})')
        log(f'{len(items)} images ({no_image} text-only records, {len(problems)} records without id, '
            f'{len(dup)} repeated ids skipped)')
    order = [sid for sid, _ in items]
    if args.merge_only:
        if rank == 0:
            log(f'merged {boxfile.merge_outputs(args.out, order)} entries into {args.out}')
        return 0

    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    done = boxfile.done_keys(args.out)
    if world > 1:
        dist.barrier()   # every rank has read OUT.rank* before any rank trims or appends to its own
    mine = boxfile.shard(items, rank, world)
    todo = [(sid, path) for sid, path in mine if boxfile.entry_key(sid) not in done]
    log(f'{len(mine)} images in this shard, skipping {len(mine) - len(todo)} done, {len(todo)} to process',
        rank, world)
    single_jsonl = world == 1 and not args.out.endswith('.json')
    working = args.out if single_jsonl else boxfile.partial_path(args.out, rank)
    stats = run_shard(args, todo, working, rank, world, device)
    log(f'wrote {stats["written"]} entries ({stats["boxes"]} boxes; {stats["dropped_outside"]} boxes outside '
        f'the image dropped; {stats["no_tags"]} images without tags), {stats["bad"]} bad images skipped', rank, world)

    all_stats = [stats]
    if world > 1:
        dist.barrier()
        all_stats = [None] * world
        dist.all_gather_object(all_stats, stats)
    if rank == 0:
        n = boxfile.merge_outputs(args.out, order)
        bad = sum(s['bad'] for s in all_stats)
        log(f'{args.out}: {n} entries; {bad} bad image(s) skipped in this run'
            + (' (fix or remove them; a rerun retries only those)' if bad else '')
            + f'; {time.time() - t0:.1f}s')
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == '__main__':
    sys.exit(main())
