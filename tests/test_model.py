"""MGLLaVAModel: fusion, reference parameter names and formulas, sequence assembly, frozen towers."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from mg_llava.data import mg_llava_collate_fn
from mg_llava.models import ConvGateFusion, ConvNeXtTower, MGLLaVAModel
from xtuner.utils import IGNORE_INDEX, IMAGE_TOKEN_INDEX

T = 16  # 4x4 CLIP tokens (56 px / patch 14); ConvNeXt at 128 px -> last stage 4x4
S_AUX = 128


def tiny_model(aux=True, objects=True, llm=None, **kw):
    torch.manual_seed(0)
    llm = llm if llm is not None else LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, max_position_embeddings=256))
    vit = CLIPVisionModel(CLIPVisionConfig(image_size=56, patch_size=14, hidden_size=24, intermediate_size=48,
                                           num_hidden_layers=3, num_attention_heads=4))
    tower = ConvNeXtTower('convnext_atto', model_kwargs=dict(dims=(8, 8, 16, 16), depths=(1, 1, 1, 1))) if aux else None
    kw.setdefault('use_activation_checkpointing', False)
    return MGLLaVAModel(llm=llm, visual_encoder=vit, visual_encoder_aux=tower, use_object_tokens=objects, **kw)


def make_sample(n_text_before, n_text_after, n_obj=None, image=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    before = torch.randint(3, 50, (n_text_before,), generator=g).tolist()
    after = torch.randint(3, 50, (n_text_after,), generator=g).tolist()
    if not image:
        ids = before + after
        return dict(id=f's{seed}', input_ids=ids, labels=[IGNORE_INDEX] * n_text_before + after)
    slots = T + (n_obj or 0)
    sample = dict(id=f's{seed}', input_ids=before + [IMAGE_TOKEN_INDEX] * slots + after,
                  labels=[IGNORE_INDEX] * (n_text_before + slots) + after, num_image_tokens=T,
                  pixel_values=torch.randn(3, 56, 56, generator=g))
    if n_obj is not None:
        sample['pixel_values_aux'] = torch.randn(3, S_AUX, S_AUX, generator=g)
        xy = torch.randint(0, 90, (n_obj, 2), generator=g).float()
        sample['boxes'] = torch.cat([xy, xy + torch.randint(4, 38, (n_obj, 2), generator=g)], 1)
    return sample


# ---------------------------------------------------------------- fusion
def test_fusion_is_identity_at_init_and_only_projections_get_gradients():
    fuse = ConvGateFusion(24, 40)
    low, high = torch.randn(2, 16, 24, requires_grad=True), torch.randn(2, 40, 4, 4)
    out = fuse(low, high)
    assert out.shape == (2, 16, 24)
    assert torch.equal(out, low)
    out.pow(2).sum().backward()
    nonzero = {n for n, p in fuse.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert nonzero == {'slow_proj.weight', 'slow_proj.bias', 'fast_proj.weight', 'fast_proj.bias'}


def test_fusion_grid_mismatch_resampled_or_clear_error():
    low, high = torch.randn(1, 16, 8), torch.randn(1, 12, 6, 6)
    assert ConvGateFusion(8, 12)(low, high).shape == (1, 16, 8)
    with pytest.raises(ValueError, match='does not match the low-res token grid'):
        ConvGateFusion(8, 12, resample_mismatch=False)(low, high)


# ---------------------------------------------------------------- reference names and formulas
REFERENCE_ADAPTER_KEYS = (
    [f'projector.model.{i}.{w}' for i in (0, 2) for w in ('weight', 'bias')]
    + [f'bbox_projector.model.{i}.{w}' for i in (0, 2) for w in ('weight', 'bias')]
    + [f'fuse_module.{m}.{w}' for m in ('slow_conv', 'slow_proj', 'fast_conv', 'fast_proj') for w in ('weight', 'bias')]
    + [f'fuse_module.gate.{i}.{w}' for i in (0, 2) for w in ('weight', 'bias')])


def test_state_dict_holds_exactly_the_trained_parts_with_reference_names():
    pt = tiny_model(freeze_llm=True)
    assert set(pt.state_dict()) == set(REFERENCE_ADAPTER_KEYS)
    sft = tiny_model(freeze_llm=False)
    keys = set(sft.state_dict())
    assert set(REFERENCE_ADAPTER_KEYS) <= keys
    assert {k for k in keys if k not in REFERENCE_ADAPTER_KEYS} == {k for k in sft.llm.state_dict() and
                                                                      ('llm.' + n for n in sft.llm.state_dict())}


def test_reference_checkpoint_loads_and_reproduces_reference_tokens(tmp_path):
    model = tiny_model(freeze_llm=False).eval()
    torch.manual_seed(1)
    ref = {k: torch.randn_like(v) * 0.1 for k, v in model.state_dict().items()}  # a "released" checkpoint
    torch.save({'state_dict': ref}, tmp_path / 'iter_10805.pth')
    fresh = tiny_model(freeze_llm=False, pretrained_pth=str(tmp_path / 'iter_10805.pth')).eval()
    for k, v in ref.items():
        assert torch.equal(fresh.state_dict()[k], v), k

    batch = mg_llava_collate_fn([make_sample(2, 3, n_obj=3, seed=1), make_sample(1, 2, n_obj=2, seed=2)],
                                return_hf_format=True)
    got = fresh.encode_visual(batch)

    # The reference formulas, written out with the checkpoint's tensors.
    def mlp(x, p):
        return F.linear(F.gelu(F.linear(x, ref[p + '.model.0.weight'], ref[p + '.model.0.bias'])),
                        ref[p + '.model.2.weight'], ref[p + '.model.2.bias'])
    low = fresh.visual_encoder(batch['pixel_values'], output_hidden_states=True).hidden_states[-2][:, 1:]
    stages = fresh.visual_encoder_aux(batch['pixel_values_aux'])
    fm = lambda n: (ref[f'fuse_module.{n}.weight'], ref[f'fuse_module.{n}.bias'])  # noqa: E731
    hi = F.conv2d(F.gelu(F.conv2d(stages[-1], *fm('slow_conv'))), *fm('slow_proj')).flatten(2).transpose(1, 2)
    g = int(math.sqrt(low.shape[1]))
    lo = low.transpose(1, 2).reshape(2, -1, g, g)
    lo = lo + F.conv2d(F.gelu(F.conv2d(lo, *fm('fast_conv'), padding=3, groups=lo.shape[1])), *fm('fast_proj'))
    lo = lo.flatten(2).transpose(1, 2)
    gate = F.linear(F.gelu(F.linear(torch.cat([lo, hi], -1).mean(1), *fm('gate.0'))), *fm('gate.2'))
    img_tokens = mlp(lo + gate.tanh().unsqueeze(1) * hi, 'projector')
    h0 = stages[0].shape[-1]
    roi_map = torch.cat([stages[0]] + [F.interpolate(s, size=(h0, h0), mode='bilinear', align_corners=False)
                                       for s in stages[1:]], 1)
    rois = torch.cat([batch['box_batch_index'].float()[:, None], batch['boxes']], 1)
    pooled = roi_align(roi_map, rois, output_size=56, spatial_scale=h0 / S_AUX, sampling_ratio=-1,
                       aligned=False).mean((2, 3))
    obj_tokens = mlp(pooled, 'bbox_projector')
    want = torch.cat([img_tokens.flatten(0, 1), obj_tokens])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_missing_trained_part_fails_loudly(tmp_path):
    model = tiny_model(freeze_llm=True)
    sd = model.state_dict()
    del sd['bbox_projector.model.2.bias']
    torch.save(sd, tmp_path / 'partial.pth')
    with pytest.raises(KeyError, match='bbox_projector.model.2.bias'):
        tiny_model(freeze_llm=True, pretrained_pth=str(tmp_path / 'partial.pth'))


def test_object_box_position_adds_a_box_embedding_and_is_a_required_trained_part(tmp_path):
    plain = tiny_model(freeze_llm=True).eval()
    model = tiny_model(freeze_llm=True, object_box_position=True).eval()
    assert plain.box_position_embed is None
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {f'box_position_embed.model.{i}.{w}' for i in (0, 2) for w in ('weight', 'bias')}
    model.load_state_dict(plain.state_dict(), strict=False)  # same weights apart from the new branch
    batch = mg_llava_collate_fn([make_sample(2, 3, n_obj=3, seed=1), make_sample(1, 2, n_obj=2, seed=2)],
                                return_hf_format=True)
    with torch.no_grad():
        base = plain.encode_visual(batch)
        torch.testing.assert_close(model.encode_visual(batch), base)  # a no-op at init (zero last layer)
        torch.nn.init.normal_(model.box_position_embed.model[2].weight)  # as if trained
        got = model.encode_visual(batch)
        n_img = base.shape[0] - 5
        want_obj = base[n_img:] + model.box_position_embed(batch['boxes'] / S_AUX)
    torch.testing.assert_close(got[:n_img], base[:n_img])
    torch.testing.assert_close(got[n_img:], want_obj)
    torch.save(plain.state_dict(), tmp_path / 'no_position.pth')  # a checkpoint without the branch
    with pytest.raises(KeyError, match='box_position_embed'):
        tiny_model(freeze_llm=True, object_box_position=True, pretrained_pth=str(tmp_path / 'no_position.pth'))


def test_work_dir_with_last_checkpoint_resolves(tmp_path):
    model = tiny_model(freeze_llm=True)
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'iter_7.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_7.pth'))
    loaded = tiny_model(freeze_llm=True, pretrained_pth=str(tmp_path))
    assert torch.equal(loaded.projector.model[0].weight, model.projector.model[0].weight)


# ---------------------------------------------------------------- sequence assembly
def naive_embeds(model, samples):
    """Upstream-style per-sample loop: text chunks, then image tokens, then that sample's object tokens."""
    emb = model.llm.get_input_embeddings()
    rows, img_j = [], 0
    batch = mg_llava_collate_fn(samples, return_hf_format=True)
    feats = model.encode_visual(batch) if batch['pixel_values'] is not None else None
    n_img = 0 if batch['pixel_values'] is None else len(batch['pixel_values'])
    obj_start, counts = n_img * T, [len(s.get('boxes', [])) for s in samples if 'pixel_values' in s]
    for s in samples:
        ids = torch.tensor(s['input_ids'])
        if 'pixel_values' not in s:
            rows.append(emb(ids))
            continue
        k = int((ids == IMAGE_TOKEN_INDEX).nonzero()[0])
        n_obj = counts[img_j]
        off = obj_start + sum(counts[:img_j])
        vis = torch.cat([feats[img_j * T:(img_j + 1) * T], feats[off:off + n_obj]])
        rows.append(torch.cat([emb(ids[:k]), vis, emb(ids[k + T + n_obj:])]))
        img_j += 1
    L = max(len(r) for r in rows)
    return torch.stack([F.pad(r, (0, 0, 0, L - len(r))) for r in rows]), batch


