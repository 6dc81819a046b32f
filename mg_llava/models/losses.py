"""Losses as pure functions of hidden states / logits: next-token CE now, KD / DPO next (they read the same
`logits_at` positions), and the MoE router auxiliary loss HF adds inside its own forward."""
import sys

import torch.nn.functional as F

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
