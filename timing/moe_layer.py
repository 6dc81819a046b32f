#!/usr/bin/env python
"""MoE layer forward+backward: grouped SparseMoEBlock vs the dense FFN it came from and two references.

  dense FFN          the Qwen2 SwiGLU MLP the experts are copied from, on all S tokens
  moe grouped        mg_llava.models.moe.SparseMoEBlock (sort tokens per expert, one matmul chain per expert)
  moe one-hot einsum DeepSpeed-style (S, E, C) dispatch/combine einsums, experts on full capacity buffers
  moe per-token      Python loop over tokens (timed on --naive-tokens tokens, scaled linearly to S)

E=4, top-2, capacity factor 1.5 (train mode), S = 8 x 2048 tokens, random input and output gradient; the router
gets the aux loss too. Sizes: 0.5b (H 896, I 4864) and 1.5b (H 1536, I 8960), the Qwen2 FFN shapes.

  python timing/moe_layer.py --size 0.5b --device cuda     # bf16 on CUDA
  python timing/moe_layer.py --tiny                       # seconds on CPU, same code path
Prints a table: ms per fwd+bwd (median), ratio to the dense FFN and to the grouped MoE, max |y - y_grouped|.
"""
import argparse
import statistics
import time

import torch
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

from mg_llava.models.moe import MoEConfig, SparseMoEBlock
from mg_llava.models.moe_reference import onehot_forward, per_token_forward

SIZES = {'0.5b': (896, 4864), '1.5b': (1536, 8960)}


def timed(fn, device, warmup, iters):
    """-> (median ms of fn(), last output)."""
    ms, out = [], None
    for i in range(warmup + iters):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        if i >= warmup:
            ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', choices=sorted(SIZES), default='0.5b')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--tiny', action='store_true', help='H 64, I 128, S 2 x 64, CPU-sized')
    ap.add_argument('--tokens', type=int, default=8 * 2048)
    ap.add_argument('--naive-tokens', type=int, default=256, help='tokens the per-token loop is timed on')
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--iters', type=int, default=5)
    args = ap.parse_args()
    hidden, inter = SIZES[args.size]
    if args.tiny:
        hidden, inter, args.tokens, args.naive_tokens, args.warmup, args.iters = 64, 128, 128, 128, 1, 2
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    torch.manual_seed(0)
    dense = Qwen2MLP(Qwen2Config(hidden_size=hidden, intermediate_size=inter)).to(device, dtype)
    block = SparseMoEBlock(dense, hidden, MoEConfig(), layer_idx=0).to(device, dtype).train()
    with torch.no_grad():     # experts differ, as after some training
        for p in block.experts.parameters():
            p.mul_(1 + 0.1 * torch.randn_like(p))
    x = torch.randn(args.tokens, hidden, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn_like(x)

    def step(fwd, inp=x, g=grad):
        def run():
            x.grad = None
            block.zero_grad(set_to_none=True)
            dense.zero_grad(set_to_none=True)
            y, aux = fwd(inp)
            loss = (y.float() * g.float()).sum() + (aux if aux is not None else 0)
            loss.backward()
            return y.detach()
        return run

    n_naive = min(args.naive_tokens, args.tokens)
    rows = [('dense FFN', step(lambda v: (dense(v), None)), 1.0),
            ('moe grouped (ours)', step(lambda v: (block(v), block.aux_loss)), 1.0),
            ('moe one-hot einsum (DS)', step(lambda v: onehot_forward(block, v)), 1.0),
            (f'moe per-token loop (x{args.tokens / n_naive:g})',
             step(lambda v: per_token_forward(block, v), x[:n_naive], grad[:n_naive]), args.tokens / n_naive)]
    results = {}
    for name, fn, scale in rows:
        ms, y = timed(fn, device, args.warmup if scale == 1.0 else min(args.warmup, 1),
                      args.iters if scale == 1.0 else min(args.iters, 2))
        results[name] = (ms * scale, y)
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    ref = results['moe grouped (ours)'][1]
    print(f'MoE layer fwd+bwd: H={hidden} I={inter} E=4 top-2 S={args.tokens} cf=1.5 (train) '
          f'device={device.type} dtype={str(dtype).replace("torch.", "")}')
    print(f'{"impl":<30}{"ms":>11}{"x dense":>10}{"x grouped":>11}{"max|dy|":>11}')
    dense_ms, moe_ms = results['dense FFN'][0], results['moe grouped (ours)'][0]
    for name, (ms, y) in results.items():
        # the per-token loop on a subset routes with the subset's capacity: comparable only when it ran on all S
        same = name != 'dense FFN' and len(y) == len(ref)
        diff = f'{(y.float() - ref.float()).abs().max().item():.1e}' if same else '-'
        print(f'{name:<30}{ms:>11.2f}{ms / dense_ms:>10.2f}{ms / moe_ms:>11.2f}{diff:>11}')


if __name__ == '__main__':
    main()
