"""A synthetic "shapes world", generated offline and deterministically from a seed.

Every image shows 1-3 non-overlapping shapes (circle/square/triangle/star) in distinct colours
(red/green/blue/yellow/purple/orange) on a light, mildly noisy background; within one image all
colours AND all shapes are distinct, and object centres are >= 18% of the width apart, so every
templated question below has exactly one answer. Image sides are 96-160 px (landscape, portrait
or square). Each image/question/box is drawn from its own RNG stream
`np.random.default_rng([seed, split, index, purpose])`, so image i is the same whatever
`num_train` is, and held-out images (split 1) never reuse a training stream (split 0).

Files written under OUT_DIR (JSON lists are written one element per line):
  images/000123.png   training image 123;  images/h000007.png  held-out image 7
  pretrain.json  [{"id": "pt_000123", "image": "000123.png", "conversations": [
                   {"from": "human", "value": "<image>\\nDescribe the image."},
                   {"from": "gpt", "value": "a red circle and a blue square"}]}, ...]
  sft.json       [{"id": "sft_000123", "image": "000123.png", "conversations": [5 human/gpt turn
                   pairs, first human value starts with "<image>\\n", answers are single words]},
                  ..., {"id": "txt_000004", "conversations": [...]} (text-only, ~5%), ...]
  boxes.json     [{"id": "pt_000123" | "sft_000123" | "ho_000007", "boxes": [[x1, y1, x2, y2], ...],
                   "scores": [0.87, ...], "labels": ["circle", ...]}, ...]  (int px, original frame)
  heldout.jsonl  {"id": "ho_000007_2", "sample_id": "ho_000007", "image": "h000007.png",
                  "question": "...", "answer": "...", "type": "count", "choices": ["one", ...]}
  world.json     metadata: colours, shapes, question types (template, choices, chance), counts.
  bench/         the held-out questions in benchmark formats (mg_llava.demo.bench_formats)
In a third of the SFT images one question is asked as lettered options and, independently, in a third the
presence questions carry the yes-or-no suffix: the answer formats the benchmarks use (`benchmark_formats`).

CLI: python -m mg_llava.demo.world OUT_DIR [--num-train N] [--num-heldout M] [--seed S]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mg_llava.demo.bench_formats import as_multiple_choice, write_benchmarks
from mg_llava.evaluation.questions import YES_NO

COLOURS = {  # name -> RGB, well separated from each other and from the light background
    'red': (215, 35, 35), 'green': (30, 155, 50), 'blue': (35, 70, 215),
    'yellow': (235, 205, 20), 'purple': (135, 45, 175), 'orange': (245, 125, 15)}
SHAPES = ('circle', 'square', 'triangle', 'star')
COUNT_WORDS = ('one', 'two', 'three')
QUESTION_TYPES = {  # type -> (template, choices); answers are always single lowercase words
    'colour': ('What color is the {shape}?', list(COLOURS)),
    'shape': ('What shape is the {colour} object?', list(SHAPES)),
    'count': ('How many shapes are there?', list(COUNT_WORDS)),
    'presence': ('Is there {article} {colour} {shape}?', ['yes', 'no']),
    'leftright': ('Is the {colour1} {shape1} left or right of the {colour2} {shape2}?', ['left', 'right']),
}
CAPTION_PROMPT = 'Describe the image.'
TEXT_ONLY_QA = [  # fixed question -> answer pairs for text-only SFT samples
    ('What colors can shapes have?', 'red, green, blue, yellow, purple or orange.'),
    ('What shapes can appear in an image?', 'circle, square, triangle or star.'),
    ('How many colors are there?', 'six'),
    ('How many kinds of shapes are there?', 'four'),
    ('Hello!', 'Hello! Ask me about the shapes in the image.'),
]
SPLITS = {'train': 0, 'heldout': 1, 'text': 2}
_SCENE, _QUESTIONS, _BOXES, _NOISE, _FORMATS = range(5)  # RNG purposes
MIN_DX = 0.18  # min horizontal centre separation, as a fraction of the width
FORMAT_FRAC = 1 / 3  # SFT images with one question in multiple-choice form / presence with the POPE suffix


def _rng(seed, split, index, purpose):
    return np.random.default_rng([int(seed), SPLITS[split], int(index), purpose])


def _article(word):
    return 'an' if word[0] in 'aeiou' else 'a'


def _phrase(obj):
    return f"{_article(obj['colour'])} {obj['colour']} {obj['shape']}"


def _image_size(rng, lo, hi):
    kind = rng.integers(3)  # 0 landscape, 1 portrait, 2 square
    if kind == 2:
        side = int(rng.integers(lo, hi + 1))
        return side, side
    long_ = int(rng.integers(min(hi, int(lo * 1.25)), hi + 1))
    short = int(rng.integers(lo, max(lo, min(long_, int(long_ / 1.15))) + 1))
    return (long_, short) if kind == 0 else (short, long_)


def shape_geometry(shape, cx, cy, d):
    """('ellipse', [x1, y1, x2, y2]) or ('polygon', [(x, y), ...]) for a shape of extent d centred at cx, cy."""
    r = d / 2
    if shape == 'circle':
        return 'ellipse', [cx - r, cy - r, cx + r, cy + r]
    if shape == 'square':
        h = 0.43 * d
        return 'polygon', [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == 'triangle':
        return 'polygon', [(cx, cy - r), (cx + r, cy + 0.75 * r), (cx - r, cy + 0.75 * r)]
    if shape == 'star':
        ang = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return 'polygon', [(cx + a * np.cos(t), cy + a * np.sin(t)) for a, t in zip(rad, ang)]
    raise ValueError(shape)


def _tight_box(kind, geom):
    if kind == 'ellipse':
        return [float(v) for v in geom]
    xs, ys = [p[0] for p in geom], [p[1] for p in geom]
    return [float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))]


def _place(rng, W, H, n):
    """Centres and extents (cx, cy, d) of n shapes: inside the image, boxes >= 3 px apart, centres spread in x."""
    short, scale = min(W, H), 1.0
    for attempt in range(5000):
        if attempt and attempt % 250 == 0:
            scale = max(0.8, scale * 0.95)
        d = rng.uniform(0.26, 0.36, n) * short * scale
        cx = rng.uniform(d / 2 + 2, W - d / 2 - 2)
        cy = rng.uniform(d / 2 + 2, H - d / 2 - 2)
        ok = True
        for i in range(n):
            for j in range(i + 1, n):
                gap = (d[i] + d[j]) / 2 + 3
                dx, dy = abs(cx[i] - cx[j]), abs(cy[i] - cy[j])
                ok &= dx >= MIN_DX * W and (dx >= gap or dy >= gap)
        if ok:
            return [(float(a), float(b), float(c)) for a, b, c in zip(cx, cy, d)]
    raise RuntimeError(f'could not place {n} shapes in a {W}x{H} image')


def scene_for(seed, split, index, image_size_range=(96, 160)):
    """The ground-truth scene of one image: {"width", "height", "background": (r, g, b),
    "objects": [{"colour", "shape", "cx", "cy", "size", "box": [x1, y1, x2, y2] (float, tight)}, ...]}
    with objects sorted left to right."""
    rng = _rng(seed, split, index, _SCENE)
    W, H = _image_size(rng, *image_size_range)
    n = int(rng.integers(1, 4))
    colours = [list(COLOURS)[k] for k in rng.choice(len(COLOURS), n, replace=False)]
    shapes = [SHAPES[k] for k in rng.choice(len(SHAPES), n, replace=False)]
    background = tuple(int(v) for v in rng.integers(226, 251, 3))
    objects = []
    for colour, shape, (cx, cy, d) in zip(colours, shapes, _place(rng, W, H, n)):
        box = _tight_box(*shape_geometry(shape, cx, cy, d))
        objects.append(dict(colour=colour, shape=shape, cx=cx, cy=cy, size=d, box=box))
    objects.sort(key=lambda o: o['cx'])
    return dict(width=W, height=H, background=background, objects=objects)


def render_scene(scene, rng):
    """RGB PIL image of a scene; mild grey noise on 2x2 blocks (keeps PNGs ~5 KB)."""
    W, H = scene['width'], scene['height']
    img = Image.new('RGB', (W, H), scene['background'])
    draw = ImageDraw.Draw(img)
    for o in scene['objects']:
        kind, geom = shape_geometry(o['shape'], o['cx'], o['cy'], o['size'])
        getattr(draw, kind)(geom, fill=COLOURS[o['colour']])
    noise = rng.normal(0, 4, ((H + 1) // 2, (W + 1) // 2, 1)).round().astype(np.int16)
    noise = noise.repeat(2, 0).repeat(2, 1)[:H, :W]
    return Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8))


def detections(scene, rng, jitter=0.04):
    """Fake detector output: tight boxes with each side jittered by up to `jitter` x the object's extent
    (a good detector: a fixed +-3 px would swamp the box fill of a 25 px shape), rounded to int px,
    sorted by descending score."""
    W, H = scene['width'], scene['height']
    dets = []
    for o in scene['objects']:
        x1, y1, x2, y2 = np.asarray(o['box']) + rng.uniform(-1, 1, 4) * jitter * o['size']
        x1, x2 = int(np.clip(round(x1), 0, W - 2)), int(np.clip(round(x2), 0, W - 1))
        y1, y2 = int(np.clip(round(y1), 0, H - 2)), int(np.clip(round(y2), 0, H - 1))
        dets.append(([x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)], round(float(rng.uniform(0.3, 0.95)), 4), o['shape']))
    dets.sort(key=lambda t: -t[1])
    return dict(boxes=[d[0] for d in dets], scores=[d[1] for d in dets], labels=[d[2] for d in dets])


def caption(objects):
    """'a red circle' / 'a red circle and a blue square' / 'a green star, a yellow triangle and a purple circle'."""
    parts = [_phrase(o) for o in objects]
    return parts[0] if len(parts) == 1 else ', '.join(parts[:-1]) + ' and ' + parts[-1]


def _presence(objects, rng, answer=None, exclude=()):
    """('presence', question, 'yes'|'no', (colour, shape)); answer drawn 50/50 unless given.
    A 'no' pair is absent but shares its colour or its shape with an object, so neither colour
    nor shape alone answers it."""
    present = {(o['colour'], o['shape']) for o in objects}
    answer = answer or ('yes' if rng.random() < 0.5 else 'no')
    if answer == 'yes':
        cands = sorted(present - set(exclude))
    else:
        cs, ss = {c for c, _ in present}, {s for _, s in present}
        cands = sorted((c, s) for c in COLOURS for s in SHAPES
                       if (c, s) not in present and (c in cs or s in ss) and (c, s) not in exclude)
    c, s = cands[rng.integers(len(cands))]
    q = QUESTION_TYPES['presence'][0].format(article=_article(c), colour=c, shape=s)
    return 'presence', q, answer, (c, s)


def make_questions(objects, rng, fill=True, presence=None, leftright=None):
    """One (type, question, answer) per question type. Objects must be sorted left to right.
    For 1-object images the left/right question is replaced, if `fill`, by a 2nd presence question
    with the opposite answer. `presence` / `leftright` force those answers (else drawn 50/50)."""
    n = len(objects)
    o1, o2 = objects[rng.integers(n)], objects[rng.integers(n)]
    qs = [('colour', QUESTION_TYPES['colour'][0].format(shape=o1['shape']), o1['colour']),
          ('shape', QUESTION_TYPES['shape'][0].format(colour=o2['colour']), o2['shape']),
          ('count', QUESTION_TYPES['count'][0], COUNT_WORDS[n - 1])]
    presence = _presence(objects, rng, answer=presence)
    qs.append(presence[:3])
    if n >= 2:
        i, j = sorted(rng.choice(n, 2, replace=False))  # objects[i] is left of objects[j]
        answer = leftright or ('left' if rng.random() < 0.5 else 'right')
        a, b = (objects[i], objects[j]) if answer == 'left' else (objects[j], objects[i])
        qs.append(('leftright', QUESTION_TYPES['leftright'][0].format(
            colour1=a['colour'], shape1=a['shape'], colour2=b['colour'], shape2=b['shape']), answer))
    elif fill:
        other = 'no' if presence[2] == 'yes' else 'yes'  # keeps presence answers exactly 50/50
        qs.append(_presence(objects, rng, answer=other, exclude=[presence[3]])[:3])
    return qs


def benchmark_formats(qs, rng, frac=FORMAT_FRAC):
    """Rewrite some (type, question, answer) in the answer formats benchmarks ask for (spec 4.2), as LLaVA-1.5's
    instruction mix does: one non-presence question as lettered options (answer: the letter), and the presence
    questions with the POPE/HallusionBench yes-or-no suffix, each in a `frac` of the images."""
    qs = list(qs)
    candidates = [i for i, q in enumerate(qs) if q[0] != 'presence']
    if rng.random() < frac and candidates:
        k = candidates[int(rng.integers(len(candidates)))]
        t, q, a = qs[k]
        prompt, letter, _ = as_multiple_choice(q, a, QUESTION_TYPES[t][1])
        qs[k] = (t, prompt, letter)
    if rng.random() < frac:
        qs = [(t, q + YES_NO, a) if t == 'presence' else (t, q, a) for t, q, a in qs]
    return qs


def render_train_images(out_dir, indices, seed=0, image_size_range=(96, 160)):
    """Render training images `indices` into out_dir exactly as generate_world would in a world that large (image i
    has its own streams), without their questions: unlabelled images. -> {file name: fake detections}."""
    out, dets = Path(out_dir), {}
    out.mkdir(parents=True, exist_ok=True)
    for i in indices:
        scene, fname = scene_for(seed, 'train', i, image_size_range), f'{i:06d}.png'
        render_scene(scene, _rng(seed, 'train', i, _NOISE)).save(out / fname)
        dets[fname] = detections(scene, _rng(seed, 'train', i, _BOXES))
    return dets


def _turns(pairs, with_image):
    conv = []
    for k, (q, a) in enumerate(pairs):
        conv += [{'from': 'human', 'value': ('<image>\n' if with_image and k == 0 else '') + q},
                 {'from': 'gpt', 'value': a}]
    return conv


def _text_only_sample(seed, k):
    rng = _rng(seed, 'text', k, _QUESTIONS)
    idx = rng.choice(len(TEXT_ONLY_QA), int(rng.integers(1, 3)), replace=False)
    return {'id': f'txt_{k:06d}', 'conversations': _turns([TEXT_ONLY_QA[i] for i in idx], False)}


def _dump_list(path, items):
    with open(path, 'w') as f:
        f.write('[\n' + ',\n'.join(json.dumps(x) for x in items) + '\n]\n')


def generate_world(out_dir, num_train=3000, num_heldout=200, seed=0, image_size_range=(96, 160),
                   text_only_frac=0.05):
    """Write the world (see module docstring) into out_dir; returns {name: path} of everything written."""
    out = Path(out_dir)
    (out / 'images').mkdir(parents=True, exist_ok=True)
    pretrain, sft_img, boxes_pt, boxes_sft, boxes_ho, heldout = [], [], [], [], [], []
    for i in range(num_train):
        scene, fname = scene_for(seed, 'train', i, image_size_range), f'{i:06d}.png'
        render_scene(scene, _rng(seed, 'train', i, _NOISE)).save(out / 'images' / fname)
        objs = scene['objects']
        pretrain.append({'id': f'pt_{i:06d}', 'image': fname,
                         'conversations': _turns([(CAPTION_PROMPT, caption(objs))], True)})
        rng = _rng(seed, 'train', i, _QUESTIONS)
        qs = make_questions(objs, rng)
        qs = [qs[k] for k in rng.permutation(len(qs))]
        qs = benchmark_formats(qs, _rng(seed, 'train', i, _FORMATS))
        sft_img.append({'id': f'sft_{i:06d}', 'image': fname, 'conversations': _turns([q[1:] for q in qs], True)})
        det = detections(scene, _rng(seed, 'train', i, _BOXES))
        boxes_pt.append({'id': f'pt_{i:06d}', **det})
        boxes_sft.append({'id': f'sft_{i:06d}', **det})
    num_multi = 0  # held-out presence / left-right answers alternate, so they are exactly balanced
    for i in range(num_heldout):
        scene, fname, sid = scene_for(seed, 'heldout', i, image_size_range), f'h{i:06d}.png', f'ho_{i:06d}'
        render_scene(scene, _rng(seed, 'heldout', i, _NOISE)).save(out / 'images' / fname)
        qs = make_questions(scene['objects'], _rng(seed, 'heldout', i, _QUESTIONS), fill=False,
                            presence=('yes', 'no')[i % 2], leftright=('left', 'right')[num_multi % 2])
        num_multi += len(scene['objects']) > 1
        for k, (qtype, q, a) in enumerate(qs):
            heldout.append({'id': f'{sid}_{k}', 'sample_id': sid, 'image': fname, 'question': q, 'answer': a,
                            'type': qtype, 'choices': QUESTION_TYPES[qtype][1]})
        boxes_ho.append({'id': sid, **detections(scene, _rng(seed, 'heldout', i, _BOXES))})

    # interleave the text-only samples evenly among the image samples
    num_text = int(round(text_only_frac * num_train))
    step = max(1, num_train // max(1, num_text))
    sft, k = [], 0
    for i, s in enumerate(sft_img):
        sft.append(s)
        if (i + 1) % step == 0 and k < num_text:
            sft.append(_text_only_sample(seed, k))
            k += 1
    sft += [_text_only_sample(seed, j) for j in range(k, num_text)]

    bench = write_benchmarks(out, heldout, {e['id']: {k: e[k] for k in ('boxes', 'scores', 'labels')}
                                            for e in boxes_ho})
    paths = {name: out / f for name, f in [('images', 'images'), ('pretrain', 'pretrain.json'), ('sft', 'sft.json'),
                                           ('boxes', 'boxes.json'), ('heldout', 'heldout.jsonl'),
                                           ('world', 'world.json')]}
    _dump_list(paths['pretrain'], pretrain)
    _dump_list(paths['sft'], sft)
    _dump_list(paths['boxes'], boxes_pt + boxes_sft + boxes_ho)
    with open(paths['heldout'], 'w') as f:
        f.writelines(json.dumps(h) + '\n' for h in heldout)
    meta = {
        'name': 'shapes-world', 'seed': seed, 'num_train': num_train, 'num_heldout': num_heldout,
        'num_text_only': num_text, 'image_size_range': list(image_size_range), 'image_folder': 'images',
        'colours': {c: list(v) for c, v in COLOURS.items()}, 'shapes': list(SHAPES),
        'caption_prompt': CAPTION_PROMPT,
        'question_types': {t: {'template': tpl, 'choices': ch, 'chance': 1.0 / len(ch)}
                           for t, (tpl, ch) in QUESTION_TYPES.items()},
        'heldout_questions': {t: sum(h['type'] == t for h in heldout) for t in QUESTION_TYPES},
        'files': {k: v.name for k, v in paths.items()},
    }
    paths['world'].write_text(json.dumps(meta, indent=2) + '\n')
    return {**{k: str(v) for k, v in paths.items()}, **{f'bench_{k}': v for k, v in bench.items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description='Generate the synthetic shapes world.')
    p.add_argument('out_dir')
    p.add_argument('--num-train', type=int, default=3000)
    p.add_argument('--num-heldout', type=int, default=200)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.time()
    paths = generate_world(args.out_dir, args.num_train, args.num_heldout, args.seed)
    print(json.dumps(paths, indent=2))
    print(f'generated {args.num_train}+{args.num_heldout} images in {time.time() - t0:.1f} s')


if __name__ == '__main__':
    main()
