#!/usr/bin/env python
"""Training throughput on a LLaVA-665K-like length mix: padded batches vs packed rows (mg_llava.data.packing).

The mix: the ten sources of LLaVA-1.5's 665K instruction set with their sizes (LLaVA-1.5 paper, Table 7), each
with a range of text tokens (prompt template + all turns, Llama tokenizer) drawn log-uniformly. The ranges are OUR
ESTIMATES from the sources' formats (short-answer VQA merged per image, multi-turn LLaVA-Instruct, ShareGPT
conversations cut at 2048): the data is not available offline, so they are assumptions, not measurements. ShareGPT
is text-only (40K / 665K = 6 %: no image tokens, no towers); every other sample adds T image tokens + K object
tokens. The tiny variant divides text lengths by 8 (T = 16, K = 3).

  padded   the samples in a seeded random order (DefaultSampler), --batch-size per step, each padded to the
           longest of its batch
  grouped  the same, batches of similar lengths (xtuner's LengthGroupedSampler: sorted within mega-batches)
  packed   pack_indices over the same samples, rows of --max-packed-length tokens, --rows rows per step
Every mode trains on the same samples (forward, backward, AdamW; train_step.py's step) and reports samples/s,
tokens/s (real tokens) and the useful-token fraction (real tokens / rows x row length processed).

  python timing/length_mix.py --tiny        # CPU, tiny random model (seconds)
  python timing/length_mix.py               # CUDA: workload B's model (Qwen2-1.5B-size LLM trained), 256 samples
One JSON line per mode on stdout; logs on stderr.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

_STDOUT, sys.stdout = sys.stdout, sys.stderr  # library chatter must not pollute the JSON on stdout

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import WORKLOADS, build_model, pin, train_one_step  # noqa: E402
from xtuner.utils import IGNORE_INDEX, IMAGE_TOKEN_INDEX  # noqa: E402

from mg_llava.data import mg_llava_collate_fn  # noqa: E402
from mg_llava.data.packing import pack_indices, packing_stats  # noqa: E402

# source: (samples in LLaVA-1.5's mix, text tokens lo, hi, has image)
LLAVA665K = {
    'llava_instruct': (158_000, 120, 1000, True),   # conversation / detail / reasoning, multi-turn
    'sharegpt': (40_000, 150, 2048, False),        # text-only, cut at max_length
    'vqav2': (83_000, 60, 600, True),              # several short-answer questions merged per image
    'gqa': (72_000, 60, 700, True),
    'okvqa': (9_000, 40, 200, True),
    'ocrvqa': (80_000, 80, 400, True),
    'aokvqa': (66_000, 50, 300, True),             # multiple choice
    'textcaps': (22_000, 40, 120, True),
    'refcoco': (48_000, 100, 600, True),           # region <-> expression, several per image
    'vg': (86_000, 100, 600, True),
}
# The tiny run's LLM is bigger than train_step.py's tiny one so that, as at real sizes, the LLM and not the towers
# does most of the work (the towers cost the same padded or packed).
TINY = dict(WORKLOADS['tiny'], llm=(WORKLOADS['tiny']['llm'][0], dict(hidden_size=256, num_hidden_layers=4,
                                                                       num_attention_heads=4, intermediate_size=688,
                                                                       vocab_size=1000)))
# A packed step's rows x row length equals the padded step's worst case (8 samples x the longest), so both
# modes may use the same activation memory.
SETTINGS = {  # workload, samples, padded batch, packed row length, rows per packed step, text scale
    'tiny': dict(workload=TINY, samples=256, batch_size=8, max_packed_length=256, rows=8, scale=1 / 8),
    'B': dict(workload=WORKLOADS['B'], samples=256, batch_size=8, max_packed_length=4096, rows=2, scale=1.0),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def draw_lengths(n, scale=1.0, seed=0):
    """-> [(text tokens, has image)] for n samples drawn from LLAVA665K's sources by their sizes."""
    g = torch.Generator().manual_seed(seed)
    names = list(LLAVA665K)
    weights = torch.tensor([LLAVA665K[k][0] for k in names], dtype=torch.float64)
    picks = torch.multinomial(weights, n, replacement=True, generator=g).tolist()
    out = []
    for p in picks:
        _, lo, hi, image = LLAVA665K[names[p]]
        u = torch.rand((), generator=g, dtype=torch.float64).item()
        text = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        out.append((max(8, int(text * scale)), image))
    return out


def make_sample(k, text, image, w, T, vocab):
    """One sample as MGLLaVADataset yields it: <image> after 5 text tokens, the last 40 % of the text supervised."""
    g = torch.Generator().manual_seed(1000 + k)
    ids = torch.randint(3, vocab, (text,), generator=g)
    K = w['boxes'] if image else 0
    if image:
        ids = torch.cat([ids[:5], torch.full((T + K,), IMAGE_TOKEN_INDEX), ids[5:]])
    labels = torch.full_like(ids, IGNORE_INDEX)
    n_sup = max(1, int(0.4 * text))
    labels[-n_sup:] = ids[-n_sup:]
    sample = dict(id=f's{k}', input_ids=ids, labels=labels)
    if image:
        S, s = w['aux_size'], w['clip']['image_size']
        wh = torch.full((K, 2), S / 8.0)
        xy = torch.rand(K, 2, generator=g) * (S - wh)
        sample.update(pixel_values=torch.randn(3, s, s, generator=g), pixel_values_aux=torch.randn(3, S, S, generator=g),
                      boxes=torch.cat([xy, xy + wh], 1), num_image_tokens=T)
    return sample


