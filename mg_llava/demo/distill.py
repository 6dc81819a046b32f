"""The LLaVA-MoD demo's helpers (`make demo-distill`, script/demo_distill.sh).

    python -m mg_llava.demo.distill student TEACHER_EXPORT OUT_DIR [--keep-layers 0 3]
        the student's LLM: the teacher's with half its layers (depth pruning; same tokenizer)
    python -m mg_llava.demo.distill data WORLD_DIR OUT_DIR [--num-samples 200] [--seed 0]
        the student's small labelled budget (LLaVA-MoD's setting: a teacher trained on much, a student
        distilled on little): OUT_DIR/sft.json, the first N samples of the world's SFT file (the teacher's
        SFT data); OUT_DIR/pairs.json, preference pairs from those, one per image (chosen = the true answer,
        rejected = a plausible wrong one: another answer of the same question type); OUT_DIR/chosen.json, the
        same questions with their chosen answers as SFT conversations (the SFT ablation's twin of the
        preference stage: same images, questions and steps, no rejected answer)
    python -m mg_llava.demo.distill report WORLD_DIR NAME=EXPORT_DIR [NAME=EXPORT_DIR ...]
        held-out accuracy per question type, a column per model; the last line is
        `distilled student held-out accuracy: XX.X% (teacher YY.Y%, SFT student ZZ.Z%)`
        (needs the names `teacher`, `SFT student` and, last, the final distilled stage).
"""
import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mg_llava.demo import world as W

# answer word -> (question type, the type's answers)
ANSWER_TYPES = {a: (t, choices) for t, (_, choices) in W.QUESTION_TYPES.items() for a in choices}
STUDENT_LAYERS = (0, 3)   # the first and the last of the demo teacher's 4 layers


