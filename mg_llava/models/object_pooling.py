"""Object-token pooling for MG-LLaVA without materialising the upsampled multi-stage map.

Reference (upstream) semantics, for stage maps X_k of shape (B, C_k, h_k, w_k) and boxes in pixels of the
high-res input (side S = image_size)::

    roi_map = cat([X_0] + [interpolate(X_k, (H_0, W_0), 'bilinear', align_corners=False) for k >= 1], 1)
    token   = roi_align(roi_map, boxes, P, spatial_scale=H_0/S, sampling_ratio=-1, aligned=False).mean((2, 3))

`exact` mode. With aligned=False and adaptive sampling, the P bins of a box along x hold g = ceil(roi_w/P)
samples each, i.e. the P*g midpoints of [x1*s0, x1*s0 + max((x2-x1)*s0, 1)]; every bin divides by g_h*g_w
and the mean divides by P*P. Validity (-1 <= coord <= size), the clamp at 0, the edge rule and the bilinear
weights of torchvision's kernel all factor into a y part and an x part, so the mean is <a, roi_map c> with
a in R^{H_0}, c in R^{W_0} (rank one per box). The align_corners=False upsample is a linear map U_k
(H_0 x h_k), hence token_k = (U_k^y^T a)^T X_k (U_k^x^T c): two short vectors contracted with the native map.
Equal to the reference up to float summation order (and the boundary cases where a sample lands exactly
on -1, size, or an integer, where both are continuous or differ by one float ulp of position).

`fast` mode. One torchvision.ops.roi_align call per native stage, 7x7 bins x sampling_ratio 8 = 56 midpoints
per axis, aligned=True. Fine coordinate f is read by the upsample at native (f + 0.5) * h_k/H_0 - 0.5, and
aligned=True samples at x' * h_k/S - 0.5, so x' = (f + 0.5) / s0 = x + 0.5 * S/H_0 for every stage (+2 px
when H_0 = S/4; for stage 0 this equals aligned=False without a shift; NOT a per-stage 2**k shift). The 56
samples per axis are spread from the first to the last VALID reference sample (those in [-1, H_0] fine px;
the others add 0) and the token is scaled by the valid fraction; inside that window the clamps of the
upsample and of RoIAlign on the native map agree with the reference's. So for boxes <= 56 fine px that do
not cross a border, the sample points coincide with the reference's. Residual error vs `exact` (~1% of the
feature scale on smooth maps, more on white noise): (i) the reference interpolates twice (linearly between
fine pixels, each itself an interpolation of the native map); (ii) boxes > 56 fine px, or crossing a
border, are resampled with 56 points per axis instead of the reference's valid ones.
"""
import math
import time

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

__all__ = ['pool_object_features', 'reference_pool_object_features', 'benchmark']


def _compute_dtype(stage_maps):
    # float32 at least (bf16/fp16 inputs are promoted); float64 stays float64 so gradcheck works.
    return torch.float64 if any(m.dtype == torch.float64 for m in stage_maps) else torch.float32


def _axis_weights(lo, hi, scale, size, pooled, in_frame=False):
    """Mean RoIAlign (aligned=False, adaptive grid) weights along one axis.

    lo, hi: (K,) box coordinates in input pixels. Returns (K, size): the average over the pooled*grid
    samples of torchvision's 1-D bilinear weights (invalid samples still count in the denominator).
    in_frame: boxes lie inside the input frame, so ceil(size/pooled) bounds the grid without a host sync.
    """
    K = lo.shape[0]
    start = lo * scale
    roi = torch.clamp(hi * scale - start, min=1.0)  # same op order as the kernel: end - start
    bin_size = roi / pooled
    grid = torch.ceil(roi / pooled)  # >= 1 because roi >= 1
    # pads the per-box sample grid; a static bound for in-frame boxes, else one host sync
    gmax = max(1, math.ceil(size / pooled)) if in_frame else int(grid.max().item())
    p = torch.arange(pooled, device=lo.device, dtype=lo.dtype)[None, :, None]
    i = torch.arange(gmax, device=lo.device, dtype=lo.dtype)[None, None, :]
    st, bs, gr = start[:, None, None], bin_size[:, None, None], grid[:, None, None]
    x = st + p * bs + ((i + 0.5) * bs) / gr  # (K, pooled, gmax), kernel's evaluation order
    keep = (i < gr) & (x >= -1.0) & (x <= size)
    x = x.clamp(min=0.0)
    low = x.floor()
    edge = low >= size - 1  # kernel: low = high = size-1 and coordinate = low (weight all on the edge)
    low = torch.where(edge, torch.full_like(low, size - 1), low)
    x = torch.where(edge, low, x)
    high = torch.where(edge, low, low + 1)
    frac = x - low
    norm = keep.to(lo.dtype) / (pooled * gr)
    w = lo.new_zeros(K, size)
    w.scatter_add_(1, low.long().reshape(K, -1), ((1.0 - frac) * norm).reshape(K, -1))
    w.scatter_add_(1, high.long().reshape(K, -1), (frac * norm).reshape(K, -1))
    return w