def batches(mode, lengths, cfg, seed=0):
    """-> list of batches, each a list of sample indices (padded/grouped) or of packs (packed)."""
    n, bs = len(lengths), cfg['batch_size']
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    if mode == 'padded':
        return [order[i:i + bs] for i in range(0, n, bs)]
    if mode == 'grouped':  # mega-batches of 8 batches, sorted by length inside (LengthGroupedSampler's idea)
        mega = bs * 8
        out = []
        for i in range(0, n, mega):
            chunk = sorted(order[i:i + mega], key=lambda j: -lengths[j])
            out += [chunk[k:k + bs] for k in range(0, len(chunk), bs)]
        return out
    packs = pack_indices(lengths, cfg['max_packed_length'])
    packs = [packs[i] for i in torch.randperm(len(packs), generator=torch.Generator().manual_seed(seed)).tolist()]
    return [packs[i:i + cfg['rows']] for i in range(0, len(packs), cfg['rows'])]


def run_mode(mode, model, samples, lengths, cfg, dev, amp, opt, params):
    plan = batches(mode, lengths, cfg)
    cuda = dev.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    real = processed = 0
    times = []
    for b, group in enumerate([plan[0]] + plan):  # the first batch once more, untimed: warm-up
        rows = [[samples[i] for i in p] for p in group] if mode == 'packed' else [samples[i] for i in group]
        batch = mg_llava_collate_fn(rows)
        batch = pin(batch) if cuda else batch
        sync()
        t = time.perf_counter()
        loss = train_one_step(model, batch, amp, params, opt)
        sync()
        if b == 0:
            continue
        times.append(time.perf_counter() - t)
        mask = batch['data']['attention_mask']
        real += int(mask.sum())
        processed += mask.numel()
        assert math.isfinite(loss.item())
    total = sum(times)
    n = len(samples)
    return dict(mode=mode, steps=len(plan), samples=n, seconds=round(total, 3), samples_per_s=round(n / total, 3),
                tokens_per_s=round(real / total, 1), useful_token_fraction=round(real / processed, 4),
                median_step_s=round(statistics.median(times), 4))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tiny', action='store_true', help='tiny model on CPU (the suite runs this)')
    p.add_argument('--samples', type=int)
    p.add_argument('--modes', nargs='+', default=['padded', 'grouped', 'packed'])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, help='CPU threads (default: torch default)')
    args = p.parse_args(argv)
    cfg = dict(SETTINGS['tiny' if args.tiny or args.device == 'cpu' else 'B'])
    if args.samples:
        cfg['samples'] = args.samples
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    w = dict(cfg['workload'])
    margs = argparse.Namespace(liger=False, activation_checkpointing=False, object_pooling='exact', compile=False,
                               adapter_dtype='fp32')
    model, _ = build_model(w, margs, dev)
    T, vocab = model.num_image_tokens, model.llm.config.vocab_size
    drawn = draw_lengths(cfg['samples'], cfg['scale'])
    samples = [make_sample(k, text, image, w, T, vocab) for k, (text, image) in enumerate(drawn)]
    lengths = [len(s['input_ids']) for s in samples]
    stats = packing_stats(lengths, pack_indices(lengths, cfg['max_packed_length']), cfg['max_packed_length'])
    log(f'{len(samples)} samples, {min(lengths)}-{max(lengths)} tokens (median {statistics.median(lengths)}), '
        f'{sum(not im for _, im in drawn)} text-only; packed fill {stats["fill"]:.3f}')
    params = [q for q in model.parameters() if q.requires_grad]
    cuda = dev.type == 'cuda'
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda)
    results = []
    for mode in args.modes:
        opt = torch.optim.AdamW(params, lr=1e-5, fused=cuda)
        r = run_mode(mode, model, samples, lengths, cfg, dev, amp, opt, params)
        r.update(device=torch.cuda.get_device_name(dev) if cuda else 'cpu', workload='B' if cuda else 'tiny',
                 batch_size=cfg['batch_size'], max_packed_length=cfg['max_packed_length'], rows=cfg['rows'],
                 text_scale=cfg['scale'], threads=torch.get_num_threads())
        results.append(r)
        log(f'[{mode}] {r["samples_per_s"]} samples/s, {r["tokens_per_s"]} tokens/s, useful '
            f'{r["useful_token_fraction"]}')
    base = next((r for r in results if r['mode'] == 'padded'), None)
    for r in results:
        if base:
            r['tokens_per_s_vs_padded'] = round(r['tokens_per_s'] / base['tokens_per_s'], 3)
            r['useful_fraction_vs_padded'] = round(r['useful_token_fraction'] / base['useful_token_fraction'], 3)
        _STDOUT.write(json.dumps(r) + '\n')
    _STDOUT.flush()


if __name__ == '__main__':
    main()
