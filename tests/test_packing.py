"""Multimodal sequence packing (mg_llava.data.packing): the bin packer, the packed collate (positions, sample ids,
visual slots), attention isolation, loss and gradients equal to the unpacked batch, the dataset switch."""
import json

import pytest
import torch
from xtuner.utils import IGNORE_INDEX, IMAGE_TOKEN_INDEX

from mg_llava.data import MGLLaVADataset, mg_llava_collate_fn
from mg_llava.data.packing import pack_indices, packed_attention_mask, packing_stats
from mg_llava.errors import DataError

from test_model import make_sample, tiny_model

SPEC = dict(image_size=112, image_size_aux=256)  # the tiny assets' tower sizes


# ---------------------------------------------------------------- the packer
def test_pack_indices_fills_rows_never_splits_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 400, (500,), generator=g).tolist()
    packs = pack_indices(lengths, 1024)
    assert sorted(i for p in packs for i in p) == list(range(500))            # every sample once, whole
    assert all(sum(lengths[i] for i in p) <= 1024 for p in packs)
    assert packs == pack_indices(lengths, 1024)
    stats = packing_stats(lengths, packs, 1024)
    assert stats['fill'] > 0.95 and stats['rows'] == len(packs) and stats['tokens'] == sum(lengths)


def test_a_sample_longer_than_the_budget_is_named_or_gets_its_own_row():
    with pytest.raises(ValueError, match=r"data.json: sample 'b' has 300 tokens .* max_packed_length=256"):
        pack_indices([10, 300, 20], 256, ids=['a', 'b', 'c'], source='data.json')
    packs = pack_indices([10, 300, 20], 256, oversize='own_row')
    assert [1] in packs and sorted(i for p in packs for i in p) == [0, 1, 2]


# ---------------------------------------------------------------- the packed collate
def samples():
    """Image samples with object tokens, a text-only one, different lengths."""
    return [make_sample(3, 4, n_obj=2, seed=11), make_sample(5, 2, image=False, seed=12),
            make_sample(1, 6, n_obj=3, seed=13), make_sample(2, 3, n_obj=1, seed=14)]


def test_packed_rows_restart_positions_and_ignore_each_first_label():
    s = samples()
    batch = mg_llava_collate_fn([[s[0], s[1]], [s[2], s[3]]], return_hf_format=True)
    n = [len(x['input_ids']) for x in s]
    assert batch['input_ids'].shape == (2, max(n[0] + n[1], n[2] + n[3]))
    row0 = batch['position_ids'][0, :n[0] + n[1]].tolist()
    assert row0 == list(range(n[0])) + list(range(n[1]))
    assert batch['sequence_ids'][0, :n[0] + n[1]].tolist() == [0] * n[0] + [1] * n[1]
    assert (batch['sequence_ids'][0, n[0] + n[1]:] == -1).all()
    assert batch['labels'][0, n[0]] == IGNORE_INDEX                          # s[1]'s first token
    assert batch['ids'] == [x['id'] for x in s]


def test_packed_visual_slots_get_the_same_tokens_as_unpacked():
    model = tiny_model().eval()
    s = samples()
    flat = mg_llava_collate_fn(s, return_hf_format=True)
    packed = mg_llava_collate_fn([[s[0], s[1], s[2]], [s[3]]], return_hf_format=True)
    with torch.no_grad():
        e_flat, e_packed = model.embed_inputs(flat), model.embed_inputs(packed)
    for k, x in enumerate(s):
        n = len(x['input_ids'])
        row, start = (0, sum(len(y['input_ids']) for y in s[:k])) if k < 3 else (1, 0)
        torch.testing.assert_close(e_packed[row, start:start + n], e_flat[k, :n])


def test_packed_mask_is_block_diagonal_causal():
    seq = torch.tensor([[0, 0, 1, 1, 1, -1]])
    allowed = packed_attention_mask(seq)[0, 0] == 0
    expect = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0],
                           [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expect)


