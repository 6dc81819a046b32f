"""tools/detect_boxes.py + mg_llava/detection: box geometry, OWLv2 parity, resumable/sharded box files.

Tiny random-init OWLv2 (64 px, 4x4 patches) and CLIP checkpoints are built once per module; with
--box-threshold 0 every patch yields a box, so a random model still writes boxes.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mg_llava.data.dataset import load_box_index
from mg_llava.errors import DataError
from mg_llava.data.preprocess import VisionSpec, preprocess_boxes
from mg_llava.detection import boxfile
from mg_llava.detection.owl import OwlDetector, boxes_to_entry, padded_frame_to_original
from mg_llava.detection.tiny import build_tiny_clip, build_tiny_owlv2

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools' / 'detect_boxes.py'
SIZES = {'wide': (120, 60), 'tall': (50, 90), 'square': (64, 64), 'sub/small': (33, 20)}
GOOD_IDS = ['square', 'sub/small', 'tall', 'wide']   # folder order (sorted walk)


def env():
    return dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false',
                OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('detect_assets')
    images = root / 'images'
    (images / 'sub').mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (w, h) in SIZES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f'{name}.png')
    (images / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n but not really')
    (images / 'notes.txt').write_text('not an image: ignored')
    (root / 'vocab.txt').write_text('cat\ndog\n# a comment\n\ntraffic light\ncat\n')
    return {'root': root, 'images': images, 'vocab': root / 'vocab.txt',
            'owl': build_tiny_owlv2(str(root / 'owl')), 'clip': build_tiny_clip(str(root / 'clip'))}


def cli_args(assets, out, *extra):
    return ['--images', assets['images'], '--detector', assets['owl'], '--tagger', assets['clip'],
            '--vocabulary', assets['vocab'], '--tag-threshold', '0', '--max-tags', '2', '--box-threshold', '0',
            '--out', out, '--batch-size', '2', '--device', 'cpu', *extra]


def cli(assets, out, *extra, torchrun=False):
    args = cli_args(assets, out, *extra)
    launcher = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2']
                if torchrun else [sys.executable])
    proc = subprocess.run([*launcher, str(TOOL), *map(str, args)], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


@pytest.fixture
def tool(monkeypatch):
    """tools/detect_boxes.py as a module, to call main() in this process (single process: no WORLD_SIZE)."""
    for var in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        monkeypatch.delenv(var, raising=False)
    spec = importlib.util.spec_from_file_location('detect_boxes_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def full_run(assets):
    """One uninterrupted single-process run (with a loader worker): the reference output."""
    out = assets['root'] / 'full' / 'boxes.jsonl'
    stderr = cli(assets, out, '--num-workers', '1')
    return {'out': out, 'stderr': stderr, 'entries': boxfile.read_entries(str(out))}


def assert_same_entries(got, want):
    assert [e['id'] for e in got] == [e['id'] for e in want]
    for g, w in zip(got, want):
        assert g['labels'] == w['labels'] and g['boxes'] == w['boxes'], g['id']
        assert g['scores'] == pytest.approx(w['scores'], abs=1e-6), g['id']


# ------------------------------------------------------------------------------------------ geometry

def test_padded_frame_rescaling_hand_numbers():
    # normalised cxcywh in OWLv2's padded square (image top-left, padding bottom/right): pixels = value * max(W,H)
    pred = torch.tensor([[[0.5, 0.125, 1.0, 0.25], [0.25, 0.25, 0.25, 0.25]],     # wide 256x64: S=256
                         [[0.25, 0.5, 0.5, 1.0], [0.75, 0.5, 0.5, 0.5]]])         # tall 128x256: S=256
    got = padded_frame_to_original(pred, [(256, 64), (128, 256)])
    assert got.tolist() == [[[0, 0, 256, 64], [32, 32, 96, 96]],
                            [[0, 0, 128, 256], [128, 64, 256, 192]]]
    # second tall box lies in the right padding: x1 = 128 = W is "touching", x1 > W would be outside


def test_boxes_to_entry_threshold_truncation_and_outside():
    # 4 patches, 2 real queries + 1 padded query (masked to the dtype minimum, as the class head does)
    lo = torch.finfo(torch.float32).min
    logits = torch.tensor([[2.0, -1.0, lo], [0.0, -3.0, lo], [-1.0, 1.0, lo], [3.0, 0.0, lo]])
    xyxy = torch.tensor([[-3.7, 1.9, 10.2, 20.99],     # truncated toward zero: [-3, 1, 10, 20]
                         [0.0, 0.0, 5.0, 5.0],          # score sigmoid(0) = 0.5, not > 0.5: dropped
                         [5.5, 6.5, 30.0, 30.0],        # label 1
                         [41.0, 0.0, 60.0, 9.0]])       # x1 > W=40: entirely outside, dropped (NEW)
    entry, dropped = boxes_to_entry(logits, xyxy, ['cat', 'dog'], (40, 30), threshold=0.5)
    assert entry['boxes'] == [[-3, 1, 10, 20], [5, 6, 30, 30]]
    assert entry['labels'] == ['cat', 'dog']
    assert entry['scores'] == pytest.approx([torch.sigmoid(torch.tensor(2.0)).item(),
                                             torch.sigmoid(torch.tensor(1.0)).item()])
    assert dropped == 1


def test_owlv2_pads_bottom_right_then_batched_detect_matches_hf(assets):
    from transformers import Owlv2ForObjectDetection, Owlv2Processor
    det = OwlDetector(assets['owl'], threshold=0.0)
    proc = Owlv2Processor.from_pretrained(assets['owl'])
    wide = Image.new('RGB', (128, 64), (255, 255, 255))
    pix = proc.image_processor(images=wide, return_tensors='pt')['pixel_values'][0]   # (3, 64, 64)
    gray = (0.5 - torch.tensor(proc.image_processor.image_mean)) / torch.tensor(proc.image_processor.image_std)
    assert torch.allclose(pix[:, 40:, :], gray[:, None, None].expand(3, 24, 64), atol=1e-4)   # bottom: padding
    assert (pix[:, :30, :] > gray[:, None, None] + 1).all()                                  # top: the image

    # the reference call: full forward + post_process_object_detection with target_sizes [[max(W,H)]*2]
    model = Owlv2ForObjectDetection.from_pretrained(assets['owl']).eval()
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8))
              for i, (w, h) in enumerate([(120, 60), (50, 90), (64, 64)])]
    tags = [['cat', 'dog', 'traffic light'], ['dog'], ['cat', 'dog']]
    ref = []
    for img, t in zip(images, tags):
        with torch.no_grad():
            out = model(**proc(text=[[f'a photo of {x}' for x in t]], images=img, return_tensors='pt'))
        r = proc.post_process_object_detection(outputs=out, threshold=0.0,
                                               target_sizes=torch.Tensor([[max(img.size)] * 2]))[0]
        ref.append({'boxes': r['boxes'].int().tolist(), 'scores': r['scores'].tolist(),
                    'labels': [t[i] for i in r['labels'].tolist()]})
    pixels = torch.stack([det.image_processor(images=im, return_tensors='pt')['pixel_values'][0] for im in images])
    batched = det.detect(pixels, tags, [im.size for im in images])
    singles = [det.detect(pixels[i:i + 1], tags[i:i + 1], [images[i].size])[0] for i in range(3)]
    for r, (b, nb), (s, ns) in zip(ref, batched, singles):
        for got, n in ((b, nb), (s, ns)):   # the reference keeps out-of-image boxes; we drop and count them
            kept = [i for i, box in enumerate(r['boxes']) if box in got['boxes']]
            assert len(kept) + n == len(r['boxes'])
            assert got['boxes'] == [r['boxes'][i] for i in kept]
            assert got['labels'] == [r['labels'][i] for i in kept]
            assert got['scores'] == pytest.approx([r['scores'][i] for i in kept], abs=1e-6)
    assert det.detect(pixels[:1], [[]], [images[0].size])[0] == ({'boxes': [], 'scores': [], 'labels': []}, 0)


# --------------------------------------------------------------------------------------------- box files

def test_jsonl_tail_tolerance_and_trim(tmp_path):
    p = tmp_path / 'b.jsonl'
    good = [{'id': 1, 'boxes': [[0, 0, 1, 1]], 'scores': [0.5], 'labels': ['a']}, {'id': 'x', 'boxes': [],
                                                                                   'scores': [], 'labels': []}]
    text = ''.join(json.dumps(e) + '\n' for e in good)
    p.write_text(text + '{"id": 3, "boxes": [[0, ')                      # cut-off write
    assert boxfile.read_entries(str(p)) == good
    assert boxfile.trim_partial_tail(str(p)) and p.read_text() == text
    p.write_text(text.rstrip('\n'))                                       # complete entry, newline missing
    assert not boxfile.trim_partial_tail(str(p)) and p.read_text() == text
    p.write_text(text + '{"id": 3, "boxes": [[0, 0, 1, 1]]}\n' + text)      # bad entry in the middle: an error
    with pytest.raises(DataError, match='line 3'):
        boxfile.read_entries(str(p))


def test_shard_and_merge_keep_input_order_and_are_idempotent(tmp_path):
    items = [(i, f'{i}.png') for i in range(7)]
    shards = [boxfile.shard(items, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == items and shards[1] == [(1, '1.png'), (4, '4.png')]
    out = str(tmp_path / 'boxes.json')
    entry = lambda i: {'id': i, 'boxes': [], 'scores': [], 'labels': []}   # noqa: E731
    boxfile.write_entries(out, [entry(5)])                                 # earlier merged result
    for r, shard in enumerate(shards):
        with boxfile.EntryWriter(boxfile.partial_path(out, r)) as w:
            for sid, _ in shard:
                if sid != 5:
                    w.write(entry(sid))
    (tmp_path / 'boxes.json.rank1').open('a').write('{"id": 9')          # a cut-off line is ignored
    assert [Path(p).name for p in boxfile.partial_files(out)] == [f'boxes.json.rank{r}' for r in range(3)]
    order = [sid for sid, _ in items]
    assert boxfile.merge_outputs(out, order) == 7
    assert boxfile.partial_files(out) == []
    first = Path(out).read_text()
    assert [e['id'] for e in json.loads(first)] == order                 # a JSON list (spec §2.2), input order
    assert boxfile.merge_outputs(out, order) == 7 and Path(out).read_text() == first
    assert list(load_box_index(out)) == [str(i) for i in order]


# -------------------------------------------------------------------------------------------------- CLI

def test_folder_run_writes_valid_box_json(assets, full_run):
    index = load_box_index(str(full_run['out']))
    assert sorted(index) == sorted(GOOD_IDS) and [e['id'] for e in full_run['entries']] == GOOD_IDS
    assert "bad image skipped: id 'corrupt'" in full_run['stderr'] and 'corrupt.png' in full_run['stderr']
    assert '1 bad image(s) skipped' in full_run['stderr']
    spec = VisionSpec()
    for sid, (w, h) in SIZES.items():
        e = index[sid]
        assert e['boxes'] and set(e['labels']) <= {'cat', 'dog', 'traffic light'} and len(set(e['labels'])) <= 2
        assert all(isinstance(v, int) for box in e['boxes'] for v in box)
        assert all(0 <= s <= 1 for s in e['scores'])
        b = np.array(e['boxes'])
        # within the image frame: every box overlaps the image (OWLv2 boxes may spill over the border,
        # unclipped as in the reference, spec §2.2) and training accepts them without skip_bad
        assert (b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all()
        assert (b[:, 2] >= 0).all() and (b[:, 3] >= 0).all() and (b[:, 0] <= w).all() and (b[:, 1] <= h).all()
        preprocess_boxes(e['boxes'], e['labels'], e['scores'], (w, h), spec)


def test_resume_after_interruption(assets, full_run, tmp_path, tool, capsys):
    out = tmp_path / 'boxes.jsonl'
    lines = full_run['out'].read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:len(lines[1]) // 2])           # killed while writing entry 2
    stderr = cli(assets, out)
    assert 'skipping 1 done, 4 to process' in stderr                  # 5 files, entry 1 not recomputed
    assert 'dropped a cut-off last line' in stderr
    assert_same_entries(boxfile.read_entries(str(out)), full_run['entries'])
    assert tool.main([str(a) for a in cli_args(assets, out, '--num-workers', '0', '--no-progress')]) == 0
    assert 'skipping 4 done, 1 to process' in capsys.readouterr().err  # finished: only the bad image is retried
    assert_same_entries(boxfile.read_entries(str(out)), full_run['entries'])


def test_jsonl_input_and_json_list_output_in_process(assets, tmp_path, tool, capsys):
    shutil.copy(assets['images'] / 'wide.png', tmp_path / 'w.png')
    recs = [{'id': 7, 'image': 'w.png'}, {'id': 'txt', 'conversations': []}, {'question_id': 8, 'image': 'gone.jpg'},
            {'image': 'w.png'}, {'id': 7, 'image': 'w.png'}]
    (tmp_path / 'q.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    out = tmp_path / 'o' / 'boxes.json'
    argv = ['--images', str(tmp_path / 'q.jsonl'), '--detector', assets['owl'], '--tags-file', str(assets['vocab']),
            '--out', str(out), '--box-threshold', '0', '--num-workers', '0', '--no-progress', '--device', 'cpu']
    assert tool.main(argv) == 0
    err = capsys.readouterr().err
    assert "bad image skipped: id 8" in err and 'gone.jpg' in err and 'file not found' in err
    assert 'records without id' in err and 'repeated id skipped: 7' in err
    entries = json.loads(out.read_text())                              # spec §2.2: a JSON list
    assert [e['id'] for e in entries] == [7]                           # raw int id kept
    assert set(entries[0]['labels']) <= {'cat', 'dog', 'traffic light'}
    assert not list((tmp_path / 'o').glob('boxes.json.*'))             # partial file merged and removed


def test_torchrun_two_ranks_match_single_process(assets, full_run, tmp_path):
    out = tmp_path / 'boxes.jsonl'
    out.write_text(full_run['out'].read_text().splitlines(keepends=True)[0])   # resume from one entry
    stderr = cli(assets, out, '--num-workers', '0', '--no-progress', torchrun=True)
    # input order: corrupt, square, sub/small, tall, wide -> rank 0 takes 0, 2, 4; rank 1 takes square (done), tall
    assert '[detect_boxes rank 0] 3 images in this shard, skipping 0 done, 3 to process' in stderr
    assert '[detect_boxes rank 1] 2 images in this shard, skipping 1 done, 1 to process' in stderr
    assert_same_entries(boxfile.read_entries(str(out)), full_run['entries'])
    assert boxfile.partial_files(str(out)) == []
