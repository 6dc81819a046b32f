"""mg_llava.models.moe: MoE up-cycling, deterministic GShard routing, aux loss, padding, export (spec §6, §12)."""
import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen2MoeForCausalLM

from mg_llava.models.moe import (MoEConfig, SparseMoEBlock, decoder_layers, gshard_route, moe_blocks,
                                 router_aux_loss, routing_mask, routing_stats, set_routing_mask, to_qwen2_moe_state,
                                 upcycle)
from mg_llava.models.moe_reference import onehot_forward, per_token_forward

ROOT = Path(__file__).resolve().parents[1]


def tiny_llm(kind='qwen2', layers=4, seed=0):
    torch.manual_seed(seed)
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2,
                  attn_implementation='eager')
    if kind == 'qwen2':
        return Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    return LlamaForCausalLM(LlamaConfig(**common)).eval()


def batch(seed=1, B=3, L=7):
    """input_ids (B, L), left-padded attention mask (row 0 full, others 2 / 3 padding)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    for b in range(1, B):
        mask[b, :min(b + 1, L - 1)] = 0
    return ids, mask


class SwiGLU(nn.Module):
    def __init__(self, h, i):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(h, i, bias=False), nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def random_block(H=16, I=24, seed=0, **cfg):
    torch.manual_seed(seed)
    block = SparseMoEBlock(SwiGLU(H, I), H, MoEConfig(**cfg))
    with torch.no_grad():   # distinct experts, a router with clear preferences
        for p in block.experts.parameters():
            p.add_(0.3 * torch.randn_like(p))
        block.router.weight.mul_(8)
    return block.train()


# ---------------------------------------------------------------------------------------------- config & layers
def test_config_validation_and_layer_modes():
    for k in (0, 3, 4):
        with pytest.raises(ValueError, match='top_k must be 1 or 2'):
            MoEConfig(top_k=k)
    with pytest.raises(ValueError, match='layers'):
        MoEConfig(layers='odd')
    with pytest.raises(ValueError, match='distinct'):
        MoEConfig(layers=[1, 1])
    assert MoEConfig().moe_layer_indices(6) == [0, 2, 4]
    assert MoEConfig(layers='every_2nd').moe_layer_indices(7) == [0, 2, 4, 6]
    assert MoEConfig(layers='first_half').moe_layer_indices(6) == [0, 1, 2]
    assert MoEConfig(layers='second_half').moe_layer_indices(6) == [3, 4, 5]
    assert MoEConfig(layers='all').moe_layer_indices(3) == [0, 1, 2]
    assert MoEConfig(layers=(4, 1)).moe_layer_indices(6) == [1, 4]
    with pytest.raises(ValueError, match='out of range'):
        MoEConfig(layers=[6]).moe_layer_indices(6)


@pytest.mark.parametrize('mode,expected', [('every_2nd', [0, 2]), ('second_half', [2, 3]), ([1], [1])])
def test_upcycle_replaces_the_selected_layers(mode, expected):
    llm = tiny_llm(layers=4)
    dense = [copy.deepcopy(layer.mlp) for layer in decoder_layers(llm)]
    assert upcycle(llm, MoEConfig(layers=mode)) == expected
    for i, layer in enumerate(decoder_layers(llm)):
        assert isinstance(layer.mlp, SparseMoEBlock) == (i in expected)
        if i in expected:
            assert layer.mlp.layer_idx == i and len(layer.mlp.experts) == 4
            assert layer.mlp.router.weight.dtype == torch.float32 and layer.mlp.router.weight.shape == (4, 32)
            for expert in layer.mlp.experts:   # deep copies, equal to the dense FFN
                for (n, p), (_, q) in zip(expert.named_parameters(), dense[i].named_parameters()):
                    assert torch.equal(p, q), n
            assert layer.mlp.experts[0].gate_proj.weight.data_ptr() != layer.mlp.experts[1].gate_proj.weight.data_ptr()
    assert [b.layer_idx for b in moe_blocks(llm)] == expected
    with pytest.raises(ValueError, match='already'):
        upcycle(llm, MoEConfig(layers=mode))


def test_upcycle_under_a_peft_wrapper():
    from peft import LoraConfig, PeftModel

    from mg_llava.models.policy import add_lora   # peft's LoRA dispatch without the broken bitsandbytes import
    llm = add_lora(tiny_llm(), dict(type=LoraConfig, r=2, target_modules=['q_proj', 'v_proj']), False)
    assert isinstance(llm, PeftModel)
    assert upcycle(llm, MoEConfig()) == [0, 2]
    assert len(list(moe_blocks(llm))) == 2


# ------------------------------------------------------------------------------------------ function preserving
@pytest.mark.parametrize('kind', ['qwen2', 'llama'])
@pytest.mark.parametrize('residual', [False, True])
def test_upcycled_model_gives_the_dense_logits_at_init(kind, residual):
    llm = tiny_llm(kind)
    ids, mask = batch()
    with torch.no_grad():
        dense = llm(input_ids=ids, attention_mask=mask).logits
        upcycle(llm, MoEConfig(use_residual=residual))
        with routing_mask(llm, mask):
            moe = llm(input_ids=ids, attention_mask=mask).logits          # eval: C = S, nothing dropped
        assert all(float(b.stats['dropped']) == 0 for b in moe_blocks(llm))
        real = mask.bool()
        torch.testing.assert_close(moe[real], dense[real], rtol=1e-5, atol=1e-5)
        llm.train()   # training capacity 1.5 drops some tokens, but a large factor drops none
        for b in moe_blocks(llm):
            b.capacity_factor = 100.0
        with routing_mask(llm, mask):
            torch.testing.assert_close(llm(input_ids=ids, attention_mask=mask).logits[real], dense[real],
                                       rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- aux loss
def test_aux_loss_is_one_for_uniform_routing_and_E_for_collapse():
    block = random_block(H=8, num_experts=4)
    x = torch.randn(2, 10, 8).abs() + 0.1
    with torch.no_grad():
        block.router.weight.zero_()                       # uniform gate probs
    block(x)
    assert block.aux_loss.item() == pytest.approx(1.0, abs=1e-6)
    assert block.aux_loss.requires_grad
    with torch.no_grad():                                 # positive inputs, expert 2 +big, others -big
        block.router.weight.fill_(-100.0)
        block.router.weight[2] = 100.0
    block(x)
    assert block.aux_loss.item() == pytest.approx(4.0, abs=1e-6)
    # every top-1 choice on expert 2; the 2nd choice is a tie among the others -> the lowest index, expert 0
    torch.testing.assert_close(block.stats['load'], torch.tensor([0.5, 0.0, 0.5, 0.0]))


def test_router_aux_loss_and_stats_over_the_model():
    llm = tiny_llm()
    ids, mask = batch()
    assert router_aux_loss(llm) is None and routing_stats(llm) == {}
    upcycle(llm, MoEConfig(router_aux_loss_coef=0.05))
    assert router_aux_loss(llm) is None                   # no forward yet
    llm.train()
    with routing_mask(llm, mask):
        llm(input_ids=ids, attention_mask=mask)
    blocks = list(moe_blocks(llm))
    assert all(b.token_mask is None for b in blocks)      # cleared on exit
    total = router_aux_loss(llm)
    assert total.item() == pytest.approx(0.05 * sum(b.aux_loss.item() for b in blocks))
    total.backward()
    assert all(b.router.weight.grad is not None and b.router.weight.grad.abs().sum() > 0 for b in blocks)
    stats = routing_stats(llm)
    assert set(stats) == {f'moe/layer{i}/{k}' for i in (0, 2) for k in ('load0', 'load1', 'load2', 'load3',
                                                                          'dropped')}
    for i in (0, 2):
        assert sum(stats[f'moe/layer{i}/load{e}'] for e in range(4)) == pytest.approx(1.0)
        assert 0.0 <= stats[f'moe/layer{i}/dropped'] < 1.0


# ------------------------------------------------------------------------------------------------- capacity
def test_capacity_dropping_matches_a_hand_computed_case():
    """E=3, top-2, C=2 (min_capacity; the factor alone would give 1). Router = identity, so logits = x.
    Queue: top-1 choices in token order, then top-2 choices.
      t0 [3,2,0]: e0 slot0, e1 slot1(after t3's top-1)    -> both kept
      t1 [3,0,2]: e0 slot1, e2 slot1(after t4's top-1)    -> both kept
      t2 [3,2,0]: e0 slot2 DROP, e1 slot2 DROP            -> output 0
      t3 [0,3,2]: e1 slot0, e2 slot2 DROP                 -> weight 1 on e1
      t4 [0,2,3]: e2 slot0, e1 slot3 DROP                 -> weight 1 on e2
    """
    logits = torch.tensor([[3., 2, 0], [3, 0, 2], [3, 2, 0], [0, 3, 2], [0, 2, 3]])
    r = gshard_route(logits, top_k=2, capacity_factor=0.1, min_capacity=2)
    assert r.capacity == 2
    assert r.experts.tolist() == [[0, 1], [0, 2], [0, 1], [1, 2], [2, 1]]
    assert r.slots.tolist() == [[0, 1], [1, 1], [2, 2], [0, 2], [0, 3]]
    assert r.keep.tolist() == [[True, True], [True, True], [False, False], [True, False], [True, False]]
    p = 1 / (1 + math.exp(-1))                         # softmax([3, 2, 0]) renormalised over the two kept
    torch.testing.assert_close(r.weights, torch.tensor([[p, 1 - p], [p, 1 - p], [0, 0], [1, 0], [1, 0]]))
    assert r.dropped.item() == pytest.approx(4 / 10)
    torch.testing.assert_close(r.load, torch.tensor([3, 4, 3]) / 10.0)

    block = random_block(H=3, I=5, num_experts=3, capacity_factor=0.1, min_capacity=2)
    with torch.no_grad():
        block.router.weight.copy_(torch.eye(3))
    y = block(logits)
    with torch.no_grad():
        f = [block.experts[e](logits) for e in range(3)]
    expected = torch.stack([p * f[0][0] + (1 - p) * f[1][0], p * f[0][1] + (1 - p) * f[2][1], torch.zeros(3),
                            f[1][3], f[2][4]])
    torch.testing.assert_close(y, expected)
    block.eval()                                      # eval factor 2.0: C = ceil(5/3*2*2) = 7, nothing dropped
    block(logits)
    assert block.stats['capacity'] == 7 and block.stats['dropped'].item() == 0


def test_eval_uses_eval_capacity_and_is_deterministic():
    block = random_block(capacity_factor=0.5, eval_capacity_factor=1.0)
    x = torch.randn(4, 9, 16)
    block(x)
    assert block.stats['capacity'] == math.ceil(36 / 4 * 0.5 * 2)
    block.eval()
    with torch.no_grad():
        a, b = block(x), block(x)
    assert block.stats['capacity'] == math.ceil(36 / 4 * 1.0 * 2)
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize('residual', [False, True])
def test_padding_is_excluded_from_routing_capacity_and_aux(residual):
    block = random_block(capacity_factor=0.75, use_residual=residual)    # training capacity: drops happen
    real = torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]).bool()
    # the same real tokens with one more all-padding row and 3 more left-padding columns (garbage values)
    padded = torch.randn(3, 9, 16) * 5
    padded[:2, 3:] = real
    pmask = torch.zeros(3, 9, dtype=torch.bool)
    pmask[:2, 3:] = mask
    block.token_mask = mask
    y = block(real)
    aux, stats = block.aux_loss, block.stats
    assert stats['dropped'] > 0
    block.token_mask = pmask
    yp = block(padded)
    torch.testing.assert_close(yp[:2, 3:][mask], y[mask], rtol=1e-6, atol=1e-6)
    assert torch.equal(yp[~pmask], torch.zeros_like(yp[~pmask]))
    assert torch.equal(y[~mask], torch.zeros_like(y[~mask]))
    torch.testing.assert_close(block.aux_loss, aux)
    torch.testing.assert_close(block.stats['load'], stats['load'])
    assert block.stats['capacity'] == stats['capacity'] == math.ceil(10 / 4 * 0.75 * 2)
    # aux over the real tokens only = the aux of those tokens alone, without a mask
    block.token_mask = None
    block(real[mask])
    torch.testing.assert_close(block.aux_loss, aux)


def test_padding_rows_do_not_change_model_outputs():
    llm = tiny_llm()
    upcycle(llm, MoEConfig(capacity_factor=0.75))
    llm.train()
    ids, mask = batch()
    with torch.no_grad(), routing_mask(llm, mask[:2]):
        a = llm(input_ids=ids[:2], attention_mask=mask[:2]).logits
    extra = torch.cat([ids[:2], torch.randint(0, 64, (1, ids.shape[1]))])
    emask = torch.cat([mask[:2], torch.zeros(1, ids.shape[1], dtype=torch.long)])
    with torch.no_grad(), routing_mask(llm, emask):
        b = llm(input_ids=extra, attention_mask=emask).logits
    real = mask[:2].bool()
    torch.testing.assert_close(b[:2][real], a[real], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------- grouped vs references
@pytest.mark.parametrize('top_k,residual', [(2, False), (1, False), (2, True)])
def test_grouped_experts_equal_the_references_forward_and_backward(top_k, residual):
    block = random_block(top_k=top_k, capacity_factor=0.75, use_residual=residual)
    x0 = torch.randn(3, 8, 16)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[1, :3] = False
    mask[2, -2:] = False

    def run(fn):
        block.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        y, aux = fn(x)
        ((y * torch.linspace(-1, 1, 16)).sum() + aux).backward()
        # an expert no token reaches gets no grad in the per-token loop, zero grads in the grouped computation
        return y.detach(), aux.detach(), x.grad, {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                                  for n, p in block.named_parameters()}

    def grouped(x):
        block.token_mask = mask
        y = block(x)
        block.token_mask = None
        return y, block.aux_loss

    y, aux, gx, grads = run(grouped)
    assert block.stats['dropped'] > 0
    for ref in (lambda x: per_token_forward(block, x, mask), lambda x: onehot_forward(block, x, mask)):
        ry, raux, rgx, rgrads = run(ref)
        torch.testing.assert_close(ry, y, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(raux, aux)
        torch.testing.assert_close(rgx, gx, rtol=1e-5, atol=1e-6)
        assert set(rgrads) == set(grads)
        for n in grads:
            torch.testing.assert_close(rgrads[n], grads[n], rtol=1e-5, atol=1e-6, msg=n)
    assert grads['router.weight'].abs().sum() > 0


# ------------------------------------------------------------------------------------ checkpointing, bf16
def test_gradient_checkpointing_recomputes_the_same_routing():
    llm = tiny_llm()
    upcycle(llm, MoEConfig(capacity_factor=0.75))
    llm.train()
    ckpt = copy.deepcopy(llm)
    ckpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})
    ids, mask = batch()

    def grads(model):
        set_routing_mask(model, mask)
        out = model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False)
        loss = out.loss + router_aux_loss(model)
        with torch.no_grad():       # a no-grad forward before backward (e.g. for logging) does not matter
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        loss.backward()
        set_routing_mask(model, None)
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(llm), grads(ckpt)
    assert set(plain) == set(checkpointed)
    assert any('router' in n for n in plain)
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], rtol=1e-5, atol=1e-6, msg=n)
    # backward after the mask was cleared: the recomputation would route differently -> refused
    ckpt.zero_grad()
    with routing_mask(ckpt, mask):
        loss = ckpt(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss
    with pytest.raises(RuntimeError, match='another routing mask'):
        loss.backward()


def test_reentrant_checkpointing_is_refused():
    """Its forward runs under no_grad: the aux loss would carry no gradient to the routers."""
    llm = tiny_llm()
    upcycle(llm, MoEConfig())
    llm.train()
    llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': True})
    ids, _ = batch()
    out = llm(input_ids=ids, labels=ids, use_cache=False)
    assert not router_aux_loss(llm).requires_grad
    with pytest.raises(RuntimeError, match='use_reentrant'):
        out.loss.backward()


def test_bf16_forward_keeps_the_router_fp32():
    llm = tiny_llm('llama')
    upcycle(llm, MoEConfig())
    llm.to(torch.bfloat16)
    for b in moe_blocks(llm):
        assert b.router.weight.dtype == torch.float32
        assert b.experts[0].gate_proj.weight.dtype == torch.bfloat16
    ids, mask = batch()
    llm.train()
    with routing_mask(llm, mask):
        out = llm(input_ids=ids, attention_mask=mask, labels=ids)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    (out.loss + router_aux_loss(llm)).backward()
    for b in moe_blocks(llm):
        assert b.router.weight.grad.dtype == torch.float32 and torch.isfinite(b.router.weight.grad).all()


# ------------------------------------------------------------------------------------------ Qwen2-MoE export
def test_qwen2_moe_export_gives_the_same_logits():
    llm = tiny_llm('qwen2')
    upcycle(llm, MoEConfig())
    llm.train()
    opt = torch.optim.SGD(llm.parameters(), lr=0.2)
    for step in range(3):                            # routers and experts move away from their init
        ids, mask = batch(seed=10 + step)
        with routing_mask(llm, mask):
            out = llm(input_ids=ids, attention_mask=mask, labels=ids)
        (out.loss + router_aux_loss(llm)).backward()
        opt.step()
        opt.zero_grad()
    b0 = next(moe_blocks(llm))
    assert not torch.equal(b0.experts[0].up_proj.weight, b0.experts[1].up_proj.weight)
    llm.eval()
    cfg, state = to_qwen2_moe_state(llm)
    assert cfg.mlp_only_layers == [1, 3] and cfg.decoder_sparse_step == 1 and cfg.norm_topk_prob
    assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size) == (4, 2, 48)
    assert cfg.shared_expert_intermediate_size == 0
    hf = Qwen2MoeForCausalLM(cfg).eval()
    hf.load_state_dict(state, strict=True)
    x = torch.randn(5, 32)
    assert torch.equal(hf.model.layers[0].mlp.shared_expert(x), torch.zeros(5, 32))   # size 0: exactly 0
    ids, mask = batch(seed=3)
    with torch.no_grad(), routing_mask(llm, mask):
        ours = llm(input_ids=ids, attention_mask=mask).logits
    assert all(b.stats['dropped'].item() == 0 for b in moe_blocks(llm))
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(theirs[real], ours[real], rtol=1e-5, atol=1e-5)
    llama = tiny_llm('llama')
    upcycle(llama, MoEConfig())
    with pytest.raises(ValueError, match='Qwen2'):
        to_qwen2_moe_state(llama)


# ------------------------------------------------------------------------------------------------ timing
def test_timing_script_tiny_runs():
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
    proc = subprocess.run([sys.executable, str(ROOT / 'timing' / 'moe_layer.py'), '--tiny', '--device', 'cpu'],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    for name in ('dense FFN', 'moe grouped (ours)', 'moe one-hot einsum (DS)', 'moe per-token loop'):
        row = next(ln for ln in lines if ln.startswith(name))
        assert float(row[30:41]) > 0
        if name != 'dense FFN':     # all three MoE implementations agree on the tiny case
            assert float(row.split()[-1]) < 1e-4
