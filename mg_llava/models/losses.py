"""Losses as pure functions of hidden states / logits, all reading the same flat positions (`logits_at`):
next-token CE, the MoE router auxiliary loss HF adds inside its own forward, and LLaVA-MoD's mimic-distillation
(KD) and preference (DPO / KTO-pair / hinge / IPO) losses.

Position convention (`logits_at`, `targets_at`, the collate's `supervised_index`, `response_positions`): a flat
index into `hidden[:, :-1]` viewed as (B*(L-1), H), i.e. the positions that predict a next token; position
p = b*(L-1) + t is row t of sample b and predicts token t+1.

Memory of the KD / sequence log-prob losses: the LM heads and the fp32 softmaxes run only on the selected
positions, in chunks of `chunk_size` rows, and with gradients each chunk is wrapped in `torch.utils.checkpoint`
so backward keeps only the chunk's hidden rows, not its (chunk, V) logits: peak memory O(chunk_size * V), never
O(B * L * V) (measured by `timing/kd_loss.py`).
"""
import math
import sys

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from xtuner.utils import IGNORE_INDEX

# Causal LMs whose logits are exactly lm_head(final hidden state) (no soft-capping / logit scaling).
PLAIN_HEAD_MODELS = ('llama', 'mistral', 'mixtral', 'qwen2', 'qwen2_moe', 'phi3', 'internlm2', 'yi')


def has_plain_head(llm):
    return getattr(llm.config, 'model_type', None) in PLAIN_HEAD_MODELS


def logits_at(lm_head, hidden, index):
    """LM head on selected positions only, in fp32.

    hidden (B, L, H); index (N,) flat positions into hidden[:, :-1] viewed as (B*(L-1), H) (the positions
    that predict a next token, e.g. the collate's `supervised_index`) -> logits (N, V) float32.
    """
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, index)
    return lm_head(h).float()


def targets_at(labels, index):
    """labels (B, L), index as in `logits_at` -> the next tokens those positions predict, (N,)."""
    return labels[:, 1:].reshape(-1).index_select(0, index)


def next_token_ce(logits, targets):
    """Token-mean cross-entropy (HF semantics; targets may hold IGNORE_INDEX=-100)."""
    return F.cross_entropy(logits, targets)


def _data_parallel():
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_token_mean(loss_sum, targets):
    """loss_sum (this rank's summed token losses) / the mean supervised-token count per rank, so that DDP's average
    of the ranks' gradients equals the gradient of the token mean over every rank's tokens. Packed rows hold
    different numbers of supervised tokens: a per-rank mean would weigh a rank's tokens by 1 / its own count. The
    count is all-reduced on the device (no host sync)."""
    import torch.distributed as dist
    count = (targets != IGNORE_INDEX).sum().to(loss_sum.dtype)
    dist.all_reduce(count)
    return loss_sum * dist.get_world_size() / count.clamp(min=1)


def global_token_mean_ce(logits, targets):
    """Cross-entropy for packed batches under data parallelism (global_token_mean); one process: next_token_ce."""
    if not _data_parallel():
        return next_token_ce(logits, targets)
    return global_token_mean(F.cross_entropy(logits, targets, reduction='sum'), targets)


