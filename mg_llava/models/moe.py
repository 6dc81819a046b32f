"""Sparse up-cycling of a decoder LLM's FFNs into top-k Mixture-of-Experts layers (LLaVA-MoD stage 2b, spec §6).

`upcycle(llm, MoEConfig())` replaces `layer.mlp` of the chosen decoder layers by a `SparseMoEBlock`: E deep copies
of the dense FFN + a fresh fp32 router, GShard top-k gating with a capacity (DeepSpeed v0.9.5 `top2gating`
semantics, spec §6.2), but deterministic and with padding tokens excluded (spec §11.2.10-11).

    with routing_mask(llm, attention_mask):       # (B, L): padding is neither routed, counted, nor in the aux loss
        out = llm(...)
    loss = ce + router_aux_loss(llm)              # coef * sum over MoE layers of l_aux

Gradient checkpointing (non-reentrant only, as policy.py enables it: a reentrant forward runs under no_grad, so
the aux loss would carry no gradient) recomputes each block's forward during backward, so the mask must still be
set then: run backward inside the `with`, or use `set_routing_mask` (it stays until the next call). Routing is
deterministic, so the recomputation routes identically; one that sees another mask than its forward saw, or
follows a forward without grad, raises instead of silently training on something else.
"""
import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

LAYER_MODES = ('every_2nd', 'first_half', 'second_half', 'all')