@pytest.mark.parametrize('padding_side', ['right', 'left'])
def test_masked_scatter_assembly_equals_naive_loop(padding_side):
    model = tiny_model().eval()
    samples = [make_sample(3, 4, n_obj=2, seed=3), make_sample(5, 2, image=False, seed=4),
               make_sample(1, 6, n_obj=5, seed=5), make_sample(2, 2, n_obj=1, seed=6)]
    want, _ = naive_embeds(model, samples)
    batch = mg_llava_collate_fn(samples, padding_side=padding_side, return_hf_format=True)
    got = model.embed_inputs(batch)
    mask = batch['attention_mask']
    for i in range(len(samples)):
        n = int(mask[i].sum())
        torch.testing.assert_close(got[i][mask[i]], want[i, :n])


def test_text_only_batch_trains_and_keeps_vision_parameters_in_the_graph():
    model = tiny_model(freeze_llm=True).train()
    batch = mg_llava_collate_fn([make_sample(4, 5, image=False, seed=s) for s in range(3)], return_hf_format=True)
    loss = model(batch, mode='loss')['loss']
    assert torch.isfinite(loss)
    loss.backward()
    assert model.projector.model[0].weight.grad is not None  # zero, but present: DDP/ZeRO see every param
    assert len(batch['input_ids']) == 3  # no extra rows (upstream bug appended one per text-only sample)


