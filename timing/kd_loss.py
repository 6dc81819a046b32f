"""KD loss peak memory and time: chunked selected-position KD vs the reference formulation (spec §5.4).

    python timing/kd_loss.py --small [--threads 1]            # CPU, seconds: reduced sizes
    python timing/kd_loss.py --full [--device cuda] [--reference-batch 1] [--chunk-size 1024 256]

Both formulations compute the same loss, the reference's CE with teacher soft targets ('forward_kl_ce', over the
positions whose next token is supervised), forward + backward (gradients into the student's hidden states and
LM head; the teacher under no_grad):
  chunked    `mg_llava.models.losses.kd_loss`: heads only at the N supervised positions, `chunk_size` rows
             at a time, each chunk checkpointed;
  reference  the reference's formulation: fp32 logits of both heads at every position [B, L, V], sliced to V,
             softmax, log_softmax, product, -inf guard, masked token mean (with the shifted mask, so that both
             compute the same number; the reference's own mask is off by one).
Full size: V 151936 (teacher head 152064 rows, as Qwen2-7B's, sliced to 151936), B 8 x L 2600, H_s 896, H_t 3584,
the last 25 % of each sequence supervised (N = 5200), fp32 heads on CPU / bf16 on CUDA.

Memory, excluding the inputs and the heads' weights, which both formulations share:
  CUDA: torch.cuda.max_memory_allocated() during forward + backward minus memory_allocated() before.
  CPU:  the peak of the summed sizes of all tensor storages created during forward + backward and still alive,
        counted by a TorchDispatchMode that sees every aten op's outputs (views and in-place results share their
        input's storage and count nothing) and a weakref finalizer per storage: the CPU analogue of
        max_memory_allocated (buffers private to one kernel are not seen). With --full the process's peak RSS
        growth over one more run is printed as a cross-check (Linux /proc/self/clear_refs + VmHWM); at --small
        sizes glibc serves the tensors from its heap, whose reuse makes RSS meaningless, so it is not shown.
At full size the reference needs tens of GB: `--reference-batch b` runs it on the first b samples only and
extrapolates linearly to B: time x B/b; memory G + (peak - G) x B/b, where G, the gradients of the student's hidden
states and head, does not depend on b (every other large tensor of it is [b, L, V]). The loss comparison then uses
the chunked loss of the same b samples. Goal (issue 9): chunked peak memory <= 1/10 of the reference at
equal loss (1e-5 relative). Prints a table and one `summary key=value ...` line.
"""
import argparse
import statistics
import time
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mg_llava.models.losses import kd_loss, response_positions

SIZES = dict(
    small=dict(batch=4, seq=512, vocab=4096, teacher_extra_vocab=64, hs=64, ht=128, chunk=[128, 32], repeat=2),
    full=dict(batch=8, seq=2600, vocab=151936, teacher_extra_vocab=128, hs=896, ht=3584, chunk=[1024], repeat=1))
MiB = 2 ** 20


class LiveTensorBytes(TorchDispatchMode):
    """Peak total bytes of the tensor storages created while active and alive at the same time."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen = weakref.WeakKeyDictionary()    # storage -> nbytes; a storage is counted once (views, in-place)

    def _free(self, nbytes):
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # an output sharing an input's storage (a view, an in-place op) allocated nothing: the storage either
        # existed before (weights, inputs: not counted) or was counted when created
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if st not in self._seen and st.data_ptr() not in inputs:
                    n = st.nbytes()
                    self._seen[st] = n
                    weakref.finalize(st, self._free, n)
                    self.live += n
                    self.peak = max(self.peak, self.live)
        return out


def _rss_peak_reset():
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')            # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _rss_kib(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    return None


def reference_kd(s_hidden, t_hidden, s_head, t_head, labels, vocab):
    """The reference's formulation (spec §5.4) with the shifted mask: full [B, L, V] fp32 tensors."""
    with torch.no_grad():
        logits_t = t_head(t_hidden).float()                      # [B, L, V_T]
    logits_s = s_head(s_hidden).float()                          # [B, L, V_S]
    p_t = F.softmax(logits_t[..., :vocab], dim=-1)
    logp_s = F.log_softmax(logits_s[..., :vocab], dim=-1)
    inf_mask = torch.isinf(logits_s[..., :vocab])
    prod = torch.masked_fill(p_t * logp_s, inf_mask, 0)
    x = prod.sum(-1)[:, :-1].reshape(-1)                         # position t predicts token t+1
    mask = (labels[:, 1:] != -100).reshape(-1).to(x.dtype)
    return -(x * mask).sum() / mask.sum()


