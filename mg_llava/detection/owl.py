"""OWLv2 open-vocabulary detection with the reference settings (spec §3), batched over images.

Reference (`image_offline_to_bbox.py`): one image at a time, text queries ``"a photo of <tag>"``,
`post_process_object_detection(threshold=0.2, target_sizes=[[max(W,H)]*2])`, boxes `.int()`-truncated,
no NMS, no cap. Here the same numbers come out, with three changes:

* Images are batched; each image keeps its own query list (padded queries are masked out of the class
  logits, so a batch gives what per-image calls give).
* Query text embeddings are computed once per distinct query and cached (with `--tags-file` every image has
  the same queries; the reference re-encoded them for every image).
* NEW: boxes lying entirely outside the original image (possible: OWLv2 also predicts in its padding) or
  with non-finite values are dropped, because `preprocess_boxes` rejects them (`BoxError`) and
  `tools/check_dataset.py` reports them as errors. Boxes that only spill over the border are kept, not
  clipped (spec §2.2).

Box geometry: `Owlv2ImageProcessor` pads the image to a square of side S = max(W, H) with gray at the
bottom/right (the image stays at the top-left), then resizes. Predicted boxes are normalised cxcywh in that
padded square, so original pixels = normalised * S on BOTH axes (scaling x by W and y by H would be wrong
for non-square images). `padded_frame_to_original` does exactly that.
"""
from __future__ import annotations

import numpy as np
import torch

BOX_THRESHOLD = 0.2               # spec §3: post_process_object_detection(threshold=0.2); scores must be > it
QUERY_TEMPLATE = 'a photo of {}'  # spec §3: 'a photo of ' + tag (no article)


def image_tensor(image_processor, image):
    """One PIL image -> (3, s, s) float32 pixel tensor (runs in data-loader workers)."""
    return image_processor(images=image, return_tensors='pt')['pixel_values'][0]


def padded_frame_to_original(pred_boxes, sizes):
    """(B, P, 4) normalised cxcywh in OWLv2's padded square -> (B, P, 4) float32 xyxy original pixels.

    sizes: B (W, H) of the original images. Same float32 arithmetic as HF `post_process_object_detection`
    with `target_sizes=[[max(W,H)]*2]` (the reference call), so the results are bit-identical.
    """
    from transformers.image_transforms import center_to_corners_format
    side = torch.tensor([float(max(w, h)) for w, h in sizes], dtype=torch.float32, device=pred_boxes.device)
    return center_to_corners_format(pred_boxes.float()) * side[:, None, None]


def boxes_to_entry(logits, xyxy, tags, size, threshold=BOX_THRESHOLD):
    """One image: (P, Q) class logits, (P, 4) original-frame boxes -> ({boxes, scores, labels}, n_dropped).

    Keeps patches whose best query has sigmoid score > threshold (patch order, as the reference), truncates
    coordinates toward zero (`Tensor.int()`, as the reference), drops non-finite and out-of-image boxes.
    """
    from mg_llava.data.preprocess import _bad_box_masks   # the test training uses to reject boxes
    best = torch.max(logits.float(), dim=-1)
    scores = torch.sigmoid(best.values)
    keep = scores > threshold
    scores, labels, xyxy = scores[keep].cpu(), best.indices[keep].cpu(), xyxy[keep].float().cpu()
    finite = torch.isfinite(xyxy).all(-1) & torch.isfinite(scores)
    boxes = torch.where(finite[:, None], xyxy, torch.zeros_like(xyxy)).int()
    degenerate, outside = _bad_box_masks(boxes.numpy().astype(np.float64), scores.numpy().astype(np.float64),
                                         *size)
    ok = finite.numpy() & ~degenerate & ~outside
    idx = torch.from_numpy(np.flatnonzero(ok))
    entry = {'boxes': boxes[idx].tolist(), 'scores': scores[idx].tolist(),
             'labels': [tags[i] for i in labels[idx].tolist()]}
    return entry, int((~ok).sum())