def _upsample_matrix(out_size, in_size, dtype, device):
    """(out_size, in_size) U with interpolate(bilinear, align_corners=False) == U @ x along one axis."""
    dst = torch.arange(out_size, device=device, dtype=dtype)
    src = ((in_size / out_size) * (dst + 0.5) - 0.5).clamp(min=0.0)  # PyTorch clamps negative src to 0
    i0 = src.floor().clamp(max=in_size - 1)
    lam = (src - i0).clamp(0.0, 1.0)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    U = torch.zeros(out_size, in_size, device=device, dtype=dtype)
    U.scatter_add_(1, i0.long()[:, None], (1.0 - lam)[:, None])
    U.scatter_add_(1, i1.long()[:, None], lam[:, None])
    return U


def _slots(batch_index, B, kmax=None):
    """Slot of each box inside its image (0..n_b-1, input order kept) and Kmax = max_b n_b
    (given by the caller, e.g. the collate, to avoid a host sync)."""
    K = batch_index.shape[0]
    counts = torch.bincount(batch_index, minlength=B)
    order = torch.argsort(batch_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(batch_index)
    slot[order] = torch.arange(K, device=batch_index.device) - starts[batch_index[order]]
    return slot, int(counts.max().item()) if kmax is None else kmax


def _exact(stage_maps, boxes, bidx, image_size, pooled, dtype, kmax=None, in_frame=False):
    B, _, H0, W0 = stage_maps[0].shape
    s0 = H0 / image_size
    a = _axis_weights(boxes[:, 1], boxes[:, 3], s0, H0, pooled, in_frame)  # (K, H0)
    c = _axis_weights(boxes[:, 0], boxes[:, 2], s0, W0, pooled, in_frame)  # (K, W0)
    slot, kmax = _slots(bidx, B, kmax)
    outs = []
    for X in stage_maps:
        _, C, h, w = X.shape
        # Pull the fine-grid weights back through the upsample: U^T a (identity when sizes agree).
        ak = a if h == H0 else a @ _upsample_matrix(H0, h, dtype, a.device)  # (K, h)
        ck = c if w == W0 else c @ _upsample_matrix(W0, w, dtype, c.device)  # (K, w)
        A = ak.new_zeros(B, kmax, h)
        A[bidx, slot] = ak
        Cw = ck.new_zeros(B, kmax, w)
        Cw[bidx, slot] = ck
        Xf = X.to(dtype)
        t = torch.bmm(Xf.reshape(B, C * h, w), Cw.transpose(1, 2))  # (B, C*h, kmax): contract x first
        tok = torch.einsum('bchk,bkh->bkc', t.view(B, C, h, kmax), A)  # (B, kmax, C)
        outs.append(tok[bidx, slot])  # back to input box order
    return torch.cat(outs, dim=1)


def _fast_axis(lo, hi, s0, size, pooled, m):
    """Span for m evenly spread RoIAlign samples along one axis, and the reference's valid fraction.

    The reference takes n = pooled*ceil(w/pooled) midpoints of [f1, f1 + w] (w = max(width, 1) fine px);
    samples outside [-1, size] add 0 but still count. The span is chosen so that the m samples run from the
    first to the last valid reference sample (for n == m and no cut they coincide with the reference's).
    Returns (start, end, frac), each (K,), in fine px."""
    f1 = lo * s0
    w = torch.clamp(hi * s0 - f1, min=1.0)
    n = pooled * torch.ceil(w / pooled)
    step = w / n
    j0 = torch.minimum(torch.ceil((-1.0 - f1) / step - 0.5).clamp(min=0), n)  # first j: f1+(j+.5)step >= -1
    j1 = torch.minimum(torch.floor((size - f1) / step - 0.5), n - 1)  # last j: f1+(j+.5)step <= size
    cnt = (j1 - j0 + 1).clamp(min=0)
    first = f1 + (j0 + 0.5) * step
    span = (cnt - 1).clamp(min=0) * step * (m / max(m - 1, 1))
    start = first - 0.5 * span / m
    return start, start + span, cnt / n


def _fast(stage_maps, boxes, bidx, image_size, pooled, dtype):
    H0, W0 = stage_maps[0].shape[-2:]
    s0 = H0 / image_size
    ratio = max(1, round(pooled / 7))  # 7 bins x 8 samples = 56 points per axis for pooled=56
    # Keep the samples inside the reference's valid window and reweight by its valid fraction: there the
    # clamps of the upsample and of RoIAlign on the native map agree with the reference's.
    x1, x2, fx = _fast_axis(boxes[:, 0], boxes[:, 2], s0, W0, pooled, 7 * ratio)
    y1, y2, fy = _fast_axis(boxes[:, 1], boxes[:, 3], s0, H0, pooled, 7 * ratio)
    # Fine coord f -> input px (f + 0.5) / s0 so that aligned=True on stage k samples the native coordinate
    # (f + 0.5) * h_k/H0 - 0.5, i.e. where the align_corners=False upsample reads it.
    rois = torch.stack([bidx.to(dtype), x1, y1, x2, y2], dim=1)
    rois[:, 1:] = (rois[:, 1:] + 0.5) / s0
    outs = []
    for X in stage_maps:
        feat = roi_align(X.to(dtype), rois, output_size=7, spatial_scale=X.shape[-2] / image_size,
                         sampling_ratio=ratio, aligned=True)  # (K, C_k, 7, 7)
        outs.append(feat.mean(dim=(2, 3)))
    return torch.cat(outs, dim=1) * (fx * fy)[:, None]


def pool_object_features(stage_maps, boxes, batch_index, image_size, mode='exact', output_size=56,
                         max_boxes_per_image=None, boxes_in_frame=False):
    """Pool one token per box from multi-stage maps.

    stage_maps: list of (B, C_k, H_k, W_k), stage 0 the finest; boxes: (K, 4) xyxy in pixels of the
    high-res input (side image_size); batch_index: (K,) long image index of each box.
    Returns (K, sum_k C_k) in box order, float32 (float64 if any map is float64).
    mode 'exact': reference semantics (module docstring) without the upsampled map; 'fast': one native
    roi_align per stage (approximate, see module docstring). Boxes are not differentiated.
    max_boxes_per_image / boxes_in_frame (boxes within [0, image_size], as preprocessing guarantees) let
    `exact` run without host syncs.
    """
    dtype = _compute_dtype(stage_maps)
    device = stage_maps[0].device
    c_total = sum(m.shape[1] for m in stage_maps)
    if boxes.shape[0] == 0:
        return torch.zeros(0, c_total, device=device, dtype=dtype)
    boxes = boxes.detach().to(device=device, dtype=dtype)
    bidx = batch_index.to(device=device, dtype=torch.long)
    if mode == 'exact':
        return _exact(stage_maps, boxes, bidx, image_size, output_size, dtype, max_boxes_per_image, boxes_in_frame)
    if mode == 'fast':
        return _fast(stage_maps, boxes, bidx, image_size, output_size, dtype)
    raise ValueError(f"mode must be 'exact' or 'fast', got {mode!r}")


def reference_pool_object_features(stage_maps, boxes, batch_index, image_size, output_size=56):
    """The literal upstream formula (materialises roi_map). For tests and parity measurements only."""
    H0, W0 = stage_maps[0].shape[-2:]
    roi_map = torch.cat([stage_maps[0]] + [
        F.interpolate(m.float(), size=(H0, W0), mode='bilinear', align_corners=False) for m in stage_maps[1:]
    ], dim=1).float()
    rois = torch.cat([batch_index.to(roi_map)[:, None], boxes.to(roi_map)], dim=1)
    feat = roi_align(roi_map, rois, output_size=output_size, spatial_scale=H0 / image_size,
                     sampling_ratio=-1, aligned=False)
    return feat.mean(dim=(2, 3))


def benchmark(device='cpu', B=2, boxes_per_image=30, image_size=768, channels=(192, 384, 768, 1536), seed=0):
    """Time reference vs exact vs fast at MG-LLaVA's real sizes and print ms and max relative errors.

    Maps are smooth (4x upsampled noise), like real features; errors are max|x - ref| / max|ref|.
    """
    g = torch.Generator().manual_seed(seed)
    maps = []
    for k, C in enumerate(channels):
        side = image_size // 2 ** (k + 2)
        low = torch.randn(B, C, max(side // 4, 1), max(side // 4, 1), generator=g)
        maps.append(F.interpolate(low, size=(side, side), mode='bilinear', align_corners=False).to(device))
    K = B * boxes_per_image
    xy = torch.rand(K, 2, generator=g) * image_size * 0.9
    wh = torch.exp(torch.rand(K, 2, generator=g) * math.log(image_size)).clamp(max=image_size)
    boxes = torch.cat([xy, (xy + wh).clamp(max=image_size)], 1).to(device)
    bidx = torch.arange(K) % B  # interleaved images
    bidx = bidx.to(device)

    def timed(fn, reps):
        best = float('inf')
        for _ in range(reps):
            if device != 'cpu':
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn()
            if device != 'cpu':
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return out, best * 1e3

    with torch.no_grad():
        ref, t_ref = timed(lambda: reference_pool_object_features(maps, boxes, bidx, image_size), 1)
        ex, t_ex = timed(lambda: pool_object_features(maps, boxes, bidx, image_size, 'exact'), 3)
        fa, t_fa = timed(lambda: pool_object_features(maps, boxes, bidx, image_size, 'fast'), 3)
    scale = ref.abs().max().item()
    err_ex = (ex - ref).abs().max().item() / scale
    err_fa = (fa - ref).abs().max().item() / scale
    print(f'B={B} K={K} image_size={image_size} channels={channels} device={device} '
          f'threads={torch.get_num_threads()}')
    print(f'reference {t_ref:9.1f} ms')
    print(f'exact     {t_ex:9.1f} ms   max rel err vs reference {err_ex:.2e}')
    print(f'fast      {t_fa:9.1f} ms   max rel err vs reference {err_fa:.2e}')
    return {'reference_ms': t_ref, 'exact_ms': t_ex, 'fast_ms': t_fa, 'exact_err': err_ex, 'fast_err': err_fa}


if __name__ == '__main__':
    benchmark()
