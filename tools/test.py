"""Evaluate a training checkpoint or a `pth_to_hf` export on the benchmarks of a config's `evaluation` dict.

    python tools/test.py CONFIG --checkpoint work_dirs/sft/iter_5000.pth [--work-dir DIR]
    python tools/test.py CONFIG --export work_dirs/sft/export
    NPROC_PER_NODE=8 torchrun --nproc-per-node 8 tools/test.py CONFIG --export DIR --launcher pytorch
    srun python tools/test.py CONFIG --export DIR --launcher slurm

The config's `evaluation = dict(benchmarks=[dict(name, benchmark, data, image_folder, annotations, box_file)],
batch_size=8, dtype='bf16', max_new_tokens=..., num_workers=..., system='', generation_kwargs={})` says what to
run (see
configs/_base_/mg_llava_sft.py). Writes, per benchmark, <name>_predictions.jsonl ({"id", "prediction"}: the
input of `python -m mg_llava.evaluation.score`), <name>_scores.json and official submission files, and one
summary.md + summary.csv recording model, config, checkpoint and model digest. Exits non-zero on any failure.

Before the model is built, every selected entry's files are checked (`data` exists and has the columns/fields
its reader needs, `annotations` and `box_file` parse, `image_folder` is a directory); all problems of all
entries are listed at once.

Each finished batch is appended to <name>_predictions.partial.rank<r>.jsonl, with a fingerprint of what
produced it in <name>_predictions.partial.meta.json (export/checkpoint path and sha256 digest of its weights,
config, entry, dtype, batch size, max_new_tokens, generation_kwargs, system). Rerunning into the same --work-dir
after a crash skips those batches only when the fingerprint is the same, and summary.md says how many answers
were resumed; partial files of another model or settings (or without a fingerprint) stop the run with a message
saying what differs: use a fresh --work-dir, or `--restart` to delete them and evaluate those benchmarks afresh.
"""
import argparse
import os.path as osp
import sys
import time

import torch


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('config')
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument('--checkpoint', help='training checkpoint (.pth, DeepSpeed dir, or a work dir)')
    src.add_argument('--export', help='folder written by `xtuner convert pth_to_hf`')
    ap.add_argument('--work-dir', help='default: work_dirs/<config name>/eval')
    ap.add_argument('--benchmarks', help='comma-separated entry names to run (default: all)')
    ap.add_argument('--batch-size', type=int)
    ap.add_argument('--dtype', choices=['bf16', 'fp16', 'fp32'])
    ap.add_argument('--max-new-tokens', type=int)
    ap.add_argument('--num-workers', type=int)
    ap.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    ap.add_argument('--no-progress', action='store_true')
    ap.add_argument('--restart', action='store_true',
                    help='delete the partial predictions of an interrupted run in --work-dir (of the selected '
                         'benchmarks) and evaluate them from scratch, instead of resuming')
    ap.add_argument('--cfg-options', nargs='+', action=_DictAction, default={},
                    help='override config values, key=value (as xtuner train)')
    return ap.parse_args(argv)


class _DictAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        from mmengine.config import DictAction
        DictAction(self.option_strings, self.dest)(parser, namespace, values, option_string)


def build_from_checkpoint(cfg, checkpoint):
    """The config's model with the checkpoint's trained parts (every adapter key required)."""
    from xtuner.registry import BUILDER
    model_cfg = cfg.model
    model_cfg.update(pretrained_pth=None, use_activation_checkpointing=False)
    model = BUILDER.build(model_cfg)
    model.load_pretrained(checkpoint)
    return model


def _on_rank0(fn):
    """fn() on rank 0, its result broadcast to every rank (the digest reads every weight byte once, not once
    per rank; all ranks must compare the same fingerprint)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return fn()
    box = [fn() if torch.distributed.get_rank() == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def main(argv=None):
    args = parse_args(argv)
    import mg_llava.compat  # noqa: F401 - CPU shims before mmengine runs
    from mmengine.config import Config

    from mg_llava.evaluation.entries import check_entries
    from mg_llava.evaluation.loop import DTYPES, run_evaluation
    from mg_llava.evaluation.resume import ResumeError, export_digest, state_dict_digest
    from mg_llava.inference.sharding import init_distributed, rank_and_world
    from mg_llava.models import MGLLaVAModel

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    ev = dict(cfg.get('evaluation') or {})
    benchmarks = [dict(b) for b in ev.get('benchmarks', [])]
    if args.benchmarks:
        wanted = args.benchmarks.split(',')
        unknown = sorted(set(wanted) - {b.get('name', b['benchmark']) for b in benchmarks})
        if unknown:
            sys.exit(f'{args.config}: no benchmark entry named {unknown} in `evaluation.benchmarks`')
        benchmarks = [b for b in benchmarks if b.get('name', b['benchmark']) in wanted]
    if not benchmarks:
        print(f'{args.config}: `evaluation.benchmarks` is empty; nothing to evaluate')
        return 0
    try:  # keys and files of every entry, before the (slow) model build
        check_entries(benchmarks, args.config)
    except ValueError as e:
        sys.exit(str(e))
    init_distributed(args.launcher)
    rank, world = rank_and_world()
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype or ev.get('dtype', 'bf16')]
    device = torch.device(f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu')

    if args.export:
        model = MGLLaVAModel.from_pretrained(args.export, torch_dtype=dtype)
        source = osp.abspath(args.export)
        # the folder's files (from_pretrained keeps no LLM weights in state_dict())
        digest = _on_rank0(lambda: export_digest(args.export))
    else:
        model = build_from_checkpoint(cfg, args.checkpoint)
        source = osp.abspath(args.checkpoint)
        digest = _on_rank0(lambda: state_dict_digest(model.state_dict()))  # the trained parts, on the CPU still
    kind = 'export' if args.export else 'checkpoint'
    provenance = {'model': {kind: source, 'digest': digest}, 'config': osp.abspath(args.config)}
    model = model.to(device=device, dtype=dtype).eval()
    work_dir = args.work_dir or osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0], 'eval')
    header = {'config': osp.abspath(args.config), kind: source, 'model_digest': digest,
              'llm': str(model.config.to_dict()['llm'] or type(model.llm).__name__),
              'dtype': str(dtype).replace('torch.', ''), 'ranks': world,
              'batch_size': args.batch_size or ev.get('batch_size', 8),
              'date': time.strftime('%Y-%m-%d %H:%M:%S')}
    num_workers = args.num_workers if args.num_workers is not None else ev.get('num_workers', 0)
    try:
        rows = run_evaluation(model, model.vision_spec, benchmarks, work_dir, header=header,
                              batch_size=args.batch_size or ev.get('batch_size', 8),
                              max_new_tokens=args.max_new_tokens or ev.get('max_new_tokens'),
                              num_workers=num_workers,
                              system=ev.get('system', ''), progress=not args.no_progress,
                              generation_kwargs=dict(ev.get('generation_kwargs') or {}),
                              provenance=provenance, restart=args.restart)
    except ResumeError as e:  # every rank refuses alike (same files, same fingerprint)
        sys.exit(f'{args.config}: {e}')
    if rank == 0:
        with open(osp.join(work_dir, 'summary.md')) as f:
            print(f.read(), end='')
        print(f'evaluated {len(rows)} benchmark(s); results in {work_dir}')
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == '__main__':
    sys.exit(main())