class OwlDetector:
    """`Owlv2ForObjectDetection` + `Owlv2Processor` loaded from a local directory."""

    def __init__(self, model_dir, device='cpu', dtype=torch.float32, threshold=BOX_THRESHOLD,
                 query_template=QUERY_TEMPLATE, text_chunk=256):
        from transformers import Owlv2ForObjectDetection, Owlv2Processor
        processor = Owlv2Processor.from_pretrained(model_dir)
        self.image_processor, self.tokenizer = processor.image_processor, processor.tokenizer
        self.model = Owlv2ForObjectDetection.from_pretrained(model_dir, torch_dtype=dtype).to(device).eval()
        self.device, self.dtype = torch.device(device), dtype
        self.threshold, self.query_template, self.text_chunk = threshold, query_template, text_chunk
        self._text = {}   # query string -> L2-normalised text embedding (as Owlv2Model.forward returns it)

    @torch.no_grad()
    def text_embeddings(self, queries):
        """list of query strings -> (n, D) embeddings, encoding each distinct query once per detector."""
        missing = [q for q in dict.fromkeys(queries) if q not in self._text]
        for i in range(0, len(missing), self.text_chunk):
            chunk = missing[i:i + self.text_chunk]
            # padding='max_length' as Owlv2Processor; truncation (the reference would crash on > 16 tokens)
            tok = self.tokenizer(chunk, padding='max_length', truncation=True, return_tensors='pt')
            feats = self.model.owlv2.get_text_features(input_ids=tok['input_ids'].to(self.device),
                                                       attention_mask=tok['attention_mask'].to(self.device))
            feats = feats / torch.linalg.norm(feats, ord=2, dim=-1, keepdim=True)
            self._text.update(zip(chunk, feats))
        return torch.stack([self._text[q] for q in queries])

    @torch.no_grad()
    def predict(self, pixel_values, tag_lists):
        """(B, 3, s, s) pixels, B non-empty tag lists -> class logits (B, P, Q) float32 (padded queries at the
        dtype minimum) and pred_boxes (B, P, 4) normalised cxcywh: what `Owlv2ForObjectDetection.forward`
        returns, with each text query encoded once instead of once per image."""
        if not all(tag_lists):
            raise ValueError('every image needs at least one tag')
        B, Q = len(tag_lists), max(len(t) for t in tag_lists)
        emb = self.text_embeddings([self.query_template.format(t) for tags in tag_lists for t in tags])
        query_embeds = emb.new_zeros(B, Q, emb.shape[-1])
        query_mask = torch.zeros(B, Q, dtype=torch.bool, device=emb.device)
        start = 0
        for i, tags in enumerate(tag_lists):
            query_embeds[i, :len(tags)] = emb[start:start + len(tags)]
            query_mask[i, :len(tags)] = True
            start += len(tags)
        feature_map, _ = self.model.image_embedder(pixel_values=pixel_values.to(self.device, self.dtype))
        b, h, w, d = feature_map.shape
        image_feats = feature_map.reshape(b, h * w, d)
        logits, _ = self.model.class_predictor(image_feats, query_embeds, query_mask)
        pred_boxes = self.model.box_predictor(image_feats, feature_map)
        return logits.float(), pred_boxes.float()

    def detect(self, pixel_values, tag_lists, sizes):
        """B images -> B (entry {boxes, scores, labels}, n_dropped); images without tags get empty entries."""
        results = [({'boxes': [], 'scores': [], 'labels': []}, 0)] * len(tag_lists)
        idx = [i for i, tags in enumerate(tag_lists) if tags]
        if idx:
            logits, pred_boxes = self.predict(pixel_values[idx], [tag_lists[i] for i in idx])
            xyxy = padded_frame_to_original(pred_boxes, [sizes[i] for i in idx])
            for j, i in enumerate(idx):
                results[i] = boxes_to_entry(logits[j], xyxy[j], tag_lists[i], sizes[i], self.threshold)
        return results