def test_frozen_towers_run_in_eval_without_autograd():
    model = tiny_model(freeze_llm=True)
    model.train()
    assert not model.visual_encoder.training and not model.visual_encoder_aux.training
    assert model.projector.training and model.llm.training
    seen = {}

    def record(name, value):
        seen[name] = value  # returns None: a hook must not replace the output

    model.visual_encoder_aux.register_forward_hook(lambda m, i, o: record('aux', torch.is_grad_enabled()))
    # low_res_features runs the ViT layers directly: hook one of them
    model.visual_encoder.vision_model.encoder.layers[0].register_forward_hook(
        lambda m, i, o: record('vit_layer', o[0].requires_grad))
    batch = mg_llava_collate_fn([make_sample(2, 3, n_obj=2, seed=7)], return_hf_format=True)
    model(batch, mode='loss')['loss'].backward()
    assert seen['aux'] is False and seen['vit_layer'] is False
    assert all(p.grad is None for p in model.visual_encoder.parameters())
    assert all(p.grad is None for p in model.visual_encoder_aux.parameters())
    assert model.fuse_module.slow_proj.weight.grad is not None


def test_llava15_mode_has_no_extra_branches():
    model = tiny_model(aux=False)
    assert model.fuse_module is None and model.bbox_projector is None
    batch = mg_llava_collate_fn([make_sample(2, 3, seed=8), make_sample(3, 3, image=False, seed=9)],
                                return_hf_format=True)
    assert batch['boxes'].shape == (0, 4)
    assert torch.isfinite(model(batch, mode='loss')['loss'])
    assert set(model.state_dict()) == {k for k in model.state_dict() if k.startswith(('projector.', 'llm.'))}


