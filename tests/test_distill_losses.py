"""Distillation / preference losses (mg_llava/models/losses.py): spec §12 (b), (d), (e), the KD mask shift,
chunked == unchunked, vocabulary slicing, the empty-batch case; and `timing/kd_loss.py --small`."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mg_llava.data.collate import mg_llava_collate_fn
from mg_llava.models import losses
from mg_llava.models.losses import (KD_KINDS, all_token_positions, kd_loss, preference_loss, response_positions,
                                    sequence_logps)

ROOT = Path(__file__).resolve().parents[1]
I = -100


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    # tiny tensors: on a shared 2-core host two threads mostly wait on each other at each of the many small ops
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def head(h_in, vocab, seed, dtype=torch.float64):
    torch.manual_seed(seed)
    lin = nn.Linear(h_in, vocab, bias=True).to(dtype)
    with torch.no_grad():
        lin.weight.mul_(3.0)     # sharper distributions than the default init: a less trivial KL
    return lin


def batch(seed=0, b=3, length=9, hs=6, ht=10, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 20, (b, length), generator=g)
    labels[torch.rand(b, length, generator=g) < 0.4] = I
    s = torch.randn(b, length, hs, generator=g, dtype=dtype, requires_grad=True)
    t = torch.randn(b, length, ht, generator=g, dtype=dtype)
    return labels, s, t


def dense_kd(s_hidden, t_hidden, s_head, t_head, positions, kind, tau=1.0, vocab=None):
    """Unchunked formulation: full logits at every position, then select (what the reference does, shifted)."""
    zs, zt = s_head(s_hidden)[:, :-1], t_head(t_hidden)[:, :-1].detach()
    v = vocab or min(zs.shape[-1], zt.shape[-1])
    zs, zt = zs.reshape(-1, zs.shape[-1])[positions, :v] / tau, zt.reshape(-1, zt.shape[-1])[positions, :v] / tau
    logq, logp = zs.log_softmax(-1), zt.log_softmax(-1)
    q, p = logq.exp(), logp.exp()
    if kind == 'forward_kl':
        row = (p * (logp - logq)).sum(-1)
    elif kind == 'forward_kl_ce':
        row = -(p * logq).sum(-1)
    elif kind == 'reverse_kl':
        row = (q * (logq - logp)).sum(-1)
    else:
        m = (p + q) / 2
        row = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
    return row.mean() * tau ** 2


# ------------------------------------------------------------------------------------------------ positions
def test_kd_mask_shift_hand_built():
    labels = torch.tensor([[I, I, 5, 6, 2, I],       # prompt, prompt, answer 5 6, EOS 2, padding
                           [I, 7, 2, I, I, I]])
    # position t (predicting token t+1) is distilled when labels[t+1] is supervised; L-1 = 5 positions per row
    assert response_positions(labels).tolist() == [1, 2, 3, 5 + 0, 5 + 1]
    # the reference's unshifted mask would pick t = 2, 3, 4 in row 0: not the position predicting the first
    # answer token (t=1) but the one after the EOS (t=4)
    assert 1 in response_positions(labels).tolist() and 4 not in response_positions(labels).tolist()
    assert torch.equal(losses.targets_at(labels, response_positions(labels)), torch.tensor([5, 6, 2, 7, 2]))


def test_all_token_positions_excludes_padding_both_sides():
    mask = torch.tensor([[1, 1, 1, 0, 0],            # right padding
                         [0, 0, 1, 1, 1]])           # left padding
    assert all_token_positions(mask).tolist() == [0, 1, 4 + 2, 4 + 3]
    assert all_token_positions(mask.bool()).tolist() == [0, 1, 6, 7]


@pytest.mark.parametrize('side', ['right', 'left'])
def test_response_positions_equal_collate_supervised_index(side):
    instances = [dict(input_ids=[1, 2, 3, 4, 5], labels=[I, I, 3, 4, 5]),
                 dict(input_ids=[1, 2, 3], labels=[I, 2, 3]),
                 dict(input_ids=[1, 2, 3, 4, 5, 6, 7], labels=[I, I, I, I, 5, I, 7])]
    data = mg_llava_collate_fn(instances, padding_side=side)['data']
    assert torch.equal(response_positions(data['labels']), data['supervised_index'])
    # and both select the rows `logits_at` reads
    _, s, _ = batch(length=data['labels'].shape[1], b=3)
    lin = head(6, 11, 1)
    torch.testing.assert_close(losses.logits_at(lin, s, data['supervised_index']),
                               lin(s[:, :-1].reshape(-1, 6)[response_positions(data['labels'])]).float())


# ------------------------------------------------------------------------------------------------ KD
@pytest.mark.parametrize('kind', KD_KINDS)
def test_kd_teacher_vs_itself(kind):
    """spec §12 (b): KD(teacher, teacher) = H(p_T) for the CE form, 0 for the divergences; zero gradient."""
    labels, _, t = batch(seed=3, hs=10)
    lin = head(10, 13, 2)
    pos = response_positions(labels)
    student = t.clone().requires_grad_()
    loss = kd_loss(student, t, lin, lin, pos, kind=kind)
    loss.backward()
    if kind == 'forward_kl_ce':
        logp = lin(t[:, :-1].reshape(-1, 10)[pos]).log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1).mean()
        assert loss.item() == pytest.approx(entropy.item(), rel=1e-12)
        assert entropy.item() > 0.1
    else:
        assert abs(loss.item()) < 1e-12
    assert student.grad.abs().max().item() < 1e-12
    assert lin.weight.grad.abs().max().item() < 1e-12


@pytest.mark.parametrize('kind', KD_KINDS)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_kd_chunked_equals_unchunked(kind, dtype):
    labels, s, t = batch(seed=5, b=4, length=11, dtype=dtype)
    s_head, t_head = head(6, 17, 7, dtype), head(10, 17, 8, dtype)
    pos = response_positions(labels)
    n = pos.numel()
    assert n > 3
    ref = dense_kd(s, t, s_head, t_head, pos, kind)
    g_ref = torch.autograd.grad(ref, [s, s_head.weight, s_head.bias])
    tol = dict(rel=1e-6) if dtype == torch.float32 else dict(rel=1e-12)
    for chunk in (1, 4, 7, n - 1, n, 1024):         # n - 1 does not divide n
        out = kd_loss(s, t, s_head, t_head, pos, kind=kind, chunk_size=chunk)
        g = torch.autograd.grad(out, [s, s_head.weight, s_head.bias])
        assert out.item() == pytest.approx(ref.item(), **tol), chunk
        assert out.dtype == dtype
        for a, b in zip(g, g_ref):
            atol = 1e-6 if dtype == torch.float32 else 1e-12
            torch.testing.assert_close(a, b, rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=atol)


def test_kd_no_teacher_grad_and_teacher_hidden_untouched():
    labels, s, t = batch(seed=1)
    s_head, t_head = head(6, 12, 1), head(10, 12, 2)
    t = t.clone().requires_grad_()
    kd_loss(s, t, s_head, t_head, response_positions(labels), chunk_size=2).backward()
    assert t.grad is None and t_head.weight.grad is None
    assert s.grad is not None and s_head.weight.grad is not None


def test_kd_no_selected_position_is_zero_with_grad():
    labels, s, t = batch(seed=2)
    s_head, t_head = head(6, 12, 1), head(10, 12, 2)
    pos = response_positions(torch.full_like(labels, I))
    assert pos.numel() == 0
    for kind in KD_KINDS:
        loss = kd_loss(s, t, s_head, t_head, pos, kind=kind)
        assert loss.item() == 0.0 and math.isfinite(loss.item()) and loss.grad_fn is not None
        s.grad, s_head.weight.grad = None, None
        loss.backward()
        assert torch.count_nonzero(s.grad) == 0 and torch.count_nonzero(s_head.weight.grad) == 0


def test_kd_vocab_sliced_to_common_size():
    labels, s, t = batch(seed=4)
    s_head, t_head = head(6, 12, 1), head(10, 15, 2)          # teacher head larger (padding rows)
    pos = response_positions(labels)
    for kind in KD_KINDS:
        got = kd_loss(s, t, s_head, t_head, pos, kind=kind)
        assert got.item() == pytest.approx(dense_kd(s, t, s_head, t_head, pos, kind, vocab=12).item(), rel=1e-12)
        got = kd_loss(s, t, s_head, t_head, pos, kind=kind, vocab_size=9)
        assert got.item() == pytest.approx(dense_kd(s, t, s_head, t_head, pos, kind, vocab=9).item(), rel=1e-12)
    # a callable head (no out_features): sliced from the logits' shapes, same value
    got = kd_loss(s, t, lambda h: s_head(h), lambda h: t_head(h), pos)
    assert got.item() == pytest.approx(dense_kd(s, t, s_head, t_head, pos, 'forward_kl', vocab=12).item(), rel=1e-12)
    with pytest.raises(ValueError, match='vocab_size 13'):
        kd_loss(s, t, s_head, t_head, pos, vocab_size=13)
    with pytest.raises(ValueError, match='vocab_size 13'):
        kd_loss(s, t, lambda h: s_head(h), lambda h: t_head(h), pos, vocab_size=13)


@pytest.mark.parametrize('kind', KD_KINDS)
def test_kd_temperature(kind):
    labels, s, t = batch(seed=6)
    s_head, t_head = head(6, 12, 1), head(10, 12, 2)
    pos = response_positions(labels)
    tau = 2.5
    got = kd_loss(s, t, s_head, t_head, pos, kind=kind, temperature=tau, chunk_size=4)
    assert got.item() == pytest.approx(dense_kd(s, t, s_head, t_head, pos, kind, tau=tau).item(), rel=1e-12)
    # = tau^2 times the tau-1 loss of the logits divided by tau
    scaled = kd_loss(s, t, lambda h: s_head(h) / tau, lambda h: t_head(h) / tau, pos, kind=kind)
    assert got.item() == pytest.approx(tau ** 2 * scaled.item(), rel=1e-12)


def test_kd_forward_kl_ce_minus_entropy_is_forward_kl():
    labels, s, t = batch(seed=8)
    s_head, t_head = head(6, 12, 1), head(10, 12, 2)
    pos = response_positions(labels)
    ce = kd_loss(s, t, s_head, t_head, pos, kind='forward_kl_ce')
    kl = kd_loss(s, t, s_head, t_head, pos, kind='forward_kl')
    entropy = kd_loss(t, t, t_head, t_head, pos, kind='forward_kl_ce')
    assert ce.item() == pytest.approx(kl.item() + entropy.item(), rel=1e-12)
    g_ce, g_kl = (torch.autograd.grad(x, s)[0] for x in (ce, kl))
    torch.testing.assert_close(g_ce, g_kl)


def test_kd_rejects_bad_arguments():
    labels, s, t = batch()
    s_head, t_head = head(6, 12, 1), head(10, 12, 2)
    pos = response_positions(labels)
    with pytest.raises(ValueError, match='unknown KD kind'):
        kd_loss(s, t, s_head, t_head, pos, kind='kl')
    with pytest.raises(ValueError, match='differ in'):
        kd_loss(s, t[:, :-1], s_head, t_head, pos)
    with pytest.raises(ValueError, match='temperature'):
        kd_loss(s, t, s_head, t_head, pos, temperature=0)


# ------------------------------------------------------------------------------------------------ sequence log-probs
@pytest.mark.parametrize('chunk', [1, 4, 1024])
def test_sequence_logps_equal_full_logits(chunk):
    labels, s, _ = batch(seed=9, b=4, length=10)
    lin = head(6, 19, 3)
    logits = lin(s).log_softmax(-1)[:, :-1]                     # (B, L-1, V), the direct computation
    tgt = labels[:, 1:]
    mask = tgt != I
    direct = (logits.gather(2, tgt.clamp(min=0)[..., None]).squeeze(-1) * mask).sum(-1)
    got = sequence_logps(s, lin, labels, chunk_size=chunk)
    assert got.shape == (4,)
    torch.testing.assert_close(got, direct, rtol=1e-12, atol=1e-12)
    g1 = torch.autograd.grad(got.sum(), [s, lin.weight])
    g2 = torch.autograd.grad(direct.sum(), [s, lin.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_sequence_logps_sample_without_response_and_empty_batch():
    labels, s, _ = batch(seed=10, b=3)
    labels[1] = I
    lin = head(6, 20, 3)
    out = sequence_logps(s, lin, labels, chunk_size=2)
    assert out[1].item() == 0.0 and out[0].item() < 0
    empty = sequence_logps(s, lin, torch.full_like(labels, I))
    assert empty.tolist() == [0.0, 0.0, 0.0] and empty.grad_fn is not None
    empty.sum().backward()


# ------------------------------------------------------------------------------------------------ preference losses
def logps(*rows):
    return [torch.tensor(r, dtype=torch.float64, requires_grad=True) for r in rows]


def test_dpo_is_log2_and_kto_pair_half_when_policy_is_reference():
    """spec §12 (d), (e)."""
    pc, pr = logps([-3.0, -7.5, -1.2], [-4.0, -2.0, -9.0])
    loss, m = preference_loss(pc, pr, pc.detach(), pr.detach(), kind='sigmoid')
    assert loss.item() == pytest.approx(math.log(2), rel=1e-12)
    assert m['margins'].item() == 0 and m['accuracy'].item() == 0
    for kl in ('batch_detached', 'reference'):
        loss, _ = preference_loss(pc, pr, pc.detach(), pr.detach(), kind='kto_pair', kto_kl=kl)
        assert loss.item() == pytest.approx(0.5, rel=1e-12)


def test_hinge_ipo_dpo_hand_case():
    # r_c = 1 - (-2) = 3, r_r = -5 - (-5) = 0 -> h = 3
    pc, pr, rc, rr = logps([1.0], [-5.0], [-2.0], [-5.0])
    beta = 0.1
    assert preference_loss(pc, pr, rc, rr, kind='hinge', beta=beta)[0].item() == pytest.approx(0.7)
    assert preference_loss(pc, pr, rc, rr, kind='ipo', beta=beta)[0].item() == pytest.approx((3 - 5) ** 2)
    assert preference_loss(pc, pr, rc, rr, kind='hinge', beta=0.5)[0].item() == 0.0
    dpo, m = preference_loss(pc, pr, rc, rr, kind='sigmoid', beta=beta)
    assert dpo.item() == pytest.approx(math.log1p(math.exp(-0.3)))
    assert m['rewards_chosen'].item() == pytest.approx(0.3) and m['rewards_rejected'].item() == 0
    assert m['margins'].item() == pytest.approx(0.3) and m['accuracy'].item() == 1.0
    assert all(not v.requires_grad for v in m.values())
    smooth, _ = preference_loss(pc, pr, rc, rr, kind='sigmoid', beta=beta, label_smoothing=0.2)
    assert smooth.item() == pytest.approx(0.8 * math.log1p(math.exp(-0.3)) + 0.2 * math.log1p(math.exp(0.3)))


def test_kto_pair_hand_case_and_detached_reference_point():
    beta = 0.5
    pc, pr, rc, rr = logps([1.0, 3.0], [-1.0, -4.0], [0.0, 0.0], [0.0, -2.0])
    r_c, r_r = [1.0, 3.0], [-1.0, -2.0]
    kl_c, kl_r = max(sum(r_c) / 2, 0), max(sum(r_r) / 2, 0)            # 2.0, 0.0

    def sig(x):
        return 1 / (1 + math.exp(-x))
    want = (sum(1 - sig(beta * (x - kl_r)) for x in r_c) + sum(1 - sig(beta * (kl_c - x)) for x in r_r)) / 4
    det, _ = preference_loss(pc, pr, rc, rr, kind='kto_pair', beta=beta)
    ref, _ = preference_loss(pc, pr, rc, rr, kind='kto_pair', beta=beta, kto_kl='reference')
    assert det.item() == pytest.approx(want) and ref.item() == pytest.approx(want)
    # the gradients differ: with the reference's non-detached estimate, KL_c's gradient reaches the chosen log-probs
    g_det = torch.autograd.grad(det, pc)[0]
    g_ref = torch.autograd.grad(ref, pc)[0]
    want_det = [-(sig(beta * (x - kl_r)) * (1 - sig(beta * (x - kl_r)))) * beta / 4 for x in r_c]
    torch.testing.assert_close(g_det, torch.tensor(want_det, dtype=torch.float64))
    assert not torch.allclose(g_det, g_ref)
    # explicit reference points (e.g. averaged over ranks), used detached
    given, _ = preference_loss(pc, pr, rc, rr, kind='kto_pair', beta=beta, kto_kl=(torch.tensor(2.0), 0.0))
    assert given.item() == pytest.approx(want)


def test_preference_rejects_unknown_kind():
    pc, pr = logps([0.0], [0.0])
    with pytest.raises(ValueError, match="unknown preference loss kind 'dpo'"):
        preference_loss(pc, pr, pc, pr, kind='dpo')
    with pytest.raises(ValueError, match='unknown kto_kl'):
        preference_loss(pc, pr, pc, pr, kind='kto_pair', kto_kl='batch')
    with pytest.raises(ValueError, match='beta'):
        preference_loss(pc, pr, pc, pr, beta=0)


# ------------------------------------------------------------------------------------------------ timing script
def test_timing_kd_loss_small(capsys):
    """`timing/kd_loss.py --small`, in-process (the package is already imported here)."""
    spec = importlib.util.spec_from_file_location('timing_kd_loss', ROOT / 'timing' / 'kd_loss.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(['--small', '--threads', '1'])      # the module fixture restores the thread count
    out = capsys.readouterr().out
    summary = [ln for ln in out.splitlines() if ln.startswith('summary ')]
    assert len(summary) == 1, out
    fields = dict(kv.split('=') for kv in summary[0].split()[1:])
    assert float(fields['memory_ratio']) <= 0.1, out
    # chunk-sized: the peak is a few (chunk, V) fp32 tensors (+ the head's weight gradient), whatever B x L
    assert float(fields['chunk_units']) <= 6, out
    assert float(fields['loss_rel_diff']) <= 1e-5, out
    assert fields['goal_met'] == 'yes'
