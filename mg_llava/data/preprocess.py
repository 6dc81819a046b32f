"""The one image/box preprocessing path of mg_llava, shared by training, evaluation and chat.

Upstream MG-LLaVA repeats this logic in its train dataset, its eval proxy and its chat script, and
the copies drift apart (spec §5.3a, §8 item 9). Here it lives once:

* `preprocess_image`: PIL image -> low-res view (3,s,s) [+ high-res view (3,S,S)] (spec §2.3).
* `preprocess_boxes`: detector boxes in the original image frame -> boxes in the S-pixel frame of the
  high-res view (spec §2.4), plus a hard budget on object tokens (spec §8 item 6).

Both reproduce the upstream arithmetic exactly (checkpoint parity); every deliberate departure is
marked "NEW" or "upstream:" in a comment.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import batched_nms

from mg_llava.errors import BoxError, ImageError  # noqa: F401  (re-exported: raised here)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class VisionSpec:
    """How images and boxes are prepared (one object shared by dataset, eval and chat)."""
    image_size: int = 336               # low-res view side (CLIP input)
    image_size_aux: int | None = 768    # high-res view side; None -> LLaVA-1.5 mode: no high-res view, no boxes
    pad_to_square: bool = True
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD
    nms_iou: float = 0.2
    limit_num: int | None = 100         # upstream per-category cap trigger (spec §2.4); None disables
    max_objects: int = 100              # NEW hard budget on object tokens per image (upstream is unbounded)
    close_margin: int = 50              # text within this many tokens of max_length -> keep 1 box per label

    def __post_init__(self):
        if self.image_size <= 0 or (self.image_size_aux is not None and self.image_size_aux <= 0):
            raise ValueError(f'image sizes must be positive, got {self.image_size}, {self.image_size_aux}')
        if self.max_objects < 0:
            raise ValueError(f'max_objects must be >= 0, got {self.max_objects}')

    @property
    def pad_color(self) -> tuple:
        # upstream: tuple(int(x * 255) for x in image_mean) -> (122, 116, 104) for CLIP
        return tuple(int(m * 255) for m in self.mean)


# ----------------------------------------------------------------------------------------------- images

def load_image(path) -> Image.Image:
    """Open `path` as an RGB PIL image, decoding it now so a corrupt file fails here, not in a worker."""
    try:
        with Image.open(path) as img:
            return img.convert('RGB')   # convert() forces the full decode
    except FileNotFoundError:
        raise ImageError(path, 'file not found') from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL reports unreadable/truncated data as UnidentifiedImageError/OSError (SyntaxError for some codecs)
        raise ImageError(path, f'{type(e).__name__}: {e}') from e


def _pad_to_square(image: Image.Image, color: tuple) -> Image.Image:
    """xtuner `expand2square`: centre the image on a max(W,H) square canvas of `color`."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), color)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def _resize_and_crop(image: Image.Image, size: int) -> np.ndarray:
    """CLIPImageProcessor geometry: bicubic resize of the shortest edge to `size`, centre crop size x size.

    Returns uint8 (size, size, 3). On a square image this is a plain bicubic resize to (size, size).
    """
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_long = int(size * long / short)                 # HF get_resize_output_image_size arithmetic
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    arr = np.asarray(image.resize((new_w, new_h), resample=Image.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2  # HF center_crop offsets
    return arr[top:top + size, left:left + size]


@functools.lru_cache(maxsize=8)
def _normalize_lut(mean: tuple, std: tuple) -> np.ndarray:
    """(3, 256) float32 table: value v of channel c -> ((v * 1/255) - mean[c]) / std[c].

    Computed with HF's exact arithmetic (rescale in float64 then cast to float32, normalise in float32),
    so looking values up is bit-identical to CLIPImageProcessor and cheaper than float maths per pixel.
    """
    rescaled = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    mean32, std32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return ((rescaled[None, :] - mean32[:, None]) / std32[:, None]).astype(np.float32)


def _normalize(arr: np.ndarray, spec: VisionSpec) -> torch.Tensor:
    """uint8 (H, W, 3) -> normalised float32 tensor (3, H, W)."""
    lut = _normalize_lut(tuple(spec.mean), tuple(spec.std))
    return torch.from_numpy(np.stack([lut[c][arr[..., c]] for c in range(3)]))


def preprocess_image(image: Image.Image, spec: VisionSpec) -> dict:
    """Turn one PIL image into the model's views.

    Returns {'pixel_values': float32 (3, s, s), 'pixel_values_aux': float32 (3, S, S) (MG mode only),
    'orig_size': (W, H) of the input image}, with s = spec.image_size and S = spec.image_size_aux.
    """
    image = image.convert('RGB') if image.mode != 'RGB' else image
    orig_size = image.size
    if spec.pad_to_square:
        image = _pad_to_square(image, spec.pad_color)
    if spec.image_size_aux is None:    # LLaVA-1.5: the CLIP processor at s, nothing else
        return {'pixel_values': _normalize(_resize_and_crop(image, spec.image_size), spec), 'orig_size': orig_size}
    aux = _normalize(_resize_and_crop(image, spec.image_size_aux), spec)
    # upstream: the low-res view is the *normalised* high-res tensor bilinearly downsampled, not a
    # second CLIP-processor pass at s (spec §1.2). No antialias, for checkpoint parity.
    low = F.interpolate(aux[None], size=(spec.image_size, spec.image_size), mode='bilinear',
                        align_corners=False, antialias=False)[0]
    return {'pixel_values': low, 'pixel_values_aux': aux, 'orig_size': orig_size}


# ------------------------------------------------------------------------------------------------ boxes

def _as_inputs(boxes, labels, scores):
    """Validate shapes; return float64 (n,4) boxes, list labels, float64 (n,) scores."""
    try:
        b = np.array(boxes, dtype=np.float64)      # a copy: shifted in place later
        s = np.array(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise BoxError(f'boxes/scores are not numeric arrays: {e}') from e
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise BoxError(f'boxes must have shape (n, 4), got {b.shape}')
    labels = list(labels)
    if not len(labels) == len(s) == len(b):
        raise BoxError(f'length mismatch: {len(b)} boxes, {len(labels)} labels, {len(s)} scores')
    return b, labels, s


def _bad_box_masks(b: np.ndarray, s: np.ndarray, w: int, h: int):
    """Degenerate (non-finite coordinate/score, x2<x1, y2<y1) and out-of-frame masks, original frame.

    Out-of-frame uses the same strict test upstream uses at the crop: touching the border is inside.
    """
    with np.errstate(invalid='ignore'):
        degenerate = ~np.isfinite(b).all(1) | ~np.isfinite(s) | (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
        outside = ~degenerate & ((b[:, 2] < 0) | (b[:, 3] < 0) | (b[:, 0] > w) | (b[:, 1] > h))
    return degenerate, outside


def _class_aware_nms(b32: np.ndarray, s32: np.ndarray, labels: list, iou: float) -> np.ndarray:
    """Indices kept by per-label NMS, score-descending (ties: lower input index first)."""
    ids = {}
    label_ids = torch.tensor([ids.setdefault(lab, len(ids)) for lab in labels], dtype=torch.int64)
    scores = torch.from_numpy(s32)
    keep = batched_nms(torch.from_numpy(b32), scores, label_ids, iou)
    # upstream maps labels via set() (hash order) and relies on an unstable sort: fix the tie order.
    keep = keep.sort().values
    keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
    return keep.numpy()


def _per_category_cap(order: np.ndarray, labels: list, k: int) -> np.ndarray:
    """Keep the k best boxes of each label; regroup by label in first-appearance order.

    `order` is score-descending, so each group's first k entries are its top-k by score.
    """
    groups: dict = {}
    for i in order:
        groups.setdefault(labels[i], []).append(i)
    return np.asarray([i for g in groups.values() for i in g[:k]], dtype=np.int64)


def _hard_cap(order: np.ndarray, s32: np.ndarray, max_objects: int) -> np.ndarray:
    """NEW: keep the max_objects highest-scoring entries of `order`, preserving its (grouped) order."""
    if len(order) <= max_objects:
        return order
    best = np.argsort(-s32[order], kind='stable')[:max_objects]
    return order[np.sort(best)]


def preprocess_boxes(boxes, labels, scores, orig_size, spec: VisionSpec, text_len=None, max_length=None,
                     *, skip_bad: bool = False):
    """Map detector boxes from the original image frame to the S x S high-res view (spec §2.4).

    boxes: (n, 4) xyxy pixels of the ORIGINAL (W, H) image (list or array, may be empty);
    labels: n strings; scores: n floats; orig_size: (W, H); text_len/max_length: token counts that
    switch on the "close to max_length" 1-box-per-label cap (training; leave None at eval/chat).
    skip_bad: drop degenerate / out-of-frame boxes (counted in stats) instead of raising BoxError.

    Returns (float32 (m, 4) boxes in S-pixel xyxy, kept labels (len m, or [] with one [0,0,0,0] box
    when nothing survives), stats {'raw', 'degenerate', 'outside', 'after_nms', 'kept', 'cropped'}).
    """
    S = spec.image_size_aux
    if S is None:
        raise ValueError('preprocess_boxes needs spec.image_size_aux (LLaVA-1.5 mode has no boxes)')
    w, h = orig_size
    b, labels, s = _as_inputs(boxes, labels, scores)
    stats = {'raw': len(b), 'degenerate': 0, 'outside': 0, 'after_nms': 0, 'kept': 0, 'cropped': 0}

    degenerate, outside = _bad_box_masks(b, s, w, h)
    bad = degenerate | outside
    if bad.any():
        if not skip_bad:
            shown = '; '.join(f'#{i} {b[i].tolist()} ({"degenerate" if degenerate[i] else "out-of-frame"})'
                              for i in np.flatnonzero(bad)[:5])
            raise BoxError(f'{int(degenerate.sum())} degenerate and {int(outside.sum())} out-of-frame box(es) '
                           f'for a {w}x{h} image: {shown}')   # the caller names its user's switch
        stats['degenerate'], stats['outside'] = int(degenerate.sum()), int(outside.sum())
        b, s = b[~bad], s[~bad]
        labels = [lab for lab, drop in zip(labels, bad) if not drop]

    # 1. shift into the padded square frame (upstream adjust_padding_boxes: delta on the short axis)
    frame_w, frame_h = w, h
    if spec.pad_to_square:
        if w > h:
            b[:, [1, 3]] += (w - h) // 2
        elif h > w:
            b[:, [0, 2]] += (h - w) // 2
        frame_w = frame_h = max(w, h)
    b32, s32 = b.astype(np.float32), s.astype(np.float32)   # upstream works in float32 from here on

    # 2. class-aware NMS, then the upstream caps
    order = _class_aware_nms(b32, s32, labels, spec.nms_iou) if len(b32) else np.zeros(0, np.int64)
    stats['after_nms'] = len(order)
    close = text_len is not None and max_length is not None and text_len >= max_length - spec.close_margin
    if len(order) and (close or spec.limit_num is not None):
        # upstream: k=20 if limit_num>50, 5 if <50, NameError at ==50 (we use 5); k=1 when close.
        # (upstream also raises TypeError for close with limit_num=None; we just apply k=1.)
        k = 1 if close else (20 if spec.limit_num > 50 else 5)
        if close or len(order) > spec.limit_num:
            order = _per_category_cap(order, labels, k)
    order = _hard_cap(order, s32, spec.max_objects)

    # 3. resize-shortest-edge + centre-crop geometry of the CLIP processor (upstream
    #    adjust_short_resize_coordinates / adjust_center_crop_box), kept in torch float32 for parity.
    scale = S / min(frame_w, frame_h)
    xyxy = torch.round(torch.from_numpy(b32[order]).reshape(-1, 4) * scale).int().numpy().astype(np.int64)
    # int() may round S*scale down to S-1, making the crop start -1 (boxes shift by +1): kept on purpose.
    start_x, start_y = (int(frame_w * scale) - S) // 2, (int(frame_h * scale) - S) // 2
    x1 = np.maximum(xyxy[:, 0] - start_x, 0)
    y1 = np.maximum(xyxy[:, 1] - start_y, 0)
    x2 = np.minimum(xyxy[:, 2] - start_x, S)
    y2 = np.minimum(xyxy[:, 3] - start_y, S)
    inside = ~((x2 < 0) | (y2 < 0) | (x1 > S) | (y1 > S))
    stats['cropped'] = int((~inside).sum())
    out = np.stack([x1, y1, x2, y2], axis=1)[inside].astype(np.float32)
    kept_labels = [labels[i] for i, keep in zip(order, inside) if keep]
    stats['kept'] = len(kept_labels)
    if not kept_labels:   # the model needs >= 1 box row per image; labels stay empty
        return np.zeros((1, 4), np.float32), [], stats
    return out, kept_labels, stats