def test_low_res_features_equal_hidden_states_minus_two():
    model = tiny_model()
    px = torch.randn(2, 3, 56, 56)
    from mg_llava.models import low_res_features
    want = model.visual_encoder(px, output_hidden_states=True).hidden_states[-2][:, 1:]
    torch.testing.assert_close(low_res_features(model.visual_encoder, px, -2), want)


def test_token_count_mismatch_is_a_clear_error():
    model = tiny_model()
    s = make_sample(1, 1, n_obj=1, seed=10)
    batch = mg_llava_collate_fn([s], return_hf_format=True)
    batch['num_image_tokens'] = 9
    with pytest.raises(ValueError, match='image tokens per image'):
        model.encode_visual(batch)


def test_image_size_mismatch_names_the_vision_spec_before_the_tower_runs():
    model = tiny_model()
    batch = mg_llava_collate_fn([make_sample(1, 1, n_obj=1, seed=10)], return_hf_format=True)
    batch['pixel_values'] = F.interpolate(batch['pixel_values'], size=(112, 112))   # a 112 px vision_spec
    with pytest.raises(ValueError, match=r'vision_spec.image_size=112 but the CLIP tower takes 56 px images '
                                         r'\(patch 14 -> 16 tokens\); set vision_spec image_size=56'):
        model.encode_visual(batch)


def test_supervised_only_logits_equal_full_hf_loss():
    model = tiny_model(freeze_llm=False).train()
    samples = [make_sample(3, 4, n_obj=2, seed=11), make_sample(5, 2, image=False, seed=12),
               make_sample(1, 6, n_obj=3, seed=13)]
    batch = mg_llava_collate_fn(samples, return_hf_format=True)
    torch.manual_seed(0)
    fused = model(batch, mode='loss')['loss']
    fused.backward()
    g_fused = model.projector.model[0].weight.grad.clone()
    model.zero_grad()
    model.config.supervised_only_logits = False
    full = model(batch, mode='loss')['loss']
    full.backward()
    torch.testing.assert_close(fused, full)
    torch.testing.assert_close(g_fused, model.projector.model[0].weight.grad)