@dataclass
class MoEConfig:
    """Which FFNs become MoE layers and how they route. Defaults = the LLaVA-MoD scripts.

    layers: 'every_2nd' (0, 2, 4, ...), 'first_half', 'second_half', 'all', or explicit layer indices.
    Capacity per expert C = max(ceil(S / E * factor * top_k), min_capacity), S = non-padding tokens of the forward;
    `capacity_factor` in train mode, `eval_capacity_factor` in eval mode (2.0 with top-2: C = S, nothing drops).
    """
    num_experts: int = 4
    top_k: int = 2
    layers: Union[str, Sequence[int]] = 'every_2nd'
    capacity_factor: float = 1.5
    eval_capacity_factor: float = 2.0
    min_capacity: int = 0
    use_residual: bool = False
    router_aux_loss_coef: float = 0.01

    def __post_init__(self):
        # the reference accepts top_k 3 or 4 although only its top-1/top-2 gating exist (spec §11.2.15)
        if self.top_k not in (1, 2) or isinstance(self.top_k, bool):
            raise ValueError(f'MoEConfig.top_k must be 1 or 2 (GShard top-1 / top-2 gating), got {self.top_k!r}')
        if not isinstance(self.num_experts, int) or self.num_experts < 2:
            raise ValueError(f'MoEConfig.num_experts must be an int >= 2, got {self.num_experts!r}')
        if not (self.capacity_factor > 0 and self.eval_capacity_factor > 0 and self.min_capacity >= 0):
            raise ValueError('MoEConfig: capacity factors must be > 0 and min_capacity >= 0, got '
                             f'{self.capacity_factor}, {self.eval_capacity_factor}, {self.min_capacity}')
        if isinstance(self.layers, str):
            if self.layers not in LAYER_MODES:
                raise ValueError(f'MoEConfig.layers must be one of {LAYER_MODES} or a list of layer indices, '
                                 f'got {self.layers!r}')
        else:
            self.layers = [int(i) for i in self.layers]
            if not self.layers or len(set(self.layers)) != len(self.layers):
                raise ValueError(f'MoEConfig.layers: a non-empty list of distinct indices, got {self.layers}')

    def moe_layer_indices(self, num_layers):
        """-> sorted indices of the decoder layers whose FFN becomes an MoE layer."""
        n = num_layers
        modes = {'every_2nd': range(0, n, 2), 'first_half': range(n // 2), 'second_half': range(n // 2, n),
                 'all': range(n)}
        if isinstance(self.layers, str):
            return list(modes[self.layers])
        bad = [i for i in self.layers if not 0 <= i < n]
        if bad:
            raise ValueError(f'MoEConfig.layers: {bad} out of range for a {n}-layer decoder')
        return sorted(self.layers)


class Routing(NamedTuple):
    """Routing of S flattened tokens over E experts (top-1 choice in column 0).

    experts (S, k) long; slots (S, k) long: place in the chosen expert's queue; keep (S, k) bool: within capacity
    and not padding; weights (S, k) fp32: gate probs of the kept choices renormalised to sum 1 (0 where dropped;
    a token with all choices dropped gets output 0); gates (S, E) fp32 softmax; capacity C; aux: scalar l_aux
    (grad through the gates); load (E,): share of the routed choices per expert (before capacity);
    dropped: share of routed choices over capacity. Padding tokens are in none of the counts.
    """
    experts: torch.Tensor
    slots: torch.Tensor
    keep: torch.Tensor
    weights: torch.Tensor
    gates: torch.Tensor
    capacity: int
    aux: torch.Tensor
    load: torch.Tensor
    dropped: torch.Tensor


def gshard_route(logits, top_k, capacity_factor, min_capacity=0, mask=None):
    """GShard / DeepSpeed top-k gating, deterministic. logits (S, E); mask (S,) bool (False = padding) or None.

    Differences from the reference, on purpose: the reference (DeepSpeed <= 0.13 `top2gating`) picks the 2nd
    expert by Gumbel-max SAMPLING in training and at eval, so greedy decoding is not reproducible and a gradient
    checkpointing recomputation routes differently (a bug, spec §6.2 / §11.2.11). Here the 2nd expert is the
    argmax among the others. Padding tokens are excluded from routing, capacity and l_aux (the reference routes
    them). -> Routing.
    """
    S, E = logits.shape
    gates = logits.float().softmax(-1)
    real = torch.ones(S, dtype=torch.bool, device=logits.device) if mask is None else mask
    n = S if mask is None else int(real.sum())                       # the capacity counts real tokens only
    capacity = max(math.ceil(n / E * capacity_factor * top_k), min_capacity)
    first = gates.argmax(-1)
    chosen = [first]
    if top_k == 2:
        chosen.append(gates.masked_fill(F.one_hot(first, E).bool(), -1.0).argmax(-1))
    experts = torch.stack(chosen, 1)                                  # (S, k)
    onehot = F.one_hot(experts, E) * real[:, None, None]              # (S, k, E), 0 rows for padding
    # Queue order: every top-1 choice (token order) before any top-2 choice, as GShard: a cumsum over the
    # choice-major flattening gives each choice's place in its expert's queue. Small (k*S, E) ints, no (S, E, C).
    queue = onehot.transpose(0, 1).reshape(top_k * S, E).cumsum(0) - 1
    slots = queue.gather(1, experts.t().reshape(-1, 1)).view(top_k, S).t()
    keep = (slots < capacity) & real[:, None]
    kept = gates.gather(1, experts) * keep
    weights = kept / kept.sum(-1, keepdim=True).clamp_min(torch.finfo(kept.dtype).eps)
    if n == 0:
        aux = gates.sum() * 0.0
        load, dropped = gates.new_zeros(E), gates.new_zeros(())
    else:
        me = (gates * real[:, None]).sum(0) / n                      # mean gate prob per expert
        ce = onehot[:, 0].sum(0).float() / n                          # top-1 assignment share (before capacity)
        aux = E * (me * ce).sum()                                     # 1 for uniform routing, E for a collapse
        load = onehot.sum((0, 1)).float() / (top_k * n)
        dropped = 1.0 - keep.sum().float() / (top_k * n)
    return Routing(experts, slots, keep, weights, gates, capacity, aux, load.detach(), dropped.detach())


_NO_FORWARD = object()


def _recomputing():
    """True while autograd's engine runs (backward): a forward there is a gradient checkpointing recomputation."""
    task = getattr(torch._C, '_current_graph_task_id', None)
    return task is not None and task() != -1


class SparseMoEBlock(nn.Module):
    """Drop-in replacement for a decoder layer's dense FFN (`layer.mlp`): E copies of it + a router.

    dense: the FFN module (any `f(x (..., H)) -> (..., H)`: HF Llama/Qwen2/Mistral gate/up/down MLP, Phi-3
    gate_up_proj, ...), deep-copied E times so every expert starts equal to it. router: Linear(H, E, no bias),
    fp32 whatever the model dtype, PyTorch default init (as DeepSpeed's `wg`). use_residual: residual MoE (spec
    §6.2) y = softmax(Wc x)[0] * MoE(x) + softmax(Wc x)[1] * MLP(x), Wc = Linear(H, 2) (fp32), MLP = another copy.
    The token mask (B, L) comes from `token_mask`, set by `routing_mask` / `set_routing_mask`.
    """

    def __init__(self, dense, hidden_size, config, layer_idx=None):
        super().__init__()
        self.num_experts, self.top_k = config.num_experts, config.top_k
        self.capacity_factor, self.eval_capacity_factor = config.capacity_factor, config.eval_capacity_factor
        self.min_capacity, self.aux_loss_coef = config.min_capacity, config.router_aux_loss_coef
        self.layer_idx = layer_idx
        param = next(dense.parameters(), None)
        device = None if param is None else param.device
        self.experts = nn.ModuleList(copy.deepcopy(dense) for _ in range(self.num_experts))
        self.router = nn.Linear(hidden_size, self.num_experts, bias=False, device=device, dtype=torch.float32)
        self.residual_mlp = copy.deepcopy(dense) if config.use_residual else None
        self.residual_coef = (nn.Linear(hidden_size, 2, device=device, dtype=torch.float32)
                              if config.use_residual else None)
        self.token_mask = None      # (B, L) bool or None (= every token is real)
        self.aux_loss = None        # scalar l_aux of the last forward (grad through the router)
        self.stats = {}             # detached: load (E,), dropped (), capacity
        self._forward_mask = _NO_FORWARD   # the mask of the last grad-enabled forward (checked on recomputation)
        self.train(dense.training)  # a fresh module is in train mode; keep the replaced FFN's (eval) mode

    def _apply(self, fn, *args, **kwargs):
        # model.to(bf16) / .half() must not round the router (and residual coefficient): routing logits and their
        # softmax are fp32 (DeepSpeed re-casts `wg` to fp32 each forward). Keep fp32 values, follow the device.
        fp32 = [m for m in (self.router, self.residual_coef) if m is not None]
        saved = [p.data for m in fp32 for p in m.parameters()]
        super()._apply(fn, *args, **kwargs)
        for data, new in zip(saved, [p for m in fp32 for p in m.parameters()]):
            if new.dtype != torch.float32:
                new.data = data.to(new.device, torch.float32)
                if new.grad is not None:
                    new.grad = new.grad.float()
        return self

    def _flat_mask(self, shape, device):
        """token_mask -> (S,) bool on `device` for hidden states of `shape` (..., H), or None."""
        m = self.token_mask
        if m is None:
            return None
        lead = tuple(shape[:-1])
        if len(lead) == 2 and m.dim() == 2 and m.shape[0] == lead[0] and m.shape[1] > lead[1]:
            m = m[:, m.shape[1] - lead[1]:]    # KV-cache decoding: these are the last L positions of the mask
        if m.numel() != math.prod(lead):
            raise ValueError(f'MoE routing mask of shape {tuple(m.shape)} does not match hidden states {lead}')
        return m.reshape(-1).to(device=device, dtype=torch.bool)

    def route(self, x, mask=None):
        """x (S, H), mask (S,) bool or None -> Routing, logits in fp32 (autocast off: bf16 logits would flip
        near-tied choices and make the softmax coarse)."""
        cf = self.capacity_factor if self.training else self.eval_capacity_factor
        with torch.autocast(x.device.type, enabled=False):
            logits = F.linear(x.float(), self.router.weight.float())
        return gshard_route(logits, self.top_k, cf, self.min_capacity, mask)

    def grouped_experts(self, x, r):
        """x (S, H), Routing r -> (S, H): sum over kept choices of weight * expert(x).

        Kept (token, choice) pairs are sorted by expert (stable: token order within an expert), each expert runs
        once on its contiguous slice of x.index_select, outputs go back with index_add. No per-token loop and no
        one-hot (S, E, C) dispatch/combine tensors (the reference's einsums, spec §11.1.4). With k <= 2 every row
        receives at most two additions onto 0, so the result does not depend on the atomic-add order.
        """
        S, k = r.experts.shape
        pairs = r.keep.reshape(-1).nonzero().squeeze(1)                 # flat index s * k + j of kept choices
        expert_of = r.experts.reshape(-1)[pairs]
        expert_of, order = torch.sort(expert_of, stable=True)
        pairs = pairs[order]
        tokens = torch.div(pairs, k, rounding_mode='floor')
        counts = torch.bincount(expert_of, minlength=self.num_experts).tolist()    # one host sync
        chunks = x.index_select(0, tokens).split(counts)
        # every expert runs, on an empty slice when nothing is routed to it: its parameters stay in the graph
        # (DDP without find_unused_parameters needs a fixed set of used parameters)
        ys = torch.cat([expert(chunk) for expert, chunk in zip(self.experts, chunks)])
        ys = ys * r.weights.reshape(-1)[pairs].unsqueeze(1).to(ys.dtype)
        return ys.new_zeros(S, ys.shape[-1]).index_add(0, tokens, ys)

    def mix_residual(self, x, y, mask):
        """Residual MoE mixing (identity without use_residual): x, y (S, H) -> (S, H), padding rows 0."""
        if self.residual_coef is None:
            return y
        with torch.autocast(x.device.type, enabled=False):
            c = F.linear(x.float(), self.residual_coef.weight.float(), self.residual_coef.bias.float()).softmax(-1)
        out = (c[:, :1] * y.float() + c[:, 1:] * self.residual_mlp(x).float()).to(y.dtype)
        return out if mask is None else out * mask.unsqueeze(1).to(out.dtype)

    def forward(self, hidden_states):
        """hidden_states (..., H) (HF: (B, L, H)) -> (..., H); padding rows -> 0. Sets aux_loss and stats."""
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        mask = self._flat_mask(shape, hidden_states.device)
        recompute = torch.is_grad_enabled() and _recomputing()
        if recompute and self.token_mask is not self._forward_mask:
            # _NO_FORWARD: the forward ran without grad, i.e. inside reentrant checkpointing (torch.no_grad), so
            # the aux loss it reported has no graph and the router would learn nothing from it
            raise RuntimeError(
                'MoE layer recomputed by gradient checkpointing with another routing mask than its forward used, '
                'or after a forward without grad (reentrant checkpointing, where the aux loss gets no gradient: '
                'use gradient_checkpointing_kwargs={"use_reentrant": False}). Keep the mask set until backward '
                '(backward inside `routing_mask`, or `set_routing_mask`) and run backward before the next forward')
        r = self.route(x, mask)
        y = self.mix_residual(x, self.grouped_experts(x, r), mask)
        if not recompute:           # the recomputation must not replace what the forward reported
            if torch.is_grad_enabled():
                self._forward_mask = self.token_mask
            self.aux_loss = r.aux
            self.stats = {'load': r.load, 'dropped': r.dropped, 'capacity': r.capacity}
        return y.reshape(*shape[:-1], y.shape[-1])


def _base_model(llm):
    return llm.get_base_model() if hasattr(llm, 'get_base_model') else llm     # peft wrapper -> HF model


def decoder_layers(llm):
    """The decoder's layer list of an HF causal LM (or its base model), also under a peft wrapper."""
    base = _base_model(llm)
    decoder = base.get_decoder() if hasattr(base, 'get_decoder') else base
    return decoder.layers


def upcycle(llm, config):
    """Replace `layer.mlp` of the layers `config.moe_layer_indices` picks by SparseMoEBlocks -> those indices.

    Function-preserving at init: identical experts and renormalised weights, so the logits equal the dense
    model's whenever no token is dropped (eval mode with the default capacities). Experts copy the dense FFN's
    requires_grad flags; the new router and residual coefficient are trainable.
    """
    base = _base_model(llm)
    layers = decoder_layers(llm)
    indices = config.moe_layer_indices(len(layers))
    for i in indices:
        if isinstance(layers[i].mlp, SparseMoEBlock):
            raise ValueError(f'decoder layer {i} is already an MoE layer')
        layers[i].mlp = SparseMoEBlock(layers[i].mlp, base.config.hidden_size, config, layer_idx=i)
    return indices


def moe_blocks(module):
    """Iterator over the SparseMoEBlocks of `module`, in module order."""
    return (m for m in module.modules() if isinstance(m, SparseMoEBlock))


def _as_mask(attention_mask):
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError(f'routing mask: a (B, L) attention mask, got shape {tuple(attention_mask.shape)}')
    return attention_mask.bool()


def set_routing_mask(llm, attention_mask):
    """Set the token mask (B, L) bool/int (None: all tokens real) on every block until the next call."""
    mask = _as_mask(attention_mask)
    for block in moe_blocks(llm):
        block.token_mask = mask


@contextmanager
def routing_mask(llm, attention_mask):
    """Context manager: every block routes with attention_mask (B, L) bool/int or None; restored on exit."""
    blocks = list(moe_blocks(llm))
    before = [b.token_mask for b in blocks]
    mask = _as_mask(attention_mask)
    for b in blocks:
        b.token_mask = mask
    try:
        yield
    finally:
        for b, m in zip(blocks, before):
            b.token_mask = m


def router_aux_loss(llm) -> Optional[torch.Tensor]:
    """coef * sum over MoE layers of their last forward's l_aux (scalar), None without any (run) MoE layer."""
    blocks = [b for b in moe_blocks(llm) if b.aux_loss is not None]
    if not blocks:
        return None
    return sum(b.aux_loss_coef * b.aux_loss for b in blocks)


def routing_stats(llm):
    """{'moe/layer{i}/load{e}': share of routed choices to expert e, 'moe/layer{i}/dropped': share over
    capacity} of the last forward, as floats (for logging; one host sync)."""
    blocks = [b for b in moe_blocks(llm) if b.stats]
    if not blocks:
        return {}
    values = torch.stack([torch.cat([b.stats['load'], b.stats['dropped'].view(1)]) for b in blocks]).tolist()
    out = {}
    for j, (b, row) in enumerate(zip(blocks, values)):
        name = f'moe/layer{b.layer_idx if b.layer_idx is not None else j}'
        out.update({f'{name}/load{e}': v for e, v in enumerate(row[:-1])})
        out[f'{name}/dropped'] = row[-1]
    return out


QWEN2_FIELDS = ('vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
                'num_key_value_heads', 'hidden_act', 'max_position_embeddings', 'initializer_range', 'rms_norm_eps',
                'use_cache', 'tie_word_embeddings', 'rope_theta', 'rope_scaling', 'use_sliding_window',
                'sliding_window', 'max_window_layers', 'attention_dropout', 'bos_token_id', 'eos_token_id',
                'pad_token_id', 'torch_dtype')


def to_qwen2_moe_state(llm):
    """A Qwen2 LLM up-cycled without residual -> (transformers Qwen2MoeConfig, state_dict) that
    `Qwen2MoeForCausalLM` loads strictly and that computes this model's eval-mode function when nothing is dropped
    (HF has no capacity: the eval capacity must cover every token, as the default 2.0 with top-2 does).

    Dense layers -> `mlp_only_layers`, `decoder_sparse_step=1`, `norm_topk_prob=True` (our renormalised weights),
    router -> `mlp.gate.weight` (fp32 here; HF casts it to the model dtype on load). transformers 4.48's
    Qwen2MoeSparseMoeBlock always builds a shared expert: it gets size 0 (gate/up (0, H), down (H, 0) weights,
    whose output is an empty-sum matmul = exactly 0) and a zero gate weight (sigmoid(0) * 0 = 0).
    """
    from transformers import Qwen2MoeConfig
    base = _base_model(llm)
    cfg = base.config
    if cfg.model_type != 'qwen2':
        raise ValueError(f'to_qwen2_moe_state: a Qwen2 LLM, got model_type {cfg.model_type!r}')
    blocks = {b.layer_idx: b for b in moe_blocks(base)}
    if not blocks:
        raise ValueError('to_qwen2_moe_state: the LLM has no MoE layer (call upcycle first)')
    if any(b.residual_coef is not None for b in blocks.values()):
        raise ValueError('to_qwen2_moe_state: residual MoE has no Qwen2-MoE equivalent')
    if len({(b.num_experts, b.top_k) for b in blocks.values()}) != 1:
        raise ValueError('to_qwen2_moe_state: all MoE layers need the same num_experts and top_k')
    if getattr(cfg, 'head_dim', None) not in (None, cfg.hidden_size // cfg.num_attention_heads):
        raise ValueError('to_qwen2_moe_state: Qwen2-MoE attention has head_dim = hidden_size // heads')
    block = next(iter(blocks.values()))
    fields = {k: getattr(cfg, k) for k in QWEN2_FIELDS if hasattr(cfg, k)}
    moe_cfg = Qwen2MoeConfig(
        **fields, num_experts=block.num_experts, num_experts_per_tok=block.top_k, decoder_sparse_step=1,
        mlp_only_layers=[i for i in range(cfg.num_hidden_layers) if i not in blocks], norm_topk_prob=True,
        moe_intermediate_size=cfg.intermediate_size, shared_expert_intermediate_size=0,
        router_aux_loss_coef=block.aux_loss_coef, output_router_logits=False)
    state = {}
    for key, value in base.state_dict().items():
        if 'lora_' in key or '.base_layer.' in key:
            raise ValueError(f'to_qwen2_moe_state: merge the LoRA adapters first ({key})')
        state[key.replace('.mlp.router.weight', '.mlp.gate.weight')] = value
    H = cfg.hidden_size
    for i, b in blocks.items():
        ref = b.experts[0].down_proj.weight
        prefix = f'model.layers.{i}.mlp'
        state[f'{prefix}.shared_expert.gate_proj.weight'] = ref.new_zeros(0, H)
        state[f'{prefix}.shared_expert.up_proj.weight'] = ref.new_zeros(0, H)
        state[f'{prefix}.shared_expert.down_proj.weight'] = ref.new_zeros(H, 0)
        state[f'{prefix}.shared_expert_gate.weight'] = ref.new_zeros(1, H)
    return moe_cfg, state
