"""Batched greedy evaluation over benchmarks (driven by `tools/test.py`).

    benchmark files -> questions (questions.py) -> prompt samples (mg_llava.inference.prompt: the training
    preprocessing, left-padded batches, built in DataLoader workers) -> mg_llava.inference.generation.generate
    -> predictions jsonl -> scores (score.py) -> summary.md / summary.csv

Batches are formed once over all questions of a benchmark (sorted by prompt length, so little padding) and
dealt to ranks round robin. Every batch, hence every prediction, is therefore the same whatever the number
of ranks; rank 0 gathers, writes and scores. Torch lives here, not in the stdlib-only scorer modules.

Finished batches are appended to per-rank partial files (`resume.partial_output`, the sharded writer of
mg_llava.inference); a rerun resumes from them only when they were made by the same model, entry and settings
(`resume`: fingerprint in <name>_predictions.partial.meta.json), and the summary says how many answers each
benchmark took from the interrupted run.
"""
import csv
import json
import os
import os.path as osp
import time
from collections import OrderedDict

import torch
from torch.utils.data import DataLoader, Dataset

from mg_llava.data import DataError, VisionSpec, load_box_index
from mg_llava.data.dataset import as_template
from mg_llava.inference.generation import generate
from mg_llava.inference.prompt import NO_DETECTIONS, build_prompt_sample, collate_prompts
from mg_llava.inference.sharding import barrier, gather, rank_and_world, shard

from . import benchmarks as B
from . import questions as Q
from . import resume as R
from . import score as S
from .entries import ENTRY_KEYS, FOLDER_IMAGES, NEEDS_ANNOTATIONS, check_entry  # noqa: F401 - the old home
from .submission import write_outputs

DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}


class SampleBuilder:
    """question dict (questions.py) -> collate-ready prompt sample, with the training preprocessing.

    boxes: {box_key: entry} of the benchmark's box file, or None. A model with object tokens and no box file
    gets the training fallback for "no detections" (one empty box); a box file that lacks a question's key is
    an error naming both.
    """

    def __init__(self, model, spec, boxes=None, box_file=None, system=''):
        self.tokenizer, self.template = model.tokenizer, as_template(model.template)
        self.spec, self.num_image_tokens, self.system = spec, model.num_image_tokens, system
        self.use_boxes = model.bbox_projector is not None and bool(spec.image_size_aux)
        self.boxes, self.box_file = boxes, box_file

    def box_entry(self, q):
        if not self.use_boxes:
            return None
        if self.boxes is None:
            return NO_DETECTIONS
        entry = self.boxes.get(str(q['box_key']))
        if entry is None:
            raise DataError(self.box_file, f'id {q["box_key"]!r}', f'no box entry for question {q["id"]!r} '
                            f'({q.get("where", "")})')
        return entry

    def __call__(self, q):
        image = Q.open_image(q)  # None: a text-only question, no image tokens at all (and no box entry)
        return build_prompt_sample(q['text'], image, self.tokenizer, self.template, self.spec,
                                   self.num_image_tokens, box_entry=None if image is None else self.box_entry(q),
                                   system=self.system, sample_id=q['id'])


class _Batches(Dataset):
    """Item i = batch i, collated left-padded (image decoding and preprocessing run in the workers) by
    collate_prompts, or by `build.collate` (a transformers-native judge's processor, datagen.hf_judge)."""

    def __init__(self, batches, build, tokenizer):
        self.batches, self.build, self.tokenizer = batches, build, tokenizer
        self.collate = getattr(build, 'collate', collate_prompts)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.collate([self.build(q) for q in self.batches[i]], self.tokenizer)


