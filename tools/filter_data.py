"""Genixer filters: generated samples (tools/generate_data.py) -> the samples worth training on.

    python tools/filter_data.py judge JUDGE_EXPORT --data generated.json --image-folder DIR --out kept.json \\
        [--band 0.5 0.7] [--score p_yes|reference_geomean] [--batch-size 8] [--box-file B] [--dtype fp32]
    python tools/filter_data.py clip CLIP_DIR --data generated_rec.json --image-folder DIR --out kept.json \\
        [--threshold 25] [--score cosine|raw_dot] [--min-size 50] [--batch-size 32]
    torchrun --nproc-per-node 8 tools/filter_data.py judge ... --launcher pytorch

judge: a model of this framework (its export), or a transformers-native VLM folder (config.json + its processor,
e.g. llava-hf/llava-1.5-7b-hf saved locally; P(Yes) only), answers "Is 'Question: … Answer: …' true for this image? … Yes or
No." for every sample; P(Yes) over {Yes, No} of the first answer token, one greedy forward per batch; samples
with lo <= P(Yes) <= hi are kept (default 0.5-0.7, Genixer's finding). `--score reference_geomean`: the
reference's sampled geometric mean instead (stochastic; kept when the judge said Yes and the score is in band).
`--score answer`: round-trip consistency instead of the Yes/No prompt: the judge is asked the generated question and
scores its own probability of the generated answer (geometric mean over the answer's tokens, one forward).
clip: REC samples (expression, box) scored by 100 * cos(CLIP(crop), CLIP(expression)) with a local CLIPModel;
crops under --min-size px and unparsable samples are rejected with the reason.

Outputs: OUT (kept samples, with their score), OUT minus .json + `.scores.jsonl` (every sample: id, score, kept
or the reject reason). Samples are matched by id. Both filters resume like generation (OUT.parts/, --restart) and
shard over ranks.
"""
import argparse
import os.path as osp
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='filter', required=True)
    for name in ('judge', 'clip'):
        s = sub.add_parser(name)
        s.add_argument('model', help='judge export or local transformers VLM folder (judge); local CLIPModel + '
                       'CLIPProcessor folder (clip)')
        s.add_argument('--data', required=True, help='generated samples (.json list or .jsonl)')
        s.add_argument('--image-folder', required=True, help='root of the samples\' "image" paths')
        s.add_argument('--out', required=True, help='kept samples (.json)')
        s.add_argument('--batch-size', type=int, default=8 if name == 'judge' else 32)
        s.add_argument('--dtype', choices=('bf16', 'fp16', 'fp32'), default='fp32')
        s.add_argument('--no-progress', action='store_true')
        s.add_argument('--launcher', choices=('none', 'pytorch', 'slurm'), default='none')
        s.add_argument('--restart', action='store_true', help='delete the partial output of an interrupted run')
    j = sub.choices['judge']
    j.add_argument('--band', type=float, nargs=2, default=(0.5, 0.7), metavar=('LO', 'HI'))
    j.add_argument('--score', choices=('p_yes', 'reference_geomean', 'answer'), default='p_yes',
                   help="answer: not Genixer's; the judge's probability of the generated answer to the question")
    j.add_argument('--seed', type=int, default=0, help='reference_geomean sampling seed')
    j.add_argument('--box-file', help='detector boxes of the images (a judge with object tokens)')
    j.add_argument('--num-workers', type=int, default=0)
    c = sub.choices['clip']
    c.add_argument('--threshold', type=float, help='keep score >= this (default 25 for cosine, 60 for raw_dot)')
    c.add_argument('--score', choices=('cosine', 'raw_dot'), default='cosine')
    c.add_argument('--min-size', type=int, default=50)
    args = p.parse_args(argv)
    if not args.out.endswith('.json'):
        p.error('--out must end in .json')
    if args.filter == 'judge' and not 0 <= args.band[0] <= args.band[1] <= 1:
        p.error('--band LO HI needs 0 <= LO <= HI <= 1')
    return args


def read_samples(path, need):
    from mg_llava.data.dataset import read_records
    from mg_llava.datagen.filtering import check_samples
    samples = read_records(path)
    check_samples(samples, path, need)
    return samples


