"""Image tags for the OWLv2 queries: a fixed vocabulary, or a zero-shot CLIP tagger (stand-in for RAM++).

Why not RAM++: the reference tags every image with RAM++ (`ram.models.ram_plus`, checkpoint
`ram_plus_swin_large_14m.pth`, spec §3). The `ram` package (recognize-anything) is not on PyPI (git
install only, with pinned old dependencies), so it cannot be a dependency here. Two replacements:

* `FixedTags` (`--tags-file`): every vocabulary tag is queried on every image. OWLv2 is open-vocabulary and
  its 0.2 score threshold does the selection; no tagger errors, but cost grows with the vocabulary (the
  query embeddings are cached, so the per-image cost is the class head: patches x tags).
* `ClipTagger` (`--tagger`): CLIP zero-shot over the vocabulary, prompts ``"a photo of a <tag>"``,
  softmax over the vocabulary, tags with probability >= threshold, at most `max_tags`, most probable first.
  Caveat: a softmax is a multi-class classifier used as a multi-label tagger; probabilities compete, so at
  most 1/threshold tags can pass and small/secondary objects are missed more often than by RAM++. The
  defaults (threshold 0.02, 10 tags) are this project's choice, not tuned against RAM++ output.
"""
from __future__ import annotations

import torch

TAG_TEMPLATE = 'a photo of a {}'
TAG_THRESHOLD = 0.02
MAX_TAGS = 10


def read_vocabulary(path):
    """One tag per line (blank lines and lines starting with '#' ignored, duplicates removed, order kept)."""
    with open(path, encoding='utf-8') as f:
        tags = [line.strip() for line in f]
    tags = list(dict.fromkeys(t for t in tags if t and not t.startswith('#')))
    if not tags:
        raise ValueError(f'{path}: empty tag vocabulary')
    return tags


class FixedTags:
    """Every image gets the whole vocabulary."""
    image_processor = None

    def __init__(self, vocabulary):
        self.vocabulary = list(vocabulary)

    def tag(self, n_images, pixel_values=None):
        return [list(self.vocabulary) for _ in range(n_images)]


class ClipTagger:
    """Zero-shot CLIP (`CLIPModel` + `CLIPProcessor` from a local directory) over a fixed vocabulary."""

    def __init__(self, model_dir, vocabulary, device='cpu', dtype=torch.float32, threshold=TAG_THRESHOLD,
                 max_tags=MAX_TAGS, template=TAG_TEMPLATE, text_chunk=256):
        from transformers import CLIPModel, CLIPProcessor
        if max_tags < 1:
            raise ValueError(f'max_tags must be >= 1, got {max_tags}')
        processor = CLIPProcessor.from_pretrained(model_dir)
        self.image_processor, self.tokenizer = processor.image_processor, processor.tokenizer
        self.model = CLIPModel.from_pretrained(model_dir, torch_dtype=dtype).to(device).eval()
        self.device, self.dtype = torch.device(device), dtype
        self.vocabulary, self.threshold, self.max_tags = list(vocabulary), threshold, max_tags
        self.text = self._encode([template.format(t) for t in self.vocabulary], text_chunk)

    @torch.no_grad()
    def _encode(self, prompts, chunk):
        feats = []
        for i in range(0, len(prompts), chunk):
            tok = self.tokenizer(prompts[i:i + chunk], padding=True, truncation=True, return_tensors='pt')
            feats.append(self.model.get_text_features(input_ids=tok['input_ids'].to(self.device),
                                                      attention_mask=tok['attention_mask'].to(self.device)))
        feats = torch.cat(feats).float()
        return feats / feats.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def probabilities(self, pixel_values):
        """(B, 3, s, s) CLIP pixels -> (B, V) softmax over the vocabulary."""
        img = self.model.get_image_features(pixel_values=pixel_values.to(self.device, self.dtype)).float()
        img = img / img.norm(dim=-1, keepdim=True)
        return (self.model.logit_scale.exp().float() * img @ self.text.T).softmax(-1)

    def tag(self, n_images, pixel_values):
        probs = self.probabilities(pixel_values)
        top = probs.topk(min(self.max_tags, probs.shape[-1]), dim=-1)
        return [[self.vocabulary[j] for p, j in zip(ps, js) if p >= self.threshold]
                for ps, js in zip(top.values.tolist(), top.indices.tolist())]
