#!/usr/bin/env python
"""Is the data loader a bottleneck? Samples/s one loader process delivers at real sizes (MGLLaVADataset: JPEG
decode, pad to square, 768 px + 336 px views, 30 boxes through NMS and the object budget, slot expansion; then
mg_llava_collate_fn in batches of 8), to compare with a GPU step's samples/s: N loader workers deliver about N times
this figure (one per CPU core; a GPU host has 16+).

  python timing/dataloader.py            # 64 synthetic 640x480 photos-like JPEGs, real vision sizes
  python timing/dataloader.py --tiny     # 8 images (the test suite)
One JSON line on stdout.
"""
import argparse
import json
import os
import sys
import tempfile
import time

_STDOUT, sys.stdout = sys.stdout, sys.stderr

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mg_llava.data import MGLLaVADataset, mg_llava_collate_fn  # noqa: E402

SPEC = dict(image_size=336, image_size_aux=768)  # MG-LLaVA's sizes: 576 image tokens, ConvNeXt at 768 px
QA = ('What is in the picture? Describe the objects, their colours and where they are.',
      'There are several objects on a table: a red cup on the left, a blue book in the middle and a plant on the '
      'right, next to a window.')


def write_data(root, n, seed=0):
    """n JPEGs (smooth gradients + noise: JPEG-realistic sizes), one two-turn sample each, 30 boxes per image."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, 'images'), exist_ok=True)
    records, boxes = [], []
    for i in range(n):
        w, h = 640, 480
        base = np.linspace(0, 255, w)[None, :, None] * rng.uniform(0.3, 1, (1, 1, 3))
        img = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, 'images', f'{i}.jpg'), quality=90)
        records.append({'id': f's{i}', 'image': f'{i}.jpg', 'conversations': [
            {'from': 'human', 'value': '<image>\n' + QA[0]}, {'from': 'gpt', 'value': QA[1]},
            {'from': 'human', 'value': QA[0]}, {'from': 'gpt', 'value': QA[1]}]})
        xy = rng.uniform(0, [w - 80, h - 80], (30, 2))
        wh = rng.uniform(20, 80, (30, 2))
        boxes.append({'id': f's{i}', 'boxes': np.concatenate([xy, xy + wh], 1).round().tolist(),
                      'scores': rng.uniform(0.3, 0.9, 30).round(3).tolist(), 'labels': ['object'] * 30})
    with open(os.path.join(root, 'data.json'), 'w') as f:
        json.dump(records, f)
    with open(os.path.join(root, 'boxes.json'), 'w') as f:
        json.dump(boxes, f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tiny', action='store_true')
    p.add_argument('--images', type=int)
    p.add_argument('--tokenizer', help='a local tokenizer folder (default: a tiny word-level one built here)')
    args = p.parse_args(argv)
    n = args.images or (8 if args.tiny else 64)
    with tempfile.TemporaryDirectory() as tmp:
        write_data(tmp, n)
        if args.tokenizer:
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(args.tokenizer)
        else:
            from mg_llava.demo.tiny_assets import build_tokenizer, vocabulary
            tok = build_tokenizer(vocabulary(vocab_words=list(QA) + ['object']), model_max_length=4096)
        ds = MGLLaVADataset(os.path.join(tmp, 'data.json'), os.path.join(tmp, 'images'), tok, 'vicuna',
                            max_length=2048, vision_spec=SPEC, num_image_tokens=576,
                            box_json_path=os.path.join(tmp, 'boxes.json'))
        ds[0]  # warm-up (imports, first decode)
        t0 = time.perf_counter()
        samples = [ds[i] for i in range(len(ds))]
        t_items = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(0, len(samples), 8):
            mg_llava_collate_fn(samples[k:k + 8])
        t_collate = time.perf_counter() - t0
    seconds = t_items + t_collate
    result = dict(images=n, seconds=round(seconds, 3), samples_per_s_per_process=round(n / seconds, 2),
                  item_ms=round(1e3 * t_items / n, 2), collate_ms_per_sample=round(1e3 * t_collate / n, 3),
                  image_size=SPEC['image_size'], image_size_aux=SPEC['image_size_aux'], boxes_per_image=30,
                  seq_len=len(samples[0]['input_ids']))
    print(f'{result["samples_per_s_per_process"]} samples/s per loader process', file=sys.stderr)
    _STDOUT.write(json.dumps(result) + '\n')


if __name__ == '__main__':
    main()