def fused_linear_ce(head, hidden, index, targets, global_mean=False):
    """`llm_kernels='liger'`: liger-kernel's fused LM head + cross-entropy over the supervised rows only (chunked:
    neither (N, V) logits nor their gradient are materialised). hidden, index, targets as logits_at/targets_at;
    global_mean: the packed-batch token mean over all ranks. Needs liger-kernel (Triton, CUDA)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    rows = _rows(hidden, index)
    bias = getattr(head, 'bias', None)
    if global_mean and _data_parallel():
        loss_sum = LigerFusedLinearCrossEntropyLoss(reduction='sum')(head.weight, rows, targets, bias)
        return global_token_mean(loss_sum, targets)
    return LigerFusedLinearCrossEntropyLoss()(head.weight, rows, targets, bias)


def wants_router_logits(llm):
    """MoE LLMs (Mixtral, Qwen2-MoE, ...) add a load-balancing loss when their config says so."""
    return bool(getattr(llm.config, 'output_router_logits', False))


def router_aux_loss(llm, router_logits, attention_mask):
    """HF's own auxiliary term: `router_aux_loss_coef * load_balancing_loss_func(...)`, taken from the LLM's
    modeling module so it is exactly what `llm(..., labels=...)` would add."""
    base = llm.get_base_model() if hasattr(llm, 'get_base_model') else llm   # peft LoRA wrapper
    balance = getattr(sys.modules[type(base).__module__], 'load_balancing_loss_func')
    aux = balance(router_logits, base.num_experts, base.num_experts_per_tok, attention_mask)
    return base.router_aux_loss_coef * aux


KD_KINDS = ('forward_kl', 'forward_kl_ce', 'reverse_kl', 'jsd')
PREFERENCE_KINDS = ('sigmoid', 'kto_pair', 'hinge', 'ipo')
KTO_KL_MODES = ('batch_detached', 'reference')


# ----------------------------------------------------------------------------------------------- positions
def response_positions(labels):
    """labels (B, L) -> LongTensor (N,) of flat positions into hidden[:, :-1] (B*(L-1)) whose next token is
    supervised: position t of sample b is selected when labels[b, t+1] != IGNORE_INDEX (the LM-loss convention).

    Equals the collate's `supervised_index`. The reference builds its KD mask from the *unshifted* labels
    (labels[t] != -100, spec §5.4): it never distils the position that predicts the first answer token and does
    distil the position after each EOS. That off-by-one is fixed here.
    """
    return (labels[:, 1:].reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)


def all_token_positions(attention_mask, sequence_ids=None):
    """attention_mask (B, L) (bool or 0/1) -> LongTensor (N,) of flat positions t (into hidden[:, :-1]) where both
    token t and token t+1 are real (non-padding) tokens: every prediction of a real token from a real context,
    image and prompt tokens included (`distill_all_tokens`). Works for left and right padding. A packed batch's
    sequence_ids (B, L) also drop the positions where t+1 starts another sample.

    The reference's DISTILL_ALL_TOKENS uses a mask of all ones, so it also distils padding positions (spec §11.7).
    """
    m = attention_mask.bool()
    keep = m[:, :-1] & m[:, 1:]
    if sequence_ids is not None:
        keep &= sequence_ids[:, :-1] == sequence_ids[:, 1:]
    return keep.reshape(-1).nonzero().squeeze(1)


def _rows(hidden, positions):
    """hidden (B, L, H), positions (N,) flat into hidden[:, :-1] -> (N, H) rows, without copying hidden[:, :-1]:
    row t of sample b is element b*L + t of hidden.flatten(0, 1), and b*L + t = p + b with b = p // (L-1)."""
    length = hidden.shape[1]
    return hidden.flatten(0, 1).index_select(0, positions + torch.div(positions, length - 1, rounding_mode='floor'))


def _fp32(z):
    """Logits in at least fp32 (bf16/fp16 heads are upcast; an fp64 head, used by tests, stays fp64)."""
    return z if z.dtype == torch.float64 else z.float()


def _out_features(head):
    """Output size of an LM head when it can be read without running it (nn.Linear, peft wrappers), else None."""
    n = getattr(head, 'out_features', None)
    if n is None and isinstance(getattr(head, 'weight', None), torch.Tensor):
        n = head.weight.shape[0]
    return int(n) if n is not None else None


def _run_chunk(fn, *args):
    """fn(*args) under a non-reentrant checkpoint when autograd records (backward recomputes the chunk's logits
    instead of keeping them), plainly otherwise (the reference model's pass, evaluation)."""
    if torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


# ----------------------------------------------------------------------------------------------- distillation
def _log_probs(head, h, width, temperature):
    """fp32 log-probabilities (n, width) of head(h) / temperature; the logits are freed on return."""
    z = _fp32(head(h))[:, :width]
    return F.log_softmax(z / temperature if temperature != 1.0 else z, dim=-1)


def _rowdot(a, b):
    """(n, V), (n, V) -> (n,) row-wise dot products. Product then sum (pairwise summation), not a batched matmul,
    although that would not allocate the (n, V) product: BLAS accumulates the fp32 dot sequentially, which at
    V = 152K biased the loss by 2e-4 relative (measured); this stays within 1e-7."""
    return (a * b).sum(-1)


def _kd_rows(logq, logp, kind):
    """Student log-probs logq (n, V) (with grad), teacher log-probs logp (n, V) (no grad, CONSUMED: its storage is
    reused in place) -> per-row divergence (n,).

    Each (n, V) tensor is reused or dropped as soon as possible: besides logq and logp a chunk holds two or three
    more ('jsd': five). Logits are assumed finite (a linear head's); the reference's zeroing of terms where the
    student's log-prob is -inf guards masked logits that a linear head never produces.
    """
    if kind == 'forward_kl_ce':     # the reference's form: CE with soft targets = KL(p_T || p_S) + H(p_T)
        return -_rowdot(logp.exp_(), logq)
    if kind == 'forward_kl':        # KL(p_T || p_S) = sum p (log p - log q); exactly 0 when the logits agree
        p = logp.exp()
        return _rowdot(p, logp.sub_(logq))       # in place: logp is not needed any more (autograd allows it)
    if kind == 'reverse_kl':        # KL(p_S || p_T) (mode seeking)
        return _rowdot(logq.exp(), logp.neg_().add_(logq))
    # 'jsd', beta 0.5: (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2
    logm = torch.logaddexp(logp, logq) - math.log(2.0)
    return 0.5 * (_rowdot(logp.exp(), logp - logm) + _rowdot(logq.exp(), logq - logm))