def measure(fn, params, device, repeat, warmup, rss=False):
    """fn() -> loss; runs forward + backward. Returns (loss value, median ms, peak bytes, peak RSS growth bytes)."""
    def step():
        for p in params:
            p.grad = None
        loss = fn()
        loss.backward()
        return loss.detach()

    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    rss_growth = None
    if device.type == 'cuda':
        for p in params:
            p.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        for p in params:
            p.grad = None
        if rss and _rss_peak_reset():
            before = _rss_kib('VmRSS')
            step()
            rss_growth = (_rss_kib('VmHWM') - before) * 1024
        for p in params:
            p.grad = None
        with LiveTensorBytes() as tracker:
            step()
        peak = tracker.peak
    return loss.item(), statistics.median(times), peak, rss_growth


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument('--small', action='store_true', help='reduced sizes, seconds on CPU')
    mode.add_argument('--full', action='store_true',
                      help='V 151936, B 8 x L 2600, H 896/3584 (tens of GB for the reference)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--dtype', choices=['float32', 'bfloat16'],
                    help='heads and hidden states; default fp32 on CPU, bf16 on CUDA')
    ap.add_argument('--chunk-size', type=int, nargs='+', help='chunked KD chunk sizes; the first one is compared')
    ap.add_argument('--reference-batch', type=int,
                    help='run the reference on this many samples and extrapolate linearly to the batch')
    ap.add_argument('--repeat', type=int, help='timed runs (median)')
    ap.add_argument('--threads', type=int, help='CPU threads (torch.set_num_threads); default torch\'s own')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = SIZES['small' if args.small else 'full']
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ('bfloat16' if device.type == 'cuda' else 'float32'))
    chunks = args.chunk_size or cfg['chunk']
    repeat = args.repeat or cfg['repeat']
    b, length, vocab = cfg['batch'], cfg['seq'], cfg['vocab']
    ref_b = args.reference_batch or b
    if not 1 <= ref_b <= b:
        raise SystemExit(f'--reference-batch must be in [1, {b}]')

    torch.manual_seed(args.seed)
    s_head = nn.Linear(cfg['hs'], vocab, bias=False).to(device, dtype)
    t_head = nn.Linear(cfg['ht'], vocab + cfg['teacher_extra_vocab'], bias=False).to(device, dtype)
    t_head.requires_grad_(False)
    with torch.no_grad():           # logits of a trained-model scale (std ~2-3), not the near-uniform default init
        s_head.weight.normal_(0, 2.0 / cfg['hs'] ** 0.5)
        t_head.weight.normal_(0, 3.0 / cfg['ht'] ** 0.5)
    s_hidden = torch.randn(b, length, cfg['hs'], device=device, dtype=dtype, requires_grad=True)
    t_hidden = torch.randn(b, length, cfg['ht'], device=device, dtype=dtype)
    labels = torch.full((b, length), -100, dtype=torch.long, device=device)
    sup = length // 4                   # the answer: the last quarter of each sequence (after image + prompt tokens)
    labels[:, length - sup:] = torch.randint(0, vocab, (b, sup), device=device)
    pos = response_positions(labels)
    params = [s_hidden, s_head.weight]
    warmup = 1 if args.small else 0

    rows = []
    for c in chunks:
        loss, ms, peak, rss = measure(lambda: kd_loss(s_hidden, t_hidden, s_head, t_head, pos, kind='forward_kl_ce',
                                                      chunk_size=c), params, device, repeat, warmup, args.full)
        rows.append((f'chunked selected-position (chunk {c})', b, peak, rss, ms, loss))
    chunk_peak, chunk_ms = rows[0][2], rows[0][4]

    sub = slice(0, ref_b)
    ref_loss, ref_ms, ref_peak, ref_rss = measure(
        lambda: reference_kd(s_hidden[sub], t_hidden[sub], s_head, t_head, labels[sub], vocab),
        params, device, repeat, warmup, args.full)
    rows.append(('reference (full-vocab fp32 logits)', ref_b, ref_peak, ref_rss, ref_ms, ref_loss))
    scale = b / ref_b
    ref_peak_b = ref_peak
    if ref_b < b:
        # the gradients of the student's hidden states (full batch: s_hidden[:b] back-propagates into all of it)
        # and head do not grow with the reference's batch; everything else is [b, L, V]
        fixed = (s_hidden.numel() + s_head.weight.numel()) * s_hidden.element_size()

        def extrapolate(x):
            return None if x is None else fixed + (x - fixed) * scale
        ref_peak_b = extrapolate(ref_peak)
        rows.append((f'reference, extrapolated to batch {b}', b, ref_peak_b, extrapolate(ref_rss), ref_ms * scale,
                     None))
        with torch.no_grad():   # the chunked loss of the same samples, for the equal-loss check
            cmp_loss = kd_loss(s_hidden[sub], t_hidden[sub], s_head, t_head, response_positions(labels[sub]),
                               kind='forward_kl_ce', chunk_size=chunks[0]).item()
    else:
        cmp_loss = rows[0][5]

    n_sup = pos.numel()
    print(f'KD loss (forward_kl_ce), forward + backward, {device.type} ({torch.get_num_threads()} threads), '
          f'{str(dtype).replace("torch.", "")}: '
          f'B {b} x L {length}, V {vocab} (teacher head {vocab + cfg["teacher_extra_vocab"]}), H_s {cfg["hs"]}, '
          f'H_t {cfg["ht"]}, {n_sup} supervised positions ({100 * n_sup / (b * (length - 1)):.0f} %)')
    kind = ('torch.cuda.max_memory_allocated' if device.type == 'cuda'
            else 'live tensor storages created during the step (TorchDispatchMode tracker)')
    print(f'peak memory: {kind}; inputs and weights excluded. One chunk of fp32 logits = chunk x V x 4 B '
          f'({chunks[0] * vocab * 4 / MiB:.1f} MiB at chunk {chunks[0]}).')
    print(f'| {"formulation":<42} | batch | peak MiB | peak RSS growth MiB | ms (median of {repeat}) | loss |')
    print(f'|{"-" * 44}|-------|----------|---------------------|------------|------|')
    for name, bb, peak, rss, ms, loss in rows:
        rss_s = f'{rss / MiB:.1f}' if rss is not None else '-'
        loss_s = f'{loss:.8f}' if loss is not None else '-'
        print(f'| {name:<42} | {bb:>5} | {peak / MiB:>8.1f} | {rss_s:>19} | {ms:>10.1f} | {loss_s} |')
    ratio = chunk_peak / ref_peak_b
    rel = abs(cmp_loss - ref_loss) / abs(ref_loss)
    ok = ratio <= 0.1 and rel <= 1e-5
    print(f'summary memory_ratio={ratio:.4f} loss_rel_diff={rel:.2e} speedup={ref_ms * scale / chunk_ms:.2f} '
          f'chunk_units={chunk_peak / (chunks[0] * vocab * 4):.2f} goal_met={"yes" if ok else "no"}')


if __name__ == '__main__':
    main()
