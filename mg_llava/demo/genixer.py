"""The Genixer demo's helpers (`make demo-genixer`, script/demo_genixer.sh): a low-label experiment in the demo world.

    python -m mg_llava.demo.genixer data WORLD OUT [--labelled 600] [--unlabelled 3000] [--seed 0]
        OUT/labelled.json      the first N image samples of the world's SFT file (+ its text-only ones): all the
                               labels the learner has
        OUT/generator.json     Genixer training data from them: each short-answer turn as `Question: … Answer: …`
                               (task common, two-level instructions)
        OUT/images/            the labelled images (links into WORLD/images) and M fresh images of the same world
                               (training indices num_train.., rendered as a larger world would): nobody's labels,
                               and images the judge (`make demo`'s model) never saw
        OUT/unlabelled.jsonl   {id: unl_N, image: N.png} of the fresh images
        OUT/boxes.json         the world's box file + the fresh images' detector boxes
    python -m mg_llava.demo.genixer boxes BOX_FILE OUT_BOXES DATA.json [...]
        BOX_FILE's entries plus an entry for each sample of DATA without one (its image's detector boxes), for
        MG-LLaVA's object tokens
    python -m mg_llava.demo.genixer report WORLD GENERATED KEPT LABELLED_EXPORT MIXED_EXPORT
        generated precision (the fraction of generated QA true for their image, checked against the world's
        scenes) before and after filtering, held-out accuracy per type, and the last line
        `genixer held-out accuracy: XX.X% (labelled only YY.Y%; generated precision AA.A% -> BB.B% after filtering)`
"""
import argparse
import json
import os
import re
from pathlib import Path


from mg_llava.datagen.tasks import generator_samples
from mg_llava.demo import world as W
from mg_llava.evaluation.loaders import YES_NO

ANSWER_TYPES = {a: (t, choices) for t, (_, choices) in W.QUESTION_TYPES.items() for a in choices}
PATTERNS = {
    'colour': re.compile(r'What color is the (\w+)\?'),
    'shape': re.compile(r'What shape is the (\w+) object\?'),
    'count': re.compile(r'How many shapes are there\?'),
    'presence': re.compile(r'Is there an? (\w+) (\w+)\?'),
    'leftright': re.compile(r'Is the (\w+) (\w+) left or right of the (\w+) (\w+)\?'),
}


def short_answer_turns(record):
    """(question, answer) of a world SFT record's short-answer turns: lettered options skipped, the yes/no
    suffix removed (Common VQA)."""
    conv = record.get('conversations') or []
    out = []
    for i in range(0, len(conv) - 1, 2):
        q, a = conv[i]['value'].replace('<image>', '').strip(), conv[i + 1]['value']
        if a in ANSWER_TYPES:
            out.append((q.replace(YES_NO, '').strip(), a))
    return out


def truth(scene, question, answer):
    """Whether `answer` is true for `question` about `scene` (scene_for's dict). A question outside the world's
    five forms, or about an object the image does not hold, is not true."""
    objs, answer = scene['objects'], answer.strip().lower().rstrip('.')
    q = question.replace(YES_NO, '').strip()
    if m := PATTERNS['colour'].fullmatch(q):
        hits = [o for o in objs if o['shape'] == m.group(1)]
        return len(hits) == 1 and hits[0]['colour'] == answer
    if m := PATTERNS['shape'].fullmatch(q):
        hits = [o for o in objs if o['colour'] == m.group(1)]
        return len(hits) == 1 and hits[0]['shape'] == answer
    if PATTERNS['count'].fullmatch(q):
        return answer == W.COUNT_WORDS[len(objs) - 1]
    if m := PATTERNS['presence'].fullmatch(q):
        present = any(o['colour'] == m.group(1) and o['shape'] == m.group(2) for o in objs)
        return answer == ('yes' if present else 'no')
    if m := PATTERNS['leftright'].fullmatch(q):
        a = [o for o in objs if (o['colour'], o['shape']) == (m.group(1), m.group(2))]
        b = [o for o in objs if (o['colour'], o['shape']) == (m.group(3), m.group(4))]
        if len(a) != 1 or len(b) != 1 or a[0] is b[0]:
            return False
        return answer == ('left' if a[0]['cx'] < b[0]['cx'] else 'right')
    return False