def kd_loss(student_hidden, teacher_hidden, student_head, teacher_head, positions, kind='forward_kl',
            temperature=1.0, vocab_size=None, chunk_size=1024):
    """Token-mean distillation loss over the selected positions (LLaVA-MoD mimic distillation, spec §5).

    student_hidden (B, L, H_s) and teacher_hidden (B, L, H_t): final hidden states of the same batch (same
    sequence layout; the teacher's is used without grad). student_head / teacher_head: the LM heads (nn.Linear or
    any callable mapping (n, H) -> (n, V)). positions (N,): flat positions into hidden[:, :-1], e.g.
    `response_positions(labels)` or `all_token_positions(attention_mask)`.

    kind: 'forward_kl' KL(p_T||p_S) (default), 'forward_kl_ce' the reference's CE with teacher soft targets
    (= forward KL + H(p_T): same gradient, different value), 'reverse_kl' KL(p_S||p_T), 'jsd' (beta 0.5).
    temperature tau: both distributions at logits / tau, the loss scaled by tau**2.
    vocab_size: both logits sliced to their first `vocab_size` entries; default the smaller of the two heads'
    output sizes (Qwen2-7B's head has 152064 rows, Qwen2-0.5B's 151936: the extra rows are padding). The
    reference hard-codes 151936.

    Heads and softmaxes run only at `positions`, `chunk_size` rows at a time (teacher under no_grad, each chunk
    checkpointed): memory O(chunk_size * V). The price: with gradients each chunk's heads run twice (forward, and
    the recompute in backward), the teacher's included, rather than keeping (N, V) teacher probabilities.
    Returns a 0-dim fp32 tensor; with no selected position a zero that is still connected to the student (its
    hidden states and head get zero gradients) instead of the reference's 0/0 = NaN.
    """
    if kind not in KD_KINDS:
        raise ValueError(f'unknown KD kind {kind!r}; expected one of {KD_KINDS}')
    if not temperature > 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    if student_hidden.shape[:2] != teacher_hidden.shape[:2]:
        # the KD product pairs position t of both models: same batch, same sequence layout (spec §5.3)
        raise ValueError(f'student and teacher hidden states differ in (batch, length): '
                         f'{tuple(student_hidden.shape[:2])} vs {tuple(teacher_hidden.shape[:2])}')
    hs = _rows(student_hidden, positions)                       # (N, H_s), with grad
    with torch.no_grad():
        ht = _rows(teacher_hidden.detach(), positions)          # (N, H_t)
    sizes = [_out_features(student_head), _out_features(teacher_head)]
    if None in sizes:       # a callable head of unknown width: read both widths off (at most) one row
        with torch.no_grad():
            sizes = [student_head(hs[:1]).shape[-1], teacher_head(ht[:1]).shape[-1]]
    width = min(sizes) if vocab_size is None else vocab_size
    if width > min(sizes):
        raise ValueError(f'vocab_size {vocab_size} exceeds a head output size {min(sizes)} (heads: {sizes})')
    n = hs.shape[0]
    if n == 0:
        # no selected position: zero, connected to the student's hidden states and head (no NaN, DDP-friendly)
        return _fp32(student_head(hs)).sum() * 0.0

    def chunk_loss(hs_c, ht_c):
        with torch.no_grad():
            logp = _log_probs(teacher_head, ht_c, width, temperature)
        logq = _log_probs(student_head, hs_c, width, temperature)
        return _kd_rows(logq, logp, kind).sum()

    # sum of chunk sums, then one division: the same value and gradients as the unchunked token mean
    total = sum(_run_chunk(chunk_loss, hs[i:i + chunk_size], ht[i:i + chunk_size]) for i in range(0, n, chunk_size))
    # tau^2 keeps the gradient scale independent of tau (Hinton et al.); the reference has no temperature (tau 1)
    return total * (temperature ** 2 / n)


