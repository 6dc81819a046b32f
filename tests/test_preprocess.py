"""Tests for mg_llava.data.preprocess: golden box cases (spec §9), image parity with HF CLIP, load errors."""
from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import batched_nms

from mg_llava.data.preprocess import (CLIP_MEAN, CLIP_STD, BoxError, ImageError, VisionSpec, load_image,
                                      preprocess_boxes, preprocess_image)

SPEC = VisionSpec()   # S = 768


def run(boxes, labels, scores, size, spec=SPEC, **kw):
    out, labs, stats = preprocess_boxes(boxes, labels, scores, size, spec, **kw)
    assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 4
    return out.tolist(), labs, stats


def grid_boxes(n, cell=30, size=20):
    """n non-overlapping size x size boxes on a grid (they all survive NMS)."""
    per_row = 20
    return [[(i % per_row) * cell, (i // per_row) * cell, (i % per_row) * cell + size, (i // per_row) * cell + size]
            for i in range(n)]


# ------------------------------------------------------------------------------------------ golden boxes

def test_wide_image_shifts_y():
    # 640x480: pad to 640 square, delta_y = (640-480)//2 = 80; scale = 768/640 = 1.2; int(640*1.2) = 768 -> start 0
    # [100,50,300,200] -> [100,130,300,280] -> *1.2 -> [120,156,360,336]
    out, labs, stats = run([[100, 50, 300, 200]], ['cat'], [0.9], (640, 480))
    assert out == [[120, 156, 360, 336]] and labs == ['cat']
    assert stats == {'raw': 1, 'degenerate': 0, 'outside': 0, 'after_nms': 1, 'kept': 1, 'cropped': 0}


def test_tall_image_shifts_x():
    # 300x500: pad to 500 square, delta_x = (500-300)//2 = 100; scale = 768/500 = 1.536; int(500*1.536) = 768
    # [10,20,110,220] -> [110,20,210,220] -> *1.536 = [168.96, 30.72, 322.56, 337.92] -> round [169,31,323,338]
    out, labs, _ = run([[10, 20, 110, 220]], ['dog'], [0.5], (300, 500))
    assert out == [[169, 31, 323, 338]] and labs == ['dog']


def test_tall_image_crop_start_minus_one():
    # 400x642: delta_x = (642-400)//2 = 121; scale = 768/642; int(642*scale) = 767 (float rounds down),
    # so upstream's crop start is (767-768)//2 = -1 and every coordinate moves by +1.
    # [0,0,100,100] -> [121,0,221,100] -> *1.19626 = [144.75, 0, 264.37, 119.63] -> [145,0,264,120] -> +1
    assert int(642 * (768 / 642)) == 767
    out, _, _ = run([[0, 0, 100, 100]], ['a'], [0.5], (400, 642))
    assert out == [[146, 1, 265, 121]]


def test_square_image():
    # 500x500: no shift; scale 1.536: [50,100,250,300] -> [76.8,153.6,384,460.8] -> [77,154,384,461]
    out, _, _ = run([[50, 100, 250, 300]], ['a'], [0.5], (500, 500))
    assert out == [[77, 154, 384, 461]]


def test_empty_detections_give_one_zero_box():
    for boxes in ([], np.zeros((0, 4))):
        out, labs, stats = run(boxes, [], [], (640, 480))
        assert out == [[0, 0, 0, 0]] and labs == [] and stats['raw'] == 0 and stats['kept'] == 0


def test_boxes_beyond_border_clamped_only_at_S():
    # 640x480, bottom/right spill: [10,400,100,530] -> y+80 -> [10,480,100,610] -> *1.2 -> [12,576,120,732]:
    # y2=732 lies in the bottom padding (image ends at (80+480)*1.2=672) and is NOT clamped there.
    # [600,10,700,50] -> [600,90,700,130] -> *1.2 -> [720,108,840,156] -> x2 clamped to 768.
    out, labs, _ = run([[10, 400, 100, 530], [600, 10, 700, 50]], ['a', 'b'], [0.9, 0.8], (640, 480))
    assert out == [[12, 576, 120, 732], [720, 108, 768, 156]] and labs == ['a', 'b']


def test_same_label_over_limit_keeps_top_20():
    rng = np.random.default_rng(0)
    scores = rng.permutation(120) / 120.0
    out, labs, stats = run(grid_boxes(120), ['person'] * 120, scores, (640, 640))
    assert len(out) == 20 and labs == ['person'] * 20 and stats['after_nms'] == 120
    expect = np.argsort(-scores)[:20]   # 640 square -> scale 1.2
    assert out == (np.round(np.asarray(grid_boxes(120), np.float32)[expect] * np.float32(1.2))).tolist()


def test_cap_trigger_and_k():
    boxes = grid_boxes(100)
    scores = np.linspace(1, 0.01, 100)
    assert len(run(boxes, ['p'] * 100, scores, (640, 640))[0]) == 100             # n == limit_num: no cap
    assert len(run(boxes, ['p'] * 100, scores, (640, 640), VisionSpec(limit_num=30))[0]) == 5    # k=5 below 50
    assert len(run(boxes, ['p'] * 100, scores, (640, 640), VisionSpec(limit_num=50))[0]) == 5    # upstream NameError
    assert len(run(boxes, ['p'] * 100, scores, (640, 640), VisionSpec(limit_num=None))[0]) == 100


def test_text_near_max_length_keeps_one_per_label():
    labels = ['a', 'b', 'c'] * 4
    scores = np.arange(12)[::-1] / 12 + 0.01          # 'a' best, then 'b', then 'c'
    scores[2] = 0.99                                   # ... except one 'c' is the global best
    close = run(grid_boxes(12), labels, scores, (640, 640), text_len=1430, max_length=1472)
    assert close[1] == ['c', 'a', 'b']                 # first-appearance order in score-descending list
    assert close[0][0] == (np.round(np.float32(grid_boxes(12)[2]) * np.float32(1.2))).tolist()
    far = run(grid_boxes(12), labels, scores, (640, 640), text_len=1421, max_length=1472)   # 1421 < 1472-50
    assert len(far[1]) == 12
    # limit_num=None with close still caps (upstream would raise TypeError here)
    assert len(run(grid_boxes(12), labels, scores, (640, 640), VisionSpec(limit_num=None),
                   text_len=1472, max_length=1472)[1]) == 3


def test_hard_cap_max_objects():
    labels = [f'l{i % 10}' for i in range(200)]     # 10 labels x 20 boxes: the upstream cap keeps all 200
    scores = np.random.default_rng(1).permutation(200) / 200.0
    unbounded = run(grid_boxes(200), labels, scores, (640, 640), VisionSpec(max_objects=10 ** 6))
    assert len(unbounded[1]) == 200
    for m in (100, 7):
        out, labs, stats = run(grid_boxes(200), labels, scores, (640, 640), VisionSpec(max_objects=m))
        assert len(out) == len(labs) == stats['kept'] == m
        # the m best scores survive, in the grouped order of the uncapped result
        best = set(map(tuple, np.round(np.float32(grid_boxes(200))[np.argsort(-scores)[:m]] * np.float32(1.2))))
        assert [tuple(b) for b in unbounded[0] if tuple(b) in best] == [tuple(b) for b in out]


def test_nms_is_class_aware():
    a, b = [100, 100, 200, 200], [110, 110, 210, 210]    # IoU = 8100/11900 = 0.68 > 0.2
    out, labs, stats = run([a, b], ['dog', 'dog'], [0.6, 0.9], (640, 640))
    assert labs == ['dog'] and out == [[132, 132, 252, 252]] and stats['after_nms'] == 1   # the 0.9 box
    out, labs, _ = run([a, b], ['dog', 'cat'], [0.6, 0.9], (640, 640))
    assert labs == ['cat', 'dog']                           # both kept, score-descending
    c = [180, 100, 280, 200]                                # IoU with a = 2000/18000 = 0.11 < 0.2
    assert len(run([a, c], ['dog', 'dog'], [0.6, 0.9], (640, 640))[1]) == 2


def test_bad_boxes_raise_or_are_skipped():
    boxes = [[10, 10, 50, 50], [60, 10, 40, 50], [0, float('nan'), 5, 5], [700, 10, 720, 20], [5, -30, 9, -10]]
    labels, scores = list('abcde'), [0.9, 0.8, 0.7, 0.6, 0.5]
    with pytest.raises(BoxError, match=r'2 degenerate and 2 out-of-frame.*#1 .*degenerate.*#3 .*out-of-frame'):
        preprocess_boxes(boxes, labels, scores, (640, 480), SPEC)
    out, labs, stats = run(boxes, labels, scores, (640, 480), skip_bad=True)
    assert labs == ['a'] and stats['degenerate'] == 2 and stats['outside'] == 2 and stats['kept'] == 1
    with pytest.raises(BoxError, match='length mismatch'):
        preprocess_boxes([[0, 0, 1, 1]], ['a', 'b'], [0.5], (10, 10), SPEC)
    with pytest.raises(BoxError, match=r'shape \(n, 4\)'):
        preprocess_boxes([[0, 0, 1]], ['a'], [0.5], (10, 10), SPEC)
    with pytest.raises(ValueError, match='image_size_aux'):
        preprocess_boxes([], [], [], (10, 10), VisionSpec(image_size_aux=None))


def test_input_array_not_mutated():
    boxes = np.array([[10.0, 10, 50, 50]])
    run(boxes, ['a'], [0.5], (300, 500))
    assert boxes.tolist() == [[10, 10, 50, 50]]


def _upstream_oracle(boxes, labels, scores, w, h, S=768, limit_num=100, close=False):
    """Spec §2.4 restated literally (topk per label, regroup, round, crop), for random-case parity."""
    d = (max(w, h) - min(w, h)) // 2
    boxes = [[x1, y1 + d, x2, y2 + d] if w > h else [x1 + d, y1, x2 + d, y2] for x1, y1, x2, y2 in boxes]
    ids = {lab: i for i, lab in enumerate(sorted(set(labels)))}
    bt, st = torch.tensor(boxes).float(), torch.tensor(scores)
    keep = batched_nms(bt, st, torch.tensor([ids[lab] for lab in labels]), 0.2)
    bt, st, labels = bt[keep], st[keep], [labels[i] for i in keep.tolist()]
    k = 1 if close else (20 if limit_num > 50 else 5)
    if close or len(st) > limit_num:
        groups = defaultdict(list)
        for i, lab in enumerate(labels):
            groups[lab].append(i)
        for lab, idx in groups.items():
            if len(idx) > k:
                groups[lab] = [idx[j] for j in st[idx].topk(k).indices.tolist()]
        order = [i for idx in groups.values() for i in idx]
        bt, labels = bt[order], [labels[i] for i in order]
    side = max(w, h)
    scale = S / side
    bt = torch.round(bt * scale).int()
    start = (int(side * scale) - S) // 2
    out = [[max(a - start, 0), max(b - start, 0), min(c - start, S), min(e - start, S)] for a, b, c, e in bt.tolist()]
    keep = [not (x2 < 0 or y2 < 0 or x1 > S or y1 > S) for x1, y1, x2, y2 in out]
    return [o for o, k in zip(out, keep) if k], [lab for lab, k in zip(labels, keep) if k]


@pytest.mark.parametrize('seed', range(6))
def test_matches_upstream_oracle_on_random_detections(seed):
    rng = np.random.default_rng(seed)
    w, h = [(642, 400), (400, 642), (640, 480), (500, 500), (1000, 333), (333, 1000)][seed]
    n = int(rng.integers(1, 260))
    xy = rng.uniform(0, [w, h], size=(n, 2))
    wh = rng.uniform(2, 80, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).round().tolist()     # may spill past the border, as OWLv2's do
    labels = [f't{i}' for i in rng.integers(0, 8, n)]
    scores = (rng.permutation(n) + 1) / (n + 1.0)
    for close in (False, True):
        kw = dict(text_len=1472, max_length=1472) if close else {}
        out, labs, _ = run(boxes, labels, scores.tolist(), (w, h), VisionSpec(max_objects=10 ** 6), **kw)
        assert (out, labs) == _upstream_oracle(boxes, labels, scores.tolist(), w, h, close=close)


# ------------------------------------------------------------------------------------------------ images

@pytest.fixture(scope='module')
def rgb():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8))