def question_type(question):
    q = question.replace(YES_NO, '').strip()
    return next((t for t, p in PATTERNS.items() if p.fullmatch(q)), 'other')


class Scenes:
    """Ground-truth scenes of a world's images, regenerated from its seed (world.json)."""

    def __init__(self, world_dir):
        meta = json.loads((Path(world_dir) / 'world.json').read_text())
        self.seed, self.size_range = meta['seed'], tuple(meta['image_size_range'])

    def __call__(self, image):
        name = Path(image).stem
        split, index = ('heldout', int(name[1:])) if name.startswith('h') else ('train', int(name))
        return W.scene_for(self.seed, split, index, self.size_range)


def precision(world_dir, samples):
    """-> (% of samples whose (question, answer) is true for their image, {type: (true, n)})."""
    scenes, by_type = Scenes(world_dir), {}
    for s in samples:
        t = question_type(s['question'])
        ok = truth(scenes(s['image']), s['question'], s['answer'])
        hit, n = by_type.get(t, (0, 0))
        by_type[t] = (hit + ok, n + 1)
    total = sum(n for _, n in by_type.values())
    return (100 * sum(h for h, _ in by_type.values()) / total if total else 0.0), by_type


def write_data(world_dir, out_dir, labelled=600, unlabelled=3000, seed=0):
    """The split, the generator's training data and the unlabelled images (module docstring). Returns a dict of
    counts."""
    world = Path(world_dir)
    meta = json.loads((world / 'world.json').read_text())
    records = json.loads((world / 'sft.json').read_text())
    image_recs = [r for r in records if r.get('image')]
    if not 0 < labelled <= len(image_recs):
        raise ValueError(f'{labelled} labelled images: {world}/sft.json has {len(image_recs)}')
    last = image_recs[labelled - 1]['id']
    cut = next(i for i, r in enumerate(records) if r.get('id') == last) + 1
    lab = records[:cut]
    qa = []
    for r in lab:
        turns = short_answer_turns(r) if r.get('image') else []
        if turns:
            qa.append({'id': r['id'], 'image': r['image'], 'conversations': [
                c for q, a in turns for c in ({'from': 'human', 'value': q}, {'from': 'gpt', 'value': a})]})
    gen = generator_samples('common', qa, seed=seed, task_specific=0.5, source=f'{world}/sft.json')
    out = Path(out_dir)
    images = out / 'images'
    images.mkdir(parents=True, exist_ok=True)
    for r in lab:  # the labelled images, linked: one image folder for everything the learner trains on
        if r.get('image') and not (images / r['image']).is_symlink():
            (images / r['image']).symlink_to(os.path.relpath(world.resolve() / 'images' / r['image'], images.resolve()))
    first = meta['num_train']  # fresh images of the same world: neither the learner nor the judge saw them
    dets = W.render_train_images(images, range(first, first + unlabelled), meta['seed'],
                                 tuple(meta['image_size_range']))
    unl = [{'id': f'unl_{Path(f).stem}', 'image': f} for f in dets]
    boxes = json.loads((world / 'boxes.json').read_text()) + [{'id': u['id'], **dets[u['image']]} for u in unl]
    (out / 'labelled.json').write_text(json.dumps(lab))
    (out / 'generator.json').write_text(json.dumps(gen))
    (out / 'boxes.json').write_text(json.dumps(boxes))
    (out / 'unlabelled.jsonl').write_text(''.join(json.dumps(u) + '\n' for u in unl))
    return {'labelled': len(lab), 'labelled_images': labelled, 'generator': len(gen), 'unlabelled': len(unl)}