# ----------------------------------------------------------------------------------------------- preference
def sequence_logps(hidden, head, labels, chunk_size=1024):
    """Summed log-probability of each sample's response tokens (DPO's `average_log_prob=False`).

    hidden (B, L, H), head: LM head (nn.Linear or callable (n, H) -> (n, V)), labels (B, L) with IGNORE_INDEX on
    non-response tokens -> (B,) fp32: the sum over the t with labels[t+1] supervised of
    log_softmax(head(hidden[t]))[labels[t+1]].
    The head runs only at response positions, `chunk_size` rows at a time (checkpointed when recording grads):
    no (B, L, V) tensor. No vocabulary slicing (only label ids are read), as in the reference.
    """
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    bsz, length = labels.shape
    pos = response_positions(labels)
    h = _rows(hidden, pos)                                              # (N, H)
    targets = labels[:, 1:].reshape(-1).index_select(0, pos)            # (N,)
    sample = torch.div(pos, length - 1, rounding_mode='floor')          # (N,) which sample each row belongs to
    if pos.numel() == 0:
        return torch.zeros(bsz, device=hidden.device) + _fp32(head(h)).sum() * 0.0

    def chunk_logps(h_c, t_c):
        return F.log_softmax(_fp32(head(h_c)), dim=-1).gather(1, t_c[:, None]).squeeze(1)

    rows = torch.cat([_run_chunk(chunk_logps, h[i:i + chunk_size], targets[i:i + chunk_size])
                      for i in range(0, pos.numel(), chunk_size)])
    return torch.zeros(bsz, dtype=rows.dtype, device=rows.device).index_add(0, sample, rows)


def preference_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, kind='sigmoid', beta=0.1,
                    kto_kl='batch_detached', label_smoothing=0.0):
    """Preference-distillation loss on sequence log-probs (spec §7; the teacher is the reference model).

    policy_chosen, policy_rejected, ref_chosen, ref_rejected: (B,) summed log-probs (`sequence_logps`).
    With r_c = policy_chosen - ref_chosen and r_r = policy_rejected - ref_rejected:
      'sigmoid'  (DPO)  -(1-eps) log sigma(beta (r_c - r_r)) - eps log sigma(-beta (r_c - r_r)), eps = label_smoothing
      'kto_pair' (HALOs eq. 7) mean over the 2B terms [1 - sigma(beta (r_c - KL_r)), 1 - sigma(beta (KL_c - r_r))]
      'hinge'    relu(1 - beta (r_c - r_r))
      'ipo'      ((r_c - r_r) - 1 / (2 beta))**2
    kto_kl, the KL reference points (KL_c, KL_r) of 'kto_pair':
      'batch_detached' (default): max(mean_batch(r), 0), detached: a reference point, not something to optimise;
      'reference': the same but not detached, as the reference code does (per-device micro-batch; with batch 1
        it degenerates to the sample's own ratio, spec §11.17);
      a pair of tensors (KL_c, KL_r): precomputed points (e.g. averaged over ranks or a larger batch), detached.
    Returns (loss: 0-dim tensor, metrics: dict of detached 0-dim batch means `rewards_chosen` (beta r_c),
    `rewards_rejected` (beta r_r), `margins` (their difference), `accuracy` (fraction with r_c > r_r)).
    """
    if kind not in PREFERENCE_KINDS:
        raise ValueError(f'unknown preference loss kind {kind!r}; expected one of {PREFERENCE_KINDS}')
    if not beta > 0:
        raise ValueError(f'beta must be > 0, got {beta}')
    if not isinstance(kto_kl, (tuple, list)) and kto_kl not in KTO_KL_MODES:
        raise ValueError(f'unknown kto_kl {kto_kl!r}; expected one of {KTO_KL_MODES} or a (KL_c, KL_r) pair')
    r_c = policy_chosen - ref_chosen
    r_r = policy_rejected - ref_rejected
    h = r_c - r_r
    if kind == 'sigmoid':
        # the reference's label_smoothing is 0 (its term then has weight 0); exposed here
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif kind == 'hinge':
        losses = torch.relu(1 - beta * h)
    elif kind == 'ipo':
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        if isinstance(kto_kl, (tuple, list)):
            kl_c, kl_r = (torch.as_tensor(k, dtype=r_c.dtype, device=r_c.device).detach() for k in kto_kl)
        elif kto_kl == 'batch_detached':
            kl_c, kl_r = r_c.detach().mean().clamp(min=0), r_r.detach().mean().clamp(min=0)
        else:   # 'reference': the reference's behaviour, gradients flow through the batch means (KTO says they don't)
            kl_c, kl_r = r_c.mean().clamp(min=0), r_r.mean().clamp(min=0)
        # chosen is measured against the rejected reference point and vice versa (HALOs eq. 7, as the reference)
        losses = torch.cat([1 - torch.sigmoid(beta * (r_c - kl_r)), 1 - torch.sigmoid(beta * (kl_c - r_r))])
    with torch.no_grad():
        rewards_chosen, rewards_rejected = beta * r_c.detach(), beta * r_r.detach()
        metrics = dict(rewards_chosen=rewards_chosen.mean(), rewards_rejected=rewards_rejected.mean(),
                       margins=(rewards_chosen - rewards_rejected).mean(),
                       accuracy=(rewards_chosen > rewards_rejected).float().mean())
    return losses.mean(), metrics