def clip_processor(size):
    from transformers import CLIPImageProcessor
    return CLIPImageProcessor(size={'shortest_edge': size}, crop_size={'height': size, 'width': size},
                              do_center_crop=True, resample=3, image_mean=CLIP_MEAN, image_std=CLIP_STD)


def padded(img):
    side = max(img.size)
    canvas = Image.new('RGB', (side, side), (122, 116, 104))          # int(255*mean)
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return canvas


def hf(img, size):
    return clip_processor(size)(img, return_tensors='pt')['pixel_values'][0]


def test_mg_views_match_hf_clip(rgb):
    spec = VisionSpec(image_size=28, image_size_aux=64)
    for img in (rgb, rgb.transpose(Image.Transpose.TRANSPOSE)):        # W>H and H>W
        out = preprocess_image(img, spec)
        assert out['orig_size'] == img.size
        aux, low = out['pixel_values_aux'], out['pixel_values']
        assert aux.shape == (3, 64, 64) and aux.dtype == torch.float32 and low.shape == (3, 28, 28)
        assert (aux - hf(padded(img), 64)).abs().max() < 1e-5
        assert torch.equal(low, F.interpolate(aux[None], size=(28, 28), mode='bilinear', align_corners=False)[0])


def test_padding_colour(rgb):
    aux = preprocess_image(rgb, VisionSpec(image_size=28, image_size_aux=64))['pixel_values_aux']
    pad = (torch.tensor([122, 116, 104]) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert (aux[:, 0, 0] - pad).abs().max() < 1e-5          # top rows of a W>H image are padding
    assert (aux[:, -1, -1] - pad).abs().max() < 1e-5


def test_llava15_mode_and_no_padding(rgb):
    out = preprocess_image(rgb, VisionSpec(image_size=28, image_size_aux=None))
    assert 'pixel_values_aux' not in out
    assert (out['pixel_values'] - hf(padded(rgb), 28)).abs().max() < 1e-5
    out = preprocess_image(rgb, VisionSpec(image_size=28, image_size_aux=64, pad_to_square=False))
    assert (out['pixel_values_aux'] - hf(rgb, 64)).abs().max() < 1e-5   # shortest edge + centre crop


def test_load_image(tmp_path):
    good = tmp_path / 'gray.png'
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(good)
    img = load_image(good)
    assert img.mode == 'RGB' and img.size == (7, 5)
    missing = tmp_path / 'nope.jpg'
    with pytest.raises(ImageError, match='nope.jpg') as e:
        load_image(missing)
    assert e.value.path == str(missing)
    corrupt = tmp_path / 'x.jpg'
    corrupt.write_bytes(b'\x00garbage' * 50)
    with pytest.raises(ImageError, match='x.jpg'):
        load_image(corrupt)
    truncated = tmp_path / 't.jpg'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ImageError, match='t.jpg'):
        load_image(truncated)