def make_batches(questions, tokenizer, batch_size):
    """Fixed batches over all questions: longest prompts first (padding stays small, OOM shows up at once).
    Sorting is stable, so ties keep file order and the batches are deterministic."""
    lengths = [len(tokenizer.encode(q['text'], add_special_tokens=False)) + (q['image'] is not None)
               for q in questions]
    order = sorted(range(len(questions)), key=lambda i: -lengths[i])
    return [[questions[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]


def _read_partial(out_dir, name):
    """{id: prediction} from every rank's partial file of an interrupted run (a cut-off last line is ignored)."""
    return R.read_partial(out_dir, name)


def predict(model, questions, build, batch_size=8, max_new_tokens=None, num_workers=0, desc='', progress=True,
            generation_kwargs=None, partial=None, stats=None, step=None):
    """Predictions {id: text} for this rank's share of `questions` (all of them on 1 rank).
    generation_kwargs: extra `llm.generate` arguments (greedy by default), or a callable(batch) -> them (per-row
    seeded sampling needs the batch's ids).
    partial: (out_dir, name) to append each finished batch to <name>_predictions.partial.rank<r>.jsonl and to
    skip batches an interrupted run already answered (batches are fixed, so their answers are the same). The
    caller vouches that those files come from the same model and settings (`resume.prepare`).
    stats: a dict that receives 'resumed' (answers of this rank taken from the partial files).
    step: callable(model, batch) -> one JSON value per row, instead of generating (the Genixer judge's P(Yes))."""
    rank, world = rank_and_world()
    done = _read_partial(*partial) if partial else {}
    batches = shard(make_batches(questions, model.tokenizer, batch_size), rank, world)
    preds = {q['id']: done[q['id']] for b in batches if all(q['id'] in done for q in b) for q in b}
    batches = [b for b in batches if not all(q['id'] in done for q in b)]
    if stats is not None:
        stats['resumed'] = len(preds)
    loader = DataLoader(_Batches(batches, build, model.tokenizer), batch_size=None, shuffle=False,
                        num_workers=num_workers)
    sink = R.partial_output(*partial).appender(rank) if partial else None  # cuts a torn last line off first
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=len(batches), desc=desc, unit='batch', dynamic_ncols=True)
    try:
        for data in loader:
            if step is not None:
                answers = step(model, data)
            else:
                kwargs = generation_kwargs(data) if callable(generation_kwargs) else generation_kwargs
                answers = generate(model, data, max_new_tokens, **(kwargs or {}))
            preds.update(zip(data['ids'], answers))
            if sink is not None:  # the batch's answers as one flushed write
                sink.write_many({'id': i, 'prediction': a} for i, a in zip(data['ids'], answers))
            if bar is not None:
                bar.update(1)
    finally:
        if sink is not None:
            sink.close()
        if bar is not None:
            bar.close()
    return preds


def gather_predictions(local):
    """Merge every rank's {id: text} on every rank (no-op on one process)."""
    parts = gather(local)
    if len(parts) == 1:
        return local
    merged = {}
    for p in parts:
        merged.update(p)
    return merged


def headline(benchmark, result):
    """The numbers a summary row shows (the benchmark's `headline_keys`; all of it goes to *_scores.json)."""
    keys = B.get(benchmark).headline_keys
    return OrderedDict((k, result[k]) for k in keys if k in result)


def model_provenance(model):
    """Provenance of an in-memory model when the caller gives none (API use): the digest of its trained
    parameters (MGLLaVAModel.state_dict() holds only those). tools/test.py passes the export/checkpoint too."""
    return {'model': {'model': '', 'digest': R.state_dict_digest(model.state_dict())}}


def generation_settings(model, batch_size, max_new_tokens=None, generation_kwargs=None, system=''):
    """The settings that change answers (batch_size: which questions share a batch, hence the padding)."""
    return dict(dtype=str(next(model.llm.parameters()).dtype).replace('torch.', ''), batch_size=batch_size,
                max_new_tokens=getattr(model, 'max_new_tokens', None) if max_new_tokens is None else max_new_tokens,
                generation_kwargs=dict(generation_kwargs or {}), system=system)


def _barrier():
    barrier()


def _sum_over_ranks(n):
    return sum(gather(n))


def evaluate_benchmark(model, spec, bench, out_dir, batch_size=8, max_new_tokens=None, num_workers=0,
                       system='', progress=True, generation_kwargs=None, provenance=None, restart=False):
    """Run one benchmark entry dict(name, benchmark, data, image_folder=None, annotations=None, box_file=None,
    test_questions=None (vqav2: the full test2015 jsonl, so the submission lists every id)).
    provenance: {'model': {'export'|'checkpoint': path, 'digest'}, 'config': path} (default: the digest of the
    model's trained parameters); partial files of an interrupted run are resumed only when they were made with
    the same provenance, entry and settings, else ResumeError; restart=True deletes them first.
    On rank 0 writes <name>_predictions.jsonl (+ official submission files, <name>_scores.json) and returns
    the scorer's result dict plus n_questions, resumed, generated, seconds (None on other ranks)."""
    bench = dict(bench)
    check_entry(bench)
    kind = bench['benchmark']
    name = bench.get('name', kind)
    rank = rank_and_world()[0]
    questions = Q.load_questions(kind, bench['data'], bench.get('image_folder'), bench.get('annotations'))
    box_file = bench.get('box_file')
    boxes = load_box_index(box_file) if box_file and model.bbox_projector is not None else None
    build = SampleBuilder(model, spec, boxes, box_file, system)
    fp = R.fingerprint(name, provenance or model_provenance(model), bench,
                       generation_settings(model, batch_size, max_new_tokens, generation_kwargs, system))
    state = R.prepare(out_dir, name, fp, restart, rank)  # raises on partial files made differently
    _barrier()  # rank 0's restart deletions are done before any rank reads partial files
    if state == 'resume' and rank == 0:
        print(f'{name}: resuming an interrupted run in {out_dir}: {len(_read_partial(out_dir, name))} answers '
              f'kept from its partial files (same model {R.describe_model(fp["model"])}, entry and settings)',
              flush=True)
    t0, stats = time.time(), {}
    local = predict(model, questions, build, batch_size, max_new_tokens, num_workers, desc=name, progress=progress,
                    generation_kwargs=generation_kwargs, partial=(out_dir, name), stats=stats)
    preds = gather_predictions(local)
    resumed = _sum_over_ranks(stats['resumed'])
    seconds = time.time() - t0
    if rank != 0:
        return None
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, f'{name}_predictions.jsonl'), 'w') as f:
        for q in questions:
            f.write(json.dumps({'id': q['id'], 'prediction': preds[q['id']]}, ensure_ascii=False) + '\n')
    write_outputs(kind, questions, preds, out_dir, name, test_questions=bench.get('test_questions'))
    R.cleanup(out_dir, name)  # the final file holds them all now
    if resumed:
        print(f'{name}: {resumed} of {len(questions)} answers resumed from the interrupted run, '
              f'{len(questions) - resumed} generated now', flush=True)
    items = Q.score_data(kind, bench['data'], bench.get('annotations'))
    result = OrderedDict() if items is None else S.score_items(kind, items, preds)
    generated = len(questions) - resumed
    result.update(n_questions=len(questions), resumed=resumed, generated=generated,
                  model_digest=fp['model'].get('digest'), seconds=round(seconds, 2),
                  questions_per_s=round(generated / max(seconds, 1e-9), 2))  # of the questions generated now
    with open(osp.join(out_dir, f'{name}_scores.json'), 'w') as f:
        json.dump(result, f, indent=2)
    return result