# ---------------------------------------------------------------- the model on packed batches
@pytest.mark.parametrize('supervised_only', [True, False])
def test_packed_loss_and_gradients_equal_the_unpacked_batch(supervised_only):
    model = tiny_model(freeze_llm=False).train()
    model.config.supervised_only_logits = supervised_only
    s = samples()
    grads, result = [], []
    for batch in (mg_llava_collate_fn(s, return_hf_format=True),
                  mg_llava_collate_fn([[s[0], s[1], s[2]], [s[3]]], return_hf_format=True)):
        model.zero_grad()
        loss = model(batch, mode='loss')['loss']
        loss.backward()
        result.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(result[1], result[0], rtol=1e-5, atol=0)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_token_does_not_see_the_other_samples_of_its_row():
    model = tiny_model().eval()
    s = samples()
    other = make_sample(4, 7, n_obj=2, seed=99)   # replaces s[0], the sample before s[2] in the row
    outs = []
    for first in (s[0], other):
        batch = mg_llava_collate_fn([[first, s[2]]], return_hf_format=True)
        with torch.no_grad():
            hidden, _ = model.forward_hidden(batch)
        outs.append(hidden[0, len(first['input_ids']):len(first['input_ids']) + len(s[2]['input_ids'])])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # and equals s[2] alone
        alone, _ = model.forward_hidden(mg_llava_collate_fn([s[2]], return_hf_format=True))
    torch.testing.assert_close(outs[0], alone[0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the dataset switch
def dataset(tiny_world, random_model, **kw):
    return MGLLaVADataset(tiny_world['sft'], tiny_world['images'], random_model.tokenizer, 'vicuna', max_length=256,
                          vision_spec=SPEC, num_image_tokens=random_model.num_image_tokens,
                          box_json_path=tiny_world['boxes'], **kw)


def test_dataset_packs_every_sample_once_within_the_budget(tiny_world, random_model):
    plain = dataset(tiny_world, random_model)
    packed = dataset(tiny_world, random_model, pack_to_max_length=True, max_packed_length=400)
    assert len(packed) < len(plain)
    seen = []
    for k in range(len(packed)):
        pack = packed[k]
        assert sum(len(x['input_ids']) for x in pack) <= 400
        seen += [x['id'] for x in pack]
        batch = mg_llava_collate_fn([pack], return_hf_format=True)
        assert (batch['input_ids'] == IMAGE_TOKEN_INDEX).sum() == len(batch['visual_index'])
    assert sorted(seen) == sorted(plain.text['id'])
    assert any(x.get('pixel_values') is None for k in range(len(packed)) for x in packed[k])  # text-only mixed in
    with pytest.raises(ValueError, match='max_packed_length=40'):
        dataset(tiny_world, random_model, pack_to_max_length=True, max_packed_length=40)


def test_a_bad_sample_is_dropped_from_its_pack_in_skip_mode(tiny_world, random_model, tmp_path):
    records = json.loads(open(tiny_world['sft']).read())
    records[0] = dict(records[0], image='missing.png')
    path = tmp_path / 'sft.json'
    path.write_text(json.dumps(records))
    kw = dict(pack_to_max_length=True, max_packed_length=400)
    ds = MGLLaVADataset(str(path), tiny_world['images'], random_model.tokenizer, 'vicuna', max_length=256,
                        vision_spec=SPEC, num_image_tokens=random_model.num_image_tokens,
                        box_json_path=tiny_world['boxes'], on_bad_sample='skip', **kw)
    ids = [x['id'] for k in range(len(ds)) for x in ds[k]]
    assert records[0]['id'] not in ids and len(ids) == len(records) - 1
    assert ds.skipped == {'unreadable image': 1}
    strict = MGLLaVADataset(str(path), tiny_world['images'], random_model.tokenizer, 'vicuna', max_length=256,
                            vision_spec=SPEC, num_image_tokens=random_model.num_image_tokens,
                            box_json_path=tiny_world['boxes'], **kw)
    with pytest.raises(DataError, match=f"id '{records[0]['id']}'"):
        [strict[k] for k in range(len(strict))]
