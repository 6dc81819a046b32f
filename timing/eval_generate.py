"""Questions/s of the batched evaluation loop vs batch size 1, same model, same questions; predictions must match.

    python timing/eval_generate.py --tiny                     # CPU, seconds: tiny random model, demo world
    python timing/eval_generate.py --config CFG --export DIR --benchmark NAME [--batch-size 16] \
        [--limit 500] [--dtype bf16]                              # a real model on one benchmark entry of CFG

Prints one JSON line: questions, batch_size, questions/s at batch 1 and batched, speedup, identical, mismatches.
Exits 1 when the predictions differ (a speed-up that changes answers does not count).
"""
import argparse
import json
import os.path as osp
import sys
import tempfile
import time

import torch

from mg_llava.evaluation import questions as Q
from mg_llava.evaluation.loop import DTYPES, SampleBuilder, predict


def tiny_setup(tmp):
    """A tiny world + random model (answers depend on the input) and its held-out short-answer questions."""
    from mg_llava.data import VisionSpec
    from mg_llava.demo.tiny_assets import build_random_model, build_tiny_assets
    from mg_llava.demo.world import generate_world
    world = generate_world(osp.join(tmp, 'world'), num_train=4, num_heldout=12)
    assets = build_tiny_assets(osp.join(tmp, 'assets'), world_dir=osp.join(tmp, 'world'))
    model = build_random_model(assets).eval()
    spec = VisionSpec(image_size=112, image_size_aux=256)  # the test preset's tower sizes
    bench = dict(name='shapes_short', benchmark='gqa', data=world['bench_short'],
                 annotations=world['bench_short_gt'], image_folder=world['images'], box_file=world['bench_short_boxes'])
    return model, spec, bench


def real_setup(args):
    from mmengine.config import Config

    from mg_llava.models import MGLLaVAModel
    cfg = Config.fromfile(args.config)
    benches = {b.get('name', b['benchmark']): dict(b) for b in cfg.evaluation['benchmarks']}
    if args.benchmark not in benches:
        sys.exit(f'{args.config}: no evaluation entry named {args.benchmark!r}; have {sorted(benches)}')
    model = MGLLaVAModel.from_pretrained(args.export, torch_dtype=DTYPES[args.dtype])
    if torch.cuda.is_available():
        model = model.cuda()
    return model, model.vision_spec, benches[args.benchmark]


def timed(fn):
    """(fn(), wall seconds), with the GPU synchronised on both sides (also used by genixer_throughput.py)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def timed_predict(model, questions, build, batch_size, max_new_tokens):
    return timed(lambda: predict(model, questions, build, batch_size, max_new_tokens, progress=False))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--tiny', action='store_true')
    ap.add_argument('--config')
    ap.add_argument('--export')
    ap.add_argument('--benchmark')
    ap.add_argument('--batch-size', type=int, default=16)
    ap.add_argument('--limit', type=int, default=0, help='first N questions only (0 = all)')
    ap.add_argument('--dtype', default='bf16', choices=sorted(DTYPES))
    ap.add_argument('--max-new-tokens', type=int, default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            torch.set_num_threads(1)  # one reduction order: greedy ties on a random model must not flip
            model, spec, bench = tiny_setup(tmp)
            args.batch_size = min(args.batch_size, 8)
        else:
            if not (args.config and args.export and args.benchmark):
                ap.error('--config, --export and --benchmark are required without --tiny')
            model, spec, bench = real_setup(args)
        from mg_llava.data import VisionSpec, load_box_index
        spec = spec if isinstance(spec, VisionSpec) else VisionSpec(**spec)
        questions = Q.load_questions(bench['benchmark'], bench['data'], bench.get('image_folder'),
                                     bench.get('annotations'))
        questions = questions[:args.limit] if args.limit else questions
        boxes = load_box_index(bench['box_file']) if bench.get('box_file') else None
        build = SampleBuilder(model, spec, boxes, bench.get('box_file'))
        timed_predict(model, questions[:2], build, 2, args.max_new_tokens)  # warm-up
        one, t_one = timed_predict(model, questions, build, 1, args.max_new_tokens)
        many, t_many = timed_predict(model, questions, build, args.batch_size, args.max_new_tokens)
    mismatches = [k for k in one if one[k] != many.get(k)]
    n = len(questions)
    result = dict(benchmark=bench.get('name', bench['benchmark']), questions=n, batch_size=args.batch_size,
                  device='cuda' if torch.cuda.is_available() else 'cpu', dtype=args.dtype if not args.tiny else 'fp32',
                  bs1_questions_per_s=round(n / t_one, 2), batched_questions_per_s=round(n / t_many, 2),
                  speedup=round(t_one / t_many, 2), identical=not mismatches, mismatches=len(mismatches))
    print(json.dumps(result))
    return 0 if not mismatches else 1


if __name__ == '__main__':
    sys.exit(main())
