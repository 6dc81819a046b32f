"""Slow reference forwards of a `moe.SparseMoEBlock`, for tests and timing/moe_layer.py only.

`per_token_forward`: the routing redone with Python loops (top-k by sorting each token's gates, the capacity queue
filled by hand: all top-1 choices in token order, then the top-2 ones), then each token through its experts one
at a time. Independent of `moe.gshard_route` and of the grouped expert computation.
`onehot_forward`: DeepSpeed-style dispatch/combine, dense einsums over one-hot (S, E, C) tensors and every expert
run on its full capacity buffer (the reference's layout, spec §6.2 / §11.1.4), on the block's own routing.
Both return (y (..., H), l_aux) and read the block's train/eval capacity factor like its forward.
"""
import math

import torch
import torch.nn.functional as F


def per_token_forward(block, hidden_states, mask=None):
    """hidden_states (..., H), mask (...) bool or None -> (y (..., H), l_aux scalar). Python loops over tokens."""
    shape = hidden_states.shape
    x = hidden_states.reshape(-1, shape[-1])
    S, E, k = x.shape[0], block.num_experts, block.top_k
    real = list(range(S)) if mask is None else mask.reshape(-1).nonzero().flatten().tolist()
    gates = F.linear(x.float(), block.router.weight.float()).softmax(-1)
    cf = block.capacity_factor if block.training else block.eval_capacity_factor
    capacity = max(math.ceil(len(real) / E * cf * k), block.min_capacity)
    choices = {}
    for s in real:
        g = gates[s].tolist()
        choices[s] = sorted(range(E), key=lambda e: (-g[e], e))[:k]     # ties -> lowest index, as argmax
    queued, kept = [0] * E, {s: [] for s in real}
    for j in range(k):                   # the whole top-1 queue before any top-2 choice
        for s in real:
            e = choices[s][j]
            if queued[e] < capacity:
                kept[s].append(e)
            queued[e] += 1
    rows = []
    for s in range(S):
        if not kept.get(s):
            rows.append(None)
            continue
        w = torch.stack([gates[s, e] for e in kept[s]])
        w = w / w.sum().clamp_min(torch.finfo(w.dtype).eps)
        rows.append(sum(w[i].to(x.dtype) * block.experts[e](x[s:s + 1])[0] for i, e in enumerate(kept[s])))
    like = next(r for r in rows if r is not None) if any(r is not None for r in rows) else x[0]
    y = torch.stack([r if r is not None else like.new_zeros(like.shape) for r in rows])
    m = None if mask is None else mask.reshape(-1).bool()
    y = block.mix_residual(x, y, m)
    n = len(real)
    me = gates[real].mean(0)
    ce = torch.bincount(torch.tensor([choices[s][0] for s in real], dtype=torch.long), minlength=E).float() / n
    aux = E * (me * ce.to(me.device)).sum()
    return y.reshape(*shape[:-1], y.shape[-1]), aux


def onehot_forward(block, hidden_states, mask=None):
    """hidden_states (..., H), mask (...) bool or None -> (y, l_aux) via (S, E, C) one-hot einsums."""
    shape = hidden_states.shape
    x = hidden_states.reshape(-1, shape[-1])
    m = None if mask is None else mask.reshape(-1).bool()
    r = block.route(x, m)
    S, E, C = x.shape[0], block.num_experts, max(r.capacity, 1)
    s_idx, j_idx = r.keep.nonzero(as_tuple=True)
    e_idx, c_idx = r.experts[s_idx, j_idx], r.slots[s_idx, j_idx]
    combine = x.new_zeros(S, E, C, dtype=torch.float32).index_put((s_idx, e_idx, c_idx), r.weights[s_idx, j_idx])
    dispatch = torch.zeros(S, E, C, dtype=torch.bool, device=x.device).index_put(
        (s_idx, e_idx, c_idx), torch.ones_like(s_idx, dtype=torch.bool))
    buffers = torch.einsum('sec,sm->ecm', dispatch.to(x.dtype), x)                   # (E, C, H)
    out = torch.stack([block.experts[e](buffers[e]) for e in range(E)])              # Python loop over experts
    y = torch.einsum('sec,ecm->sm', combine.to(out.dtype), out)
    y = block.mix_residual(x, y, m)
    return y.reshape(*shape[:-1], y.shape[-1]), r.aux