def extend_boxes(box_file, records, out_path):
    """The entries of `box_file` plus, for every record without one (generator and generated samples), a
    copy of its image's entry (that of the world's SFT sample `sft_N` or unlabelled image `unl_N` of N.png).
    Returns the number added."""
    entries = json.loads(Path(box_file).read_text())
    ids = {e['id'] for e in entries}
    by_image = {f'{e["id"][4:]}.png': e for e in entries if e['id'][:4] in ('sft_', 'unl_')}
    added = 0
    for r in records:
        if r['id'] in ids or not r.get('image'):
            continue
        src = by_image.get(r['image'])
        if src is None:
            raise ValueError(f'sample {r["id"]}: no box entry for its image {r["image"]!r} in {box_file}')
        entries.append({**src, 'id': r['id']})
        ids.add(r['id'])
        added += 1
    Path(out_path).write_text(json.dumps(entries))
    return added


def precision_table(world_dir, named_samples):
    """Prints generated-sample precision by question type, a column per (name, samples); -> [overall %]."""
    results = [(name, *precision(world_dir, samples)) for name, samples in named_samples]
    types = [t for t in list(PATTERNS) + ['other'] if any(t in r[2] for r in results)]
    print(f'{"generated":<10} ' + ' '.join(f'{name:>18}' for name, _ in named_samples))
    for t in types:
        cells = []
        for _, _, by_type in results:
            hit, n = by_type.get(t, (0, 0))
            cells.append(f'{(100 * hit / n if n else 0):5.1f}% of {n:>6}')
        print(f'{t:<10} ' + ' '.join(f'{c:>18}' for c in cells))
    print(f'{"all":<10} ' + ' '.join(f'{f"{p:5.1f}% of {len(s):>6}":>18}' for (_, p, _), (_, s) in
                                     zip(results, named_samples)))
    return [p for _, p, _ in results]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    d = sub.add_parser('data')
    d.add_argument('world_dir')
    d.add_argument('out_dir')
    d.add_argument('--labelled', type=int, default=600)
    d.add_argument('--unlabelled', type=int, default=3000)
    d.add_argument('--seed', type=int, default=0)
    b = sub.add_parser('boxes')
    b.add_argument('box_file')
    b.add_argument('out')
    b.add_argument('data', nargs='+', help='json files whose samples need box entries')
    r = sub.add_parser('report')
    r.add_argument('world_dir')
    r.add_argument('generated')
    r.add_argument('kept')
    r.add_argument('labelled_export')
    r.add_argument('mixed_export')
    args = ap.parse_args(argv)
    if args.cmd == 'data':
        n = write_data(args.world_dir, args.out_dir, args.labelled, args.unlabelled, args.seed)
        print(f"labelled: {n['labelled_images']} images ({n['labelled']} samples), Genixer data from them: "
              f"{n['generator']}; unlabelled: {n['unlabelled']} fresh images -> {args.out_dir}")
    elif args.cmd == 'boxes':
        records = [r for path in args.data for r in json.loads(Path(path).read_text())]
        n = extend_boxes(args.box_file, records, args.out)
        print(f'box entries for {n} more samples -> {args.out}')
    else:
        from mg_llava.demo.distill import report
        generated = json.loads(Path(args.generated).read_text())
        kept = json.loads(Path(args.kept).read_text())
        before, after = precision_table(args.world_dir, [('before filtering', generated),
                                                         ('after filtering', kept)])
        acc = report(args.world_dir, [('labelled only', args.labelled_export),
                                      ('+ generated', args.mixed_export)])
        print(f'genixer held-out accuracy: {acc["+ generated"]:.1f}% (labelled only {acc["labelled only"]:.1f}%; '
              f'generated precision {before:.1f}% -> {after:.1f}% after filtering)')


if __name__ == '__main__':
    main()