def test_trainable_vit_has_no_parameter_without_gradient():
    model = tiny_model(freeze_visual_encoder=False, freeze_llm=False).train()
    batch = mg_llava_collate_fn([make_sample(2, 3, n_obj=2, seed=14)], return_hf_format=True)
    model(batch, mode='loss')['loss'].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_tower_dtype_casts_frozen_towers_only_and_trains():
    """tower_dtype='bfloat16': frozen towers' weights in bf16, trained parts untouched, the loss close to fp32's
    and the adapters get gradients (CPU, no autocast: the towers cast their input, fusion/pooling cast back)."""
    samples = [make_sample(3, 4, n_obj=2, seed=21), make_sample(2, 5, n_obj=1, seed=22)]
    batch = mg_llava_collate_fn(samples, return_hf_format=True)
    ref = tiny_model(freeze_llm=False).train()
    low = tiny_model(freeze_llm=False, tower_dtype='bfloat16').train()
    assert {p.dtype for p in low.visual_encoder.parameters()} == {torch.bfloat16}   # frozen by default
    assert {p.dtype for p in low.visual_encoder_aux.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in low.projector.parameters()} == {p.dtype for p in low.llm.parameters()} == {torch.float32}
    loss_ref, loss_low = ref(batch, mode='loss')['loss'], low(batch, mode='loss')['loss']
    torch.testing.assert_close(loss_low, loss_ref, rtol=2e-2, atol=0)
    loss_low.backward()
    assert low.projector.model[0].weight.grad is not None
    trained_vit = tiny_model(freeze_visual_encoder=False, tower_dtype='bfloat16')
    assert {p.dtype for p in trained_vit.visual_encoder.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match='tower_dtype'):
        tiny_model(tower_dtype='bf16')


def test_llm_kernels_liger_is_validated_and_names_its_dependency():
    """llm_kernels: only 'liger'; without liger-kernel (this CPU venv) a clear error naming it; never saved with
    the weights (an export must load on a host without CUDA). The fused path itself: the GPU test below."""
    with pytest.raises(ValueError, match='llm_kernels'):
        tiny_model(llm_kernels='fused')
    import importlib.util
    if importlib.util.find_spec('liger_kernel') is None:
        with pytest.raises(ImportError, match='liger-kernel'):
            tiny_model(llm_kernels='liger')
    from mg_llava.models import MGLLaVAConfig
    cfg = MGLLaVAConfig(llm='x', visual_encoder='y', llm_kernels='liger')
    assert cfg.to_dict()['llm_kernels'] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (liger-kernel is Triton)')
def test_liger_kernels_give_the_plain_loss_and_gradients_on_gpu():
    """On a GPU the fused path must equal the plain one; a GPU host without liger-kernel gets the clear error (the
    wheelhouse installs it: timing/gpu_check.sh)."""
    import importlib.util
    if importlib.util.find_spec('liger_kernel') is None:
        with pytest.raises(ImportError, match='pip install liger-kernel'):
            tiny_model(llm_kernels='liger')
        return
    samples = [make_sample(3, 4, n_obj=2, seed=31), make_sample(2, 5, image=False, seed=32)]
    batch = {k: (v.cuda() if isinstance(v, torch.Tensor) else v)
             for k, v in mg_llava_collate_fn(samples, return_hf_format=True).items()}
    out = []
    for kernels in (None, 'liger'):
        model = tiny_model(freeze_llm=False, llm_kernels=kernels).cuda().train()
        loss = model(batch, mode='loss')['loss']
        loss.backward()
        out.append((loss.detach(), model.projector.model[0].weight.grad.clone()))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-3, atol=1e-5)