def run_judge(args, samples):
    import torch

    from mg_llava.data import load_box_index
    from mg_llava.datagen import filtering as FL
    from mg_llava.datagen import hf_judge as HJ
    from mg_llava.datagen import judge as J
    from mg_llava.errors import InputError, ResumeError
    from mg_llava.datagen.parts import close_parts, open_parts
    from mg_llava.evaluation import resume as R
    from mg_llava.evaluation.loop import DTYPES, SampleBuilder, gather_predictions, predict
    from mg_llava.inference.sharding import barrier, init_distributed, rank_and_world
    from mg_llava.models import MGLLaVAModel

    hf = HJ.is_hf_vlm(args.model)
    if not hf and not osp.isfile(osp.join(args.model, 'mg_llava_config.json')):
        raise InputError(args.model, '', 'not a judge: neither an export (mg_llava_config.json) nor a transformers '
                         'VLM folder (config.json + preprocessor_config.json)')
    if hf and args.score != 'p_yes':
        raise InputError(args.model, '', f'--score {args.score} needs a framework export as judge')
    boxes = load_box_index(args.box_file) if args.box_file and not hf else None
    init_distributed(args.launcher)
    rank, world = rank_and_world()
    dtype = DTYPES[args.dtype]
    device = torch.device(f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu')
    if hf:  # a transformers-native VLM: its own processor and prompt format, no object tokens
        model = HJ.HFJudge(args.model, dtype, device)
        build, step, digest = HJ.HFPromptBuilder(model), HJ.hf_p_yes_step(model), HJ.judge_digest(args.model)
    else:
        model = MGLLaVAModel.from_pretrained(args.model, torch_dtype=dtype).to(device=device, dtype=dtype).eval()
        build = SampleBuilder(model, model.vision_spec, boxes, args.box_file)
        if args.score == 'answer':  # round-trip consistency: the question itself, the answer's tokens appended
            build = J.AnswerPromptBuilder(build, model.tokenizer)
            step = J.answer_step({s['id']: len(J.answer_ids(model.tokenizer, s['answer'])) for s in samples})
        else:
            step = J.p_yes_step(model.tokenizer) if args.score == 'p_yes' else J.reference_step(args.seed)
        digest = R.export_digest(args.model)
    name = 'judge'
    try:
        parts = open_parts(args.out, name, {'export': osp.abspath(args.model), 'digest': digest},
                           {'data': args.data, 'image_folder': args.image_folder, 'box_file': args.box_file},
                           dict(score=args.score, seed=args.seed, batch_size=args.batch_size, dtype=args.dtype),
                           args.restart, rank)
    except ResumeError as e:
        sys.exit(f'filter_data: {e}')
    questions = (FL.answer_questions if args.score == 'answer' else FL.judge_questions)(samples, args.image_folder)
    try:
        scores = predict(model, questions, build,
                         batch_size=args.batch_size, num_workers=args.num_workers, desc='judge',
                         progress=not args.no_progress, partial=(parts, name), step=step)
    except InputError as e:
        sys.exit(f'filter_data: {e} (finished batches are kept in {parts}: fix the input and rerun to go on)')
    scores = gather_predictions(scores)
    done = rank == 0
    if done:
        kept, table = FL.select(samples, scores, tuple(args.band), args.score)
        close_parts(parts, name)
    if world > 1:
        barrier()
        torch.distributed.destroy_process_group()
    return (kept, table) if done else None


def run_clip(args, samples):
    """Batches of parsed REC samples dealt to ranks round robin; each finished batch appended to this rank's
    partial file (OUT.parts/, fingerprinted like the judge's) so a rerun goes on where it stopped."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from mg_llava.data.preprocess import load_image
    from mg_llava.datagen import filtering as FL
    from mg_llava.datagen.clip_filter import clip_scores, crop_box
    from mg_llava.datagen.formats import FormatError
    from mg_llava.errors import DataError, ImageError, ResumeError
    from mg_llava.datagen.parts import close_parts, open_parts
    from mg_llava.evaluation import resume as R
    from mg_llava.evaluation.loop import DTYPES, gather_predictions
    from mg_llava.inference.sharding import barrier, init_distributed, rank_and_world, shard

    threshold = args.threshold if args.threshold is not None else (FL.CLIP_THRESHOLD if args.score == 'cosine'
                                                                   else 60.0)
    init_distributed(args.launcher)
    rank, world = rank_and_world()
    name = 'clip'
    try:
        parts = open_parts(args.out, name, {'export': osp.abspath(args.model), 'digest': ''},
                           {'data': args.data, 'image_folder': args.image_folder},
                           dict(score=args.score, min_size=args.min_size, batch_size=args.batch_size,
                                dtype=args.dtype), args.restart, rank)
    except ResumeError as e:
        sys.exit(f'filter_data: {e}')
    results, parsed = {}, []
    for s in samples:
        try:
            parsed.append((s, *FL.rec_target(s)))
        except FormatError as e:
            results[s['id']] = {'score': None, 'reason': str(e)}
    done = R.read_partial(parts, name)
    batches = shard([parsed[i:i + args.batch_size] for i in range(0, len(parsed), args.batch_size)], rank, world)
    processor = CLIPProcessor.from_pretrained(args.model)
    dtype = DTYPES[args.dtype]
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    model = CLIPModel.from_pretrained(args.model, torch_dtype=dtype).to(device).eval()
    with R.partial_output(parts, name).appender(rank) as sink:
        for batch in batches:
            if all(s['id'] in done for s, _, _ in batch):
                results.update({s['id']: done[s['id']] for s, _, _ in batch})
                continue
            rows, ready = {}, []
            for s, expression, box in batch:
                path = osp.join(args.image_folder, s['image'])
                try:
                    ready.append((s, expression, crop_box(load_image(path), box, args.min_size)))
                except ImageError as e:
                    raise DataError(path, f'sample {s["id"]}', f'unreadable image ({e.reason})') from None
                except FormatError as e:
                    rows[s['id']] = {'score': None, 'reason': str(e)}
            if ready:
                inputs = processor(text=[e for _, e, _ in ready], images=[c for _, _, c in ready],
                                   return_tensors='pt', padding=True, truncation=True).to(device)
                with torch.no_grad():
                    img = model.get_image_features(pixel_values=inputs['pixel_values'].to(dtype))
                    txt = model.get_text_features(input_ids=inputs['input_ids'],
                                                  attention_mask=inputs['attention_mask'])
                for (s, _, _), v in zip(ready, clip_scores(img, txt, args.score).tolist()):
                    rows[s['id']] = {'score': v}
            sink.write_many({'id': i, 'prediction': r} for i, r in rows.items())
            results.update(rows)
    results = gather_predictions(results)
    kept = table = None
    if rank == 0:
        table = []
        for s in samples:
            r = results[s['id']]
            row = {'id': s['id'], 'clip_score': r['score'],
                   'kept': r['score'] is not None and r['score'] >= threshold}
            if 'reason' in r:
                row['reason'] = r['reason']
            table.append(row)
        kept = [{**s, 'clip_score': r['clip_score']} for s, r in zip(samples, table) if r['kept']]
        close_parts(parts, name)
    if world > 1:
        barrier()
        torch.distributed.destroy_process_group()
    return (kept, table) if rank == 0 else None


def main(argv=None):
    args = parse_args(argv)
    from mg_llava.errors import InputError
    from mg_llava.inference.writer import write_atomic
    t0 = time.time()
    try:
        need = ('id', 'image', 'question', 'answer')
        samples = read_samples(args.data, need)
        result = run_judge(args, samples) if args.filter == 'judge' else run_clip(args, samples)
    except InputError as e:
        sys.exit(f'filter_data: {e}')
    if result is None:   # not rank 0
        return 0
    kept, table = result
    write_atomic(args.out, kept)
    write_atomic(args.out[:-len('.json')] + '.scores.jsonl', table)
    print(f'filter_data {args.filter}: {len(samples)} samples -> {len(kept)} kept in {args.out} '
          f'({len(samples) / max(time.time() - t0, 1e-9):.2f} samples/s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
