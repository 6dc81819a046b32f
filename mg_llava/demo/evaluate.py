"""Answer the demo world's held-out questions with an exported model and print accuracy per type.

    python -m mg_llava.demo.evaluate EXPORT_DIR WORLD_DIR [--batch-size 32]

The last line is exactly `held-out accuracy: XX.X% (chance YY.Y%)`.
"""
import argparse
import json
import os.path as osp
import string
import time
from collections import defaultdict

import torch

from mg_llava.data import load_image, read_records
from mg_llava.inference.generation import generate
from mg_llava.inference.prompt import build_prompt_sample, collate_prompts, model_vision_spec


def normalise(text):
    """'Red.' -> 'red': lower case, surrounding punctuation and whitespace removed, first word."""
    words = text.strip().lower().split()
    return words[0].strip(string.punctuation) if words else ''


def chance_of(q):
    return 1.0 / len(q['choices'])


def answer_questions(model, questions, world_dir, batch_size=32):
    """Greedy answers for a list of held-out question dicts (order kept)."""
    spec = model_vision_spec(model)
    boxes = {}
    box_path = osp.join(world_dir, 'boxes.json')
    if model.bbox_projector is not None and osp.isfile(box_path):
        boxes = {str(e['id']): e for e in read_records(box_path)}
    images, preds = {}, []
    for start in range(0, len(questions), batch_size):
        batch = []
        for q in questions[start:start + batch_size]:
            if q['image'] not in images:
                images[q['image']] = load_image(osp.join(world_dir, 'images', q['image']))
            batch.append(build_prompt_sample(q['question'], images[q['image']], model.tokenizer, model.template,
                                             spec, model.num_image_tokens, box_entry=boxes.get(q['sample_id']),
                                             sample_id=q['id']))
        preds += generate(model, collate_prompts(batch, model.tokenizer))
    return preds


def report(questions, preds):
    """Print the per-type table; return (accuracy %, chance %)."""
    by_type = defaultdict(lambda: [0, 0, 0.0])
    for q, p in zip(questions, preds):
        row = by_type[q['type']]
        row[0] += 1
        row[1] += normalise(p) == q['answer']
        row[2] += chance_of(q)
    print(f'{"type":<10} {"n":>5} {"accuracy":>9} {"chance":>7} {"margin":>7}')
    for t, (n, correct, chance) in by_type.items():
        acc, ch = 100 * correct / n, 100 * chance / n
        print(f'{t:<10} {n:>5} {acc:>8.1f}% {ch:>6.1f}% {acc - ch:>+6.1f}')
    n = sum(r[0] for r in by_type.values())
    acc = 100 * sum(r[1] for r in by_type.values()) / n
    chance = 100 * sum(r[2] for r in by_type.values()) / n
    return acc, chance


def main(argv=None):
    from mg_llava.models import MGLLaVAModel
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('export_dir')
    ap.add_argument('world_dir')
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--predictions', help='write {id, prediction, answer, type} jsonl here')
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.time()
    model = MGLLaVAModel.from_pretrained(args.export_dir)
    questions = read_records(osp.join(args.world_dir, 'heldout.jsonl'))
    preds = answer_questions(model, questions, args.world_dir, args.batch_size)
    if args.predictions:
        with open(args.predictions, 'w') as f:
            for q, p in zip(questions, preds):
                f.write(json.dumps(dict(id=q['id'], prediction=p, answer=q['answer'], type=q['type'])) + '\n')
    print(f'answered {len(questions)} held-out questions in {time.time() - t0:.1f} s')
    acc, chance = report(questions, preds)
    print(f'held-out accuracy: {acc:.1f}% (chance {chance:.1f}%)')


if __name__ == '__main__':
    main()
