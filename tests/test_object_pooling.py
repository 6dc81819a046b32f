"""Parity of mg_llava.models.object_pooling with the upstream object-token formula."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root, in case the package is not installed

from mg_llava.models.object_pooling import pool_object_features, reference_pool_object_features  # noqa: E402


def literal_reference(stage_maps, boxes, batch_index, image_size, output_size=56):
    """Upstream formula written out independently of the module: per-image roi_align with box lists."""
    H0, W0 = stage_maps[0].shape[-2:]
    roi_map = torch.cat([stage_maps[0]] + [
        F.interpolate(m.float(), size=(H0, W0), mode='bilinear', align_corners=False) for m in stage_maps[1:]
    ], dim=1).float()
    out = roi_map.new_zeros(boxes.shape[0], roi_map.shape[1])
    for b in range(roi_map.shape[0]):
        sel = torch.nonzero(batch_index == b).flatten()
        if sel.numel() == 0:
            continue
        feat = roi_align(roi_map[b:b + 1], [boxes[sel].float()], output_size=output_size,
                         spatial_scale=H0 / image_size, sampling_ratio=-1, aligned=False)
        out = out.index_copy(0, sel, feat.mean(dim=(2, 3)))
    return out


def make_maps(B, channels, sizes, seed=0, smooth=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    maps = []
    for C, s in zip(channels, sizes):
        if smooth:  # upsampled noise: features vary over several native pixels
            low = torch.randn(B, C, max(s // 4, 1), max(s // 4, 1), generator=g)
            maps.append(F.interpolate(low, size=(s, s), mode='bilinear', align_corners=False).to(dtype))
        else:
            maps.append(torch.randn(B, C, s, s, generator=g).to(dtype))
    return maps


def make_boxes(S, n_random=24, seed=0):
    """Special boxes (tiny, whole image, degenerate, partly/fully outside, huge, reversed) + random ones."""
    g = torch.Generator().manual_seed(seed)
    special = torch.tensor([
        [0., 0., 0., 0.],                      # upstream "no detection"
        [0., 0., S, S],                        # whole image
        [10.3, 20.7, 10.9, 21.2],              # < 1 feature px
        [50., 50., 50., 50.],                  # zero area
        [-30., -12.5, 40.2, 33.3],             # partly outside (top-left)
        [S - 20.1, S - 35.7, S + 41.3, S + 10.2],  # partly outside (bottom-right)
        [S + 5.3, 3.1, S + 60.2, 40.4],        # fully outside (right)
        [-90.2, -70.1, -10.4, -20.6],          # fully outside (top-left)
        [-3.7, 10., -0.5, 30.],                # outside the image but within 1 fine px of it
        [-S, -S, 2. * S, 2. * S],              # huge: adaptive grid > 1
        [60., 60., 40., 40.],                  # reversed: roi clamps to 1 fine px
    ])
    xy = torch.rand(n_random, 2, generator=g) * 1.3 * S - 0.2 * S
    wh = 0.05 * (26. * S) ** torch.rand(n_random, 2, generator=g)  # log-uniform in [0.05, 1.3 S]
    return torch.cat([special, torch.cat([xy, xy + wh], 1)], 0)


def interleaved_index(K, B):
    # Images 0 and B-1 only (the others get no box), interleaved in the input order.
    return torch.tensor([0 if i % 3 else B - 1 for i in range(K)])


CASES = [  # (B, channels, sizes, image_size, output_size)
    (3, (4, 6, 8, 10), (32, 16, 8, 4), 128, 56),
    (3, (4, 6, 8, 10), (64, 32, 16, 8), 256, 56),  # boxes up to ~83 fine px: grid count 2
    (3, (4, 6, 8, 10), (32, 16, 8, 4), 128, 7),  # grid count up to 14
]


@pytest.mark.parametrize('B,channels,sizes,S,P', CASES)
def test_exact_matches_literal_reference(B, channels, sizes, S, P):
    maps = make_maps(B, channels, sizes, seed=1)
    boxes = make_boxes(S, seed=2)
    bidx = interleaved_index(len(boxes), B)
    ref = literal_reference(maps, boxes, bidx, S, P)
    out = pool_object_features(maps, boxes, bidx, S, mode='exact', output_size=P)
    assert out.shape == (len(boxes), sum(channels)) and out.dtype == torch.float32
    err = (out - ref).abs().max().item()
    assert err < 1e-4 * max(1.0, ref.abs().max().item()), err
    # The helper used by benchmark() is the same formula.
    helper = reference_pool_object_features(maps, boxes, bidx, S, P)
    assert torch.allclose(helper, ref, atol=1e-5)


def test_exact_single_stage_and_bf16_input():
    maps = make_maps(2, (5, 7), (32, 16), seed=3, dtype=torch.bfloat16)
    boxes = make_boxes(128, seed=4)
    bidx = interleaved_index(len(boxes), 2)
    out = pool_object_features(maps, boxes, bidx, 128)
    assert out.dtype == torch.float32
    assert (out - literal_reference(maps, boxes, bidx, 128)).abs().max() < 1e-4 * 4
    one = pool_object_features(maps[:1], boxes, bidx, 128)
    assert (one - literal_reference(maps[:1], boxes, bidx, 128)).abs().max() < 1e-4 * 4


@pytest.mark.parametrize('B,channels,sizes,S,P', CASES[:2])
def test_fast_close_to_exact_on_smooth_maps(B, channels, sizes, S, P):
    maps = make_maps(B, channels, sizes, seed=5, smooth=True)
    boxes = make_boxes(S, seed=6)
    bidx = interleaved_index(len(boxes), B)
    exact = pool_object_features(maps, boxes, bidx, S, mode='exact', output_size=P)
    fast = pool_object_features(maps, boxes, bidx, S, mode='fast', output_size=P)
    assert fast.shape == exact.shape and fast.dtype == exact.dtype
    rel = ((fast - exact).abs().max() / exact.abs().max()).item()
    print(f'fast vs exact: max rel err {rel:.2e} (S={S}, sizes={sizes})')
    assert rel < 0.05


def test_fast_equals_exact_on_constant_maps():
    # Interpolation of a constant is exact, so only the border/validity bookkeeping can differ.
    sizes, S = (32, 16, 8, 4), 128
    maps = [torch.full((2, c, s, s), float(c)) for c, s in zip((4, 6, 8, 10), sizes)]
    boxes = make_boxes(S, seed=7)
    bidx = interleaved_index(len(boxes), 2)
    exact = pool_object_features(maps, boxes, bidx, S, mode='exact')
    fast = pool_object_features(maps, boxes, bidx, S, mode='fast')
    assert torch.allclose(exact, literal_reference(maps, boxes, bidx, S), atol=1e-4)
    assert torch.allclose(fast, exact, atol=1e-4)
    consts = torch.cat([torch.full((c,), float(c)) for c in (4, 6, 8, 10)])
    assert exact[6].abs().max() == 0 and torch.allclose(exact[1], consts)  # outside -> 0; whole image -> c


@pytest.mark.parametrize('mode', ['exact', 'fast'])
def test_empty_boxes(mode):
    maps = make_maps(2, (4, 6), (16, 8), seed=8)
    out = pool_object_features(maps, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 64, mode=mode)
    assert out.shape == (0, 10) and out.dtype == torch.float32


@pytest.mark.parametrize('mode', ['exact', 'fast'])
def test_box_order_preserved(mode):
    B, S = 3, 128
    maps = make_maps(B, (4, 6, 8, 10), (32, 16, 8, 4), seed=9)
    boxes = make_boxes(S, n_random=12, seed=10)
    bidx = torch.randint(0, B, (len(boxes),), generator=torch.Generator().manual_seed(11))
    out = pool_object_features(maps, boxes, bidx, S, mode=mode)
    one_by_one = torch.cat([pool_object_features(maps, boxes[i:i + 1], bidx[i:i + 1], S, mode=mode)
                            for i in range(len(boxes))])
    assert torch.allclose(out, one_by_one, atol=1e-5)
    perm = torch.randperm(len(boxes), generator=torch.Generator().manual_seed(12))
    assert torch.allclose(pool_object_features(maps, boxes[perm], bidx[perm], S, mode=mode), out[perm], atol=1e-5)


def test_exact_gradcheck_double():
    maps = [m.requires_grad_() for m in make_maps(2, (2, 3), (8, 4), seed=13, dtype=torch.float64)]
    boxes = torch.tensor([[1., 2., 20., 30.], [-5., 3., 12., 40.], [0., 0., 0., 0.], [4.5, 6.2, 33., 17.]])
    bidx = torch.tensor([1, 0, 1, 0])
    assert torch.autograd.gradcheck(lambda *m: pool_object_features(list(m), boxes, bidx, 32, 'exact', 7), maps)


def test_exact_grads_match_reference():
    B, S = 3, 128
    maps = make_maps(B, (4, 6, 8, 10), (32, 16, 8, 4), seed=14)
    boxes = make_boxes(S, n_random=10, seed=15)
    bidx = interleaved_index(len(boxes), B)
    w = torch.randn(len(boxes), 28, generator=torch.Generator().manual_seed(16))
    grads = []
    for fn in (lambda m: pool_object_features(m, boxes, bidx, S, 'exact'),
               lambda m: literal_reference(m, boxes, bidx, S)):
        m = [x.clone().requires_grad_() for x in maps]
        (fn(m) * w).sum().backward()
        grads.append([x.grad for x in m])
    for g_exact, g_ref in zip(*grads):
        assert (g_exact - g_ref).abs().max() < 1e-4 * max(1.0, g_ref.abs().max().item())
    m = [x.clone().requires_grad_() for x in maps]
    pool_object_features(m, boxes, bidx, S, 'fast').sum().backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in m)


def test_bad_mode():
    with pytest.raises(ValueError):
        pool_object_features(make_maps(1, (2,), (8,)), torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), 32, 'x')