def _answers_line(name, result):
    n, resumed = result['n_questions'], result['resumed']
    if not resumed:
        return f'- {name}: all {n} answers generated in this run'
    return (f'- {name}: resumed {resumed} of {n} answers from an interrupted run (same model digest '
            f'{R.short(result.get("model_digest"))}, entry and settings), {n - resumed} generated in this run')


def write_summary(rows, out_dir, header):
    """rows: [(name, benchmark, result)] -> summary.md and summary.csv (one line per headline metric, and per
    benchmark how many answers were resumed from an interrupted run vs generated in this run)."""
    no_metric = [('predictions only (no ground truth)', '')]
    table = [(name, kind, metric, value) for name, kind, result in rows
             for metric, value in (headline(kind, result).items() or no_metric)]
    with open(osp.join(out_dir, 'summary.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        for k, v in header.items():
            w.writerow([f'# {k}', v])
        w.writerow(['name', 'benchmark', 'metric', 'value'])
        w.writerows([(n, k, m, f'{v:.2f}' if isinstance(v, float) else v) for n, k, m, v in table])
        w.writerows([(n, k, f'answers_{m}', result[m]) for n, k, result in rows if 'resumed' in result
                     for m in ('resumed', 'generated')])
    lines = ['# Evaluation summary', ''] + [f'- {k}: `{v}`' for k, v in header.items()] + [
        '', '| name | benchmark | metric | value |', '|---|---|---|---|']
    lines += [f'| {n} | {k} | {m} | {v:.2f} |' if isinstance(v, float) else f'| {n} | {k} | {m} | {v} |'
              for n, k, m, v in table]
    answers = [_answers_line(n, result) for n, _, result in rows if 'resumed' in result]
    if answers:
        lines += ['', '## Answers', ''] + answers
    text = '\n'.join(lines) + '\n'
    with open(osp.join(out_dir, 'summary.md'), 'w') as f:
        f.write(text)
    return text


def run_evaluation(model, spec, benchmarks, out_dir, header=None, batch_size=8, max_new_tokens=None,
                   num_workers=0, system='', progress=True, generation_kwargs=None, provenance=None, restart=False):
    """Every benchmark entry in turn; returns [(name, benchmark, result)] on rank 0 (None elsewhere).
    provenance / restart: see evaluate_benchmark. Every benchmark's partial files are checked before the first
    one runs, so one ResumeError lists every refused benchmark and nothing is generated."""
    spec = spec if isinstance(spec, VisionSpec) else VisionSpec(**dict(spec or {}))
    provenance = provenance or model_provenance(model)
    header = dict(header or {})
    header.setdefault('model_digest', provenance['model'].get('digest'))
    settings = generation_settings(model, batch_size, max_new_tokens, generation_kwargs, system)
    refused = []
    for bench in benchmarks:
        name = bench.get('name', bench['benchmark'])
        try:
            R.check(out_dir, name, R.fingerprint(name, provenance, bench, settings), restart)
        except R.ResumeError as e:
            refused.append(str(e))
    if refused:
        raise R.ResumeError('\n'.join(refused))
    rows = []
    for bench in benchmarks:
        result = evaluate_benchmark(model, spec, bench, out_dir, batch_size, max_new_tokens, num_workers,
                                    system, progress, generation_kwargs, provenance, restart)
        if result is not None:
            rows.append((bench.get('name', bench['benchmark']), bench['benchmark'], result))
            write_summary(rows, out_dir, header)  # after each benchmark: a later crash keeps the table
    if rank_and_world()[0] != 0:
        return None
    write_summary(rows, out_dir, header)
    return rows
