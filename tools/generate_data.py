"""Genixer generation: a generator export + unlabelled images -> `Question: … Answer: …` samples (LLaVA json).

    python tools/generate_data.py GENERATOR_EXPORT --images DIR_OR_JSONL --out generated.json \\
        [--image-folder DIR] [--task agnostic|common|adv|mc|longqa|md|rec|reg|pointqa|qca|rd] [--seed 0] \\
        [--temperature 0.2] [--batch-size 8] [--max-new-tokens 256] [--box-file boxes.json] [--dtype fp32]
    torchrun --nproc-per-node 8 tools/generate_data.py ... --launcher pytorch     (or --launcher slurm)

Inputs: a folder (recursive; id = relative path without suffix) or a .jsonl/.json of {"id" (or "question_id"),
"image"} records, image paths relative to --image-folder (default: the file's folder). --task agnostic uses the
generic instruction alone (the generator picks the kind of data); a task name appends its suffix. --box-file:
the images' detector boxes, for a generator with object tokens (MG-LLaVA).

Outputs: OUT (a JSON list; LLaVA samples with question, answer, task, template, seed, generator, raw text),
OUT minus .json + `.rejects.jsonl` (texts that are not `Question: … Answer: …`, with the reason; counted, never
dropped silently). Finished batches go to OUT.parts/ first: an interrupted run, rerun with the same arguments,
goes on where it stopped (other arguments or another generator are refused; --restart starts over). The same
seed gives the same file on any number of ranks (mg_llava.datagen.generate).
"""
import argparse
import os.path as osp
import sys
import time


def parse_args(argv=None):
    from mg_llava.datagen.templates import TASKS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('generator', help='export folder of the generator (xtuner convert pth_to_hf / save_pretrained)')
    p.add_argument('--images', required=True, help='image folder, or .jsonl/.json of {"id", "image"} records')
    p.add_argument('--image-folder', help='root of the "image" paths of a jsonl (default: its folder)')
    p.add_argument('--out', required=True, help='generated samples (.json)')
    p.add_argument('--task', default='agnostic', choices=('agnostic',) + TASKS)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--temperature', type=float, default=0.2, help='0: greedy')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--max-new-tokens', type=int, default=256)
    p.add_argument('--box-file', help='detector boxes of the images (a generator with object tokens)')
    p.add_argument('--dtype', choices=('bf16', 'fp16', 'fp32'), default='fp32')
    p.add_argument('--num-workers', type=int, default=0, help='image decoding/preprocessing processes')
    p.add_argument('--launcher', choices=('none', 'pytorch', 'slurm'), default='none')
    p.add_argument('--restart', action='store_true', help='delete the partial output of an interrupted run')
    p.add_argument('--no-progress', action='store_true')
    args = p.parse_args(argv)
    if not args.out.endswith('.json'):
        p.error('--out must end in .json (a JSON list of LLaVA samples)')
    if args.batch_size < 1 or args.max_new_tokens < 1 or args.temperature < 0:
        p.error('--batch-size and --max-new-tokens must be >= 1, --temperature >= 0')
    return args


def image_items(images, image_folder=None):
    """-> ([(id, path)], image root): a folder, or a json(l) of {id, image} records (errors name the file)."""
    from mg_llava.detection import boxfile
    from mg_llava.errors import DataError
    if osp.isdir(images):
        return boxfile.list_image_folder(images), images
    if not osp.isfile(images):
        raise DataError(images, '', 'no such image folder or image list file')
    root = image_folder or osp.dirname(osp.abspath(images))
    items, _, problems = boxfile.list_image_records(images, root)
    if problems:
        raise DataError(images, '', problems[0].split(': ', 1)[-1] + f' ({len(problems)} such records)')
    items, dup = boxfile.unique_items(items)
    if dup:
        raise DataError(images, f'id {dup[0][0]!r}', f'image id repeated ({len(dup)} repeats): ids must be unique')
    return items, root


def main(argv=None):
    args = parse_args(argv)
    import torch

    from mg_llava.data import load_box_index
    from mg_llava.datagen import generate as G
    from mg_llava.errors import InputError, ResumeError
    from mg_llava.datagen.parts import close_parts, open_parts
    from mg_llava.evaluation import resume as R
    from mg_llava.evaluation.loop import DTYPES, SampleBuilder, gather_predictions, predict
    from mg_llava.inference.sharding import barrier, init_distributed, rank_and_world
    from mg_llava.inference.writer import write_atomic
    from mg_llava.models import MGLLaVAModel

    try:
        items, root = image_items(args.images, args.image_folder)
        if not osp.isfile(osp.join(args.generator, 'mg_llava_config.json')):
            raise InputError(args.generator, '', 'not a generator export (no mg_llava_config.json): export the '
                             'trained generator with `xtuner convert pth_to_hf CONFIG CKPT OUT` first')
        boxes = load_box_index(args.box_file) if args.box_file else None
    except InputError as e:
        sys.exit(f'generate_data: {e}')
    init_distributed(args.launcher)
    rank, world = rank_and_world()
    dtype = DTYPES[args.dtype]
    device = torch.device(f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu')
    model = MGLLaVAModel.from_pretrained(args.generator, torch_dtype=dtype).to(device=device, dtype=dtype).eval()
    questions = G.generation_questions(items, args.task, args.seed)
    provenance = {'generator': osp.abspath(args.generator), 'seed': args.seed}
    name = 'generate'
    settings = dict(task=args.task, seed=args.seed, temperature=args.temperature, batch_size=args.batch_size,
                    max_new_tokens=args.max_new_tokens, dtype=args.dtype)
    try:
        parts = open_parts(args.out, name, {'export': osp.abspath(args.generator),
                                            'digest': R.export_digest(args.generator)},
                           {'images': args.images, 'box_file': args.box_file}, settings, args.restart, rank)
    except ResumeError as e:
        sys.exit(f'generate_data: {e}')
    t0 = time.time()
    build = SampleBuilder(model, model.vision_spec, boxes, args.box_file)
    stats = {}
    try:
        preds = predict(model, questions, build, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                        num_workers=args.num_workers, desc='generate', progress=not args.no_progress,
                        generation_kwargs=G.sampling_kwargs(args.seed, args.temperature), partial=(parts, name),
                        stats=stats)
    except InputError as e:   # an unreadable image, a missing box entry: the finished batches stay in parts/
        sys.exit(f'generate_data: {e} (finished batches are kept in {parts}: fix the input and rerun to go on)')
    preds = gather_predictions(preds)
    if rank == 0:
        samples, rejects = G.to_samples(questions, preds, args.task, root, provenance)
        write_atomic(args.out, samples)
        write_atomic(args.out[:-len('.json')] + '.rejects.jsonl', rejects)
        close_parts(parts, name)
        took = time.time() - t0
        resumed = f'resumed {stats["resumed"]} answers, ' if stats.get('resumed') else ''
        print(f'generate_data: {len(questions)} images ({resumed}{len(questions) / max(took, 1e-9):.2f} images/s '
              f'on {world} rank(s)) -> {len(samples)} samples in {args.out}, {len(rejects)} rejected '
              f'(not "Question: … Answer: …")')
    if world > 1:
        barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == '__main__':
    sys.exit(main())
