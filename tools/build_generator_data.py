"""Genixer generator training data: annotated sources of the 9 tasks -> one LLaVA json to fine-tune a generator.

    python tools/build_generator_data.py --source common=data/vqav2_gqa.json --source mc=data/aokvqa.json \\
        --source rec=data/refcoco_rec.jsonl --out data/genixer/generator.json [--task-specific 0.5] [--seed 0]

Each --source is TASK=PATH (TASK: common, adv, mc, longqa, md, rec, reg, pointqa, qca, rd; the record layout of
each is in mg_llava/datagen/tasks.py). Every sample becomes `<image>\\n` + a generic instruction (drawn per sample,
seeded) [+ the task's suffix, with probability --task-specific] -> `Question: … Answer: …`. A malformed record
stops the build with its file and id.
"""
import argparse
import json
import sys
from collections import Counter


def main(argv=None):
    from mg_llava.datagen.templates import TASKS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--source', action='append', required=True, metavar='TASK=PATH')
    p.add_argument('--out', required=True)
    p.add_argument('--task-specific', type=float, default=0.5,
                   help='probability that an instruction names its task (1: always, 0: task-agnostic only)')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    sources = []
    for s in args.source:
        task, _, path = s.partition('=')
        if task not in TASKS or not path:
            p.error(f'--source {s!r}: expected TASK=PATH with TASK one of {", ".join(TASKS)}')
        sources.append((task, path))
    if not 0 <= args.task_specific <= 1:
        p.error('--task-specific is a probability')
    from mg_llava.data.dataset import read_records
    from mg_llava.datagen.tasks import generator_samples
    from mg_llava.errors import InputError
    from mg_llava.inference.writer import write_atomic
    out, counts, stats = [], Counter(), {}
    try:
        for task, path in sources:
            samples = generator_samples(task, read_records(path), seed=args.seed, task_specific=args.task_specific,
                                        source=path, stats=stats)
            counts[task] += len(samples)
            out += samples
    except InputError as e:
        sys.exit(f'build_generator_data: {e}')
    dup = [k for k, n in Counter(s['id'] for s in out).items() if n > 1]
    if dup:
        sys.exit(f'build_generator_data: sample id {dup[0]!r} made twice: a source is given twice, or two '
                 f'sources of one task share ids')
    write_atomic(args.out, out)
    print(f'build_generator_data: {len(out)} samples ({json.dumps(dict(counts))}) -> {args.out}; '
          f'{stats.get("text_only", 0)} text-only samples skipped')
    return 0


if __name__ == '__main__':
    sys.exit(main())