def build_student_llm(teacher_export, out_dir, keep_layers=STUDENT_LAYERS):
    """The teacher's LLM with only `keep_layers` of its decoder layers (depth pruning, as Minitron): the demo has
    no small pretrained LLM that knows the world's words, which is what a real LLaVA-MoD student (e.g. Qwen2-0.5B
    for a Qwen2-7B teacher) brings. Returns (layers kept, parameter count)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mg_llava.models.export import read_folder
    _, saved = read_folder(teacher_export)
    if not saved.get('llm'):
        raise ValueError(f'{teacher_export}: the teacher export holds no trained LLM folder to prune')
    llm = AutoModelForCausalLM.from_pretrained(Path(teacher_export) / saved['llm'], torch_dtype=torch.float32)
    layers = llm.model.layers
    if not all(0 <= i < len(layers) for i in keep_layers) or len(set(keep_layers)) != len(keep_layers):
        raise ValueError(f'keep_layers {list(keep_layers)} must be distinct indices of the {len(layers)} layers')
    llm.model.layers = torch.nn.ModuleList(layers[i] for i in keep_layers)
    for i, layer in enumerate(llm.model.layers):
        layer.self_attn.layer_idx = i   # the KV cache is indexed by position in the stack
    llm.config.num_hidden_layers = len(keep_layers)
    llm.save_pretrained(out_dir, safe_serialization=True)
    return list(keep_layers), sum(p.numel() for p in llm.parameters())


def preference_pairs(sft_records, seed=0):
    """One pair per image sample of the world's SFT json: a question drawn from its short-answer turns (lettered
    multiple-choice turns and text-only samples skipped), chosen = its answer, rejected = another answer of the
    same type drawn at random. Returns (pairs, chosen_conversations); ids are the SFT ids (the box file's keys)."""
    rng = np.random.default_rng(seed)
    pairs, chosen = [], []
    for rec in sft_records:
        if not rec.get('image'):
            continue
        conv = rec['conversations']
        turns = [(conv[i]['value'].replace('<image>\n', ''), conv[i + 1]['value'])
                 for i in range(0, len(conv) - 1, 2) if conv[i + 1]['value'] in ANSWER_TYPES]
        if not turns:
            continue
        question, answer = turns[rng.integers(len(turns))]
        _, choices = ANSWER_TYPES[answer]
        wrong = [c for c in choices if c != answer]
        rejected = wrong[rng.integers(len(wrong))]
        human = {'from': 'human', 'value': '<image>\n' + question}
        pairs.append({'id': rec['id'], 'image': rec['image'], 'chosen': [human, {'from': 'gpt', 'value': answer}],
                      'rejected': [human, {'from': 'gpt', 'value': rejected}]})
        chosen.append({'id': rec['id'], 'image': rec['image'], 'conversations': pairs[-1]['chosen']})
    return pairs, chosen


def write_student_data(world_dir, out_dir, num_samples=200, seed=0):
    """Writes OUT/sft.json (the first `num_samples` of the world's SFT samples), OUT/pairs.json and
    OUT/chosen.json (preference_pairs of those). Returns (samples, images, pairs)."""
    records = json.loads((Path(world_dir) / 'sft.json').read_text())
    if not 0 < num_samples <= len(records):
        raise ValueError(f'num_samples={num_samples}: {world_dir}/sft.json holds {len(records)} samples')
    records = records[:num_samples]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs, chosen = preference_pairs(records, seed)
    (out / 'sft.json').write_text(json.dumps(records))
    (out / 'pairs.json').write_text(json.dumps(pairs))
    (out / 'chosen.json').write_text(json.dumps(chosen))
    return len(records), sum(1 for r in records if r.get('image')), len(pairs)


def accuracy_by_type(questions, preds):
    """-> ({type: accuracy %}, overall accuracy %)."""
    from mg_llava.demo.evaluate import normalise
    hits = defaultdict(list)
    for q, p in zip(questions, preds):
        hits[q['type']].append(normalise(p) == q['answer'])
    every = [h for v in hits.values() for h in v]
    return {t: 100 * sum(v) / len(v) for t, v in hits.items()}, 100 * sum(every) / len(every)


def report(world_dir, models, batch_size=32):
    """models: [(name, export_dir)] -> prints the table; returns {name: overall accuracy %}."""
    import torch

    from mg_llava.data import read_records
    from mg_llava.demo.evaluate import answer_questions
    from mg_llava.models import MGLLaVAModel
    questions = read_records(str(Path(world_dir) / 'heldout.jsonl'))
    results = {}
    for name, export in models:
        torch.manual_seed(0)
        t0 = time.time()
        model = MGLLaVAModel.from_pretrained(export)
        results[name] = accuracy_by_type(questions, answer_questions(model, questions, world_dir, batch_size))
        print(f'  {name}: {len(questions)} held-out questions in {time.time() - t0:.1f} s ({export})')
    types = list(results[models[0][0]][0])
    width = max(12, *(len(n) for n, _ in models))
    print(f'{"type":<10} {"n":>4} ' + ' '.join(f'{n:>{width}}' for n, _ in models))
    counts = {t: sum(q['type'] == t for q in questions) for t in types}
    for t in types:
        print(f'{t:<10} {counts[t]:>4} ' + ' '.join(f'{results[n][0][t]:>{width - 1}.1f}%' for n, _ in models))
    print(f'{"all":<10} {len(questions):>4} ' + ' '.join(f'{results[n][1]:>{width - 1}.1f}%' for n, _ in models))
    return {n: r[1] for n, r in results.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('student')
    s.add_argument('teacher_export')
    s.add_argument('out_dir')
    s.add_argument('--keep-layers', type=int, nargs='+', default=list(STUDENT_LAYERS))
    p = sub.add_parser('data')
    p.add_argument('world_dir')
    p.add_argument('out_dir')
    p.add_argument('--num-samples', type=int, default=200)
    p.add_argument('--seed', type=int, default=0)
    r = sub.add_parser('report')
    r.add_argument('world_dir')
    r.add_argument('models', nargs='+', metavar='NAME=EXPORT_DIR')
    args = ap.parse_args(argv)
    if args.cmd == 'student':
        kept, n = build_student_llm(args.teacher_export, args.out_dir, args.keep_layers)
        print(f"student LLM: the teacher's layers {kept}, {n / 1e6:.2f} M parameters -> {args.out_dir}")
    elif args.cmd == 'data':
        n, images, pairs = write_student_data(args.world_dir, args.out_dir, args.num_samples, args.seed)
        print(f"the student's data: {n} SFT samples ({images} images), {pairs} preference pairs -> {args.out_dir}")
    else:
        models = [tuple(m.split('=', 1)) for m in args.models]
        bad = [m for m in models if len(m) != 2]
        if bad:
            ap.error(f'models are NAME=EXPORT_DIR, got {bad[0][0]!r}')
        acc = report(args.world_dir, models)
        names = [n for n, _ in models]
        for need in ('teacher', 'SFT student'):
            if need not in acc:
                ap.error(f'report needs a model named {need!r} (got {names})')
        final = names[-1]
        print(f'distilled student held-out accuracy: {acc[final]:.1f}% (teacher {acc["teacher"]:.1f}%, '
              f'SFT student {acc["SFT student"]:.1f}%)')


if __name__ == '__main__':
    main()
