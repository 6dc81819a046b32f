"""Genixer throughput: generation (samples/s, seeded sampling) and the judge filter (samples/s), batched vs batch 1,
same model, same images; outputs must match (a speed-up that changes outputs does not count).

    python timing/genixer_throughput.py --tiny                          # CPU, seconds: tiny random model
    python timing/genixer_throughput.py --export DIR --images DIR_OR_JSONL [--image-folder D] [--limit 256] \\
        [--batch-size 32] [--max-new-tokens 64] [--dtype bf16] [--box-file B]

Generation: tools/generate_data.py's path (mg_llava.datagen.generate over the evaluation engine), temperature
0.2, per-row seeded sampling, so batch 1 and batch B must write the same texts. Judge: P(Yes) of each generated
text (judged as written, parsed or not), equal to 1e-4. Prints one JSON line; exits 1 when outputs differ.
"""
import argparse
import json
import os.path as osp
import sys
import tempfile

import torch

from mg_llava.datagen import generate as G
from mg_llava.datagen import judge as J
from mg_llava.evaluation.loop import DTYPES, SampleBuilder, predict

from eval_generate import timed   # this folder (the script's own directory is on sys.path)


def tiny_setup(tmp):
    from mg_llava.demo.tiny_assets import build_random_model, build_tiny_assets
    from mg_llava.demo.world import generate_world
    world = generate_world(osp.join(tmp, 'world'), num_train=24, num_heldout=2)
    assets = build_tiny_assets(osp.join(tmp, 'assets'), world_dir=osp.join(tmp, 'world'))
    model = build_random_model(assets).eval()
    from mg_llava.detection.boxfile import list_image_folder
    return model, list_image_folder(world['images'])[:24], None, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--tiny', action='store_true')
    ap.add_argument('--export')
    ap.add_argument('--images')
    ap.add_argument('--image-folder')
    ap.add_argument('--box-file')
    ap.add_argument('--limit', type=int, default=256)
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--max-new-tokens', type=int, default=64)
    ap.add_argument('--dtype', default='bf16', choices=sorted(DTYPES))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            torch.set_num_threads(1)   # one reduction order on a random model
            model, items, boxes, box_file = tiny_setup(tmp)
            args.batch_size, args.max_new_tokens = min(args.batch_size, 8), 12
        else:
            if not (args.export and args.images):
                ap.error('--export and --images are required without --tiny')
            from mg_llava.data import load_box_index
            from mg_llava.models import MGLLaVAModel
            sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
            from generate_data import image_items
            items, _ = image_items(args.images, args.image_folder)
            items = items[:args.limit]
            model = MGLLaVAModel.from_pretrained(args.export, torch_dtype=DTYPES[args.dtype]).eval()
            if torch.cuda.is_available():
                model = model.cuda()
            boxes = load_box_index(args.box_file) if args.box_file else None
            box_file = args.box_file
        build = SampleBuilder(model, model.vision_spec, boxes, box_file)
        questions = G.generation_questions(items, 'agnostic', seed=0)
        gen_kwargs = G.sampling_kwargs(0, 0.2)

        def generate(bs, qs=questions):
            return predict(model, qs, build, bs, args.max_new_tokens, progress=False, generation_kwargs=gen_kwargs)
        generate(2, questions[:2])   # warm-up
        one, t_one = timed(lambda: generate(1))
        many, t_many = timed(lambda: generate(args.batch_size))
        gen_mismatch = [k for k in one if one[k] != many.get(k)]
        judged = [{'id': q['id'], 'text': J.judge_prompt(one[q['id']], ''), 'image': q['image'],
                   'box_key': q['box_key'], 'where': q['where']} for q in questions]
        step = J.p_yes_step(model.tokenizer)

        def judge(bs):
            return predict(model, judged, build, bs, progress=False, step=step)
        j_one, tj_one = timed(lambda: judge(1))
        j_many, tj_many = timed(lambda: judge(args.batch_size))
        judge_mismatch = [k for k in j_one if abs(j_one[k] - j_many[k]) > 1e-4]
    n = len(questions)
    result = dict(samples=n, batch_size=args.batch_size, device='cuda' if torch.cuda.is_available() else 'cpu',
                  dtype='fp32' if args.tiny else args.dtype, max_new_tokens=args.max_new_tokens,
                  generate_bs1_per_s=round(n / t_one, 2), generate_batched_per_s=round(n / t_many, 2),
                  generate_speedup=round(t_one / t_many, 2), generate_identical=not gen_mismatch,
                  judge_bs1_per_s=round(n / tj_one, 2), judge_batched_per_s=round(n / tj_many, 2),
                  judge_speedup=round(tj_one / tj_many, 2), judge_equal=not judge_mismatch)
    print(json.dumps(result))
    return 0 if not (gen_mismatch or judge_mismatch) else 1


if __name__ == '__main__':
    sys.exit(main())
