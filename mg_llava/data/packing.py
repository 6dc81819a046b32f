"""Multimodal sequence packing: several samples per row up to a token budget, each still attending only to itself.

    the dataset's lengths (text + T image + object tokens: `modality_length`, an upper bound)
      -> pack_indices: best-fit decreasing, deterministic, never splits a sample
      -> MGLLaVADataset(pack_to_max_length=True) item = a pack (a list of samples)
      -> mg_llava_collate_fn: one row per pack; position_ids restart at 0 for every sample; `sequence_ids` (B, L)
         = which sample of its row a token belongs to (-1: padding); the first label of every sample is ignored
         (it would otherwise be predicted from the previous sample's last token)
      -> the model (llm_attention_inputs) isolates the samples:
           flash_attention_2  no attention mask + the restarting position_ids: transformers' varlen path
                              (cu_seqlens from position_ids == 0), padding tokens are 1-token sequences
           sdpa / eager       a (B, 1, L, L) block-diagonal causal additive mask (the CPU path)
The loss reads the same supervised tokens as the unpacked batch and is their token mean over the batch, so it
equals the unpacked loss (up to summation order); so do the gradients. Visual slots keep their row-major order
(pack by pack, sample by sample), so `visual_index` needs nothing new.
"""
from bisect import bisect_left, insort

import torch

OVERSIZE = ('error', 'own_row')


def pack_indices(lengths, max_len, oversize='error', ids=None, source=None):
    """lengths: token counts (> 0) -> packs: lists of indices whose lengths sum to <= max_len, every index once.

    Best-fit decreasing: longest first, each into the fullest pack it still fits (a new one when none does).
    oversize: a sample longer than max_len -> 'error' (ValueError naming it: ids[i] and `source`) or 'own_row'
    (a pack of its own, longer than the budget)."""
    if oversize not in OVERSIZE:
        raise ValueError(f'oversize must be one of {OVERSIZE}, got {oversize!r}')
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    packs, free = [], []  # free: sorted (room left, pack number) of the packs that can still take a sample
    for i in order:
        n = int(lengths[i])
        if n > max_len:
            if oversize == 'error':
                name = ids[i] if ids is not None else f'#{i}'
                raise ValueError(f'{source or "dataset"}: sample {name!r} has {n} tokens (text + visual), more '
                                 f'than max_packed_length={max_len}; raise the budget, or oversize="own_row"')
            packs.append([i])
            continue
        k = bisect_left(free, (n, -1))
        if k == len(free):
            packs.append([i])
            room, p = max_len - n, len(packs) - 1
        else:
            room, p = free.pop(k)
            packs[p].append(i)
            room -= n
        if room > 0:
            insort(free, (room, p))
    return packs


def packing_stats(lengths, packs, max_len):
    """{'rows', 'samples', 'tokens', 'fill'}: fill = real tokens / (rows * max_len)."""
    tokens = sum(int(lengths[i]) for p in packs for i in p)
    return dict(rows=len(packs), samples=sum(len(p) for p in packs), tokens=tokens,
                fill=tokens / max(1, len(packs) * max_len))


def packed_attention_mask(sequence_ids, dtype=torch.float32):
    """sequence_ids (B, L) (sample number within the row, -1 = padding) -> (B, 1, L, L) additive mask: 0 where
    query i may see key j (same sample and j <= i), the dtype's min elsewhere. Padding sees earlier padding only,
    so no row is fully masked (no NaN from softmax)."""
    same = sequence_ids[:, :, None] == sequence_ids[:, None, :]
    L = sequence_ids.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=sequence_ids.device).tril()
    mask = torch.zeros(same.shape, dtype=dtype, device=sequence_ids.device)
    return mask.masked_fill_(~(same & causal), torch.finfo(dtype).min).unsqueeze(1)


def llm_attention_inputs(llm, data, dtype):
    """{'attention_mask', 'position_ids'} for the LLM's decoder: the batch's own for an unpacked batch; for a
    packed one (data['sequence_ids']) the isolation of the module docstring, by attention implementation."""
    seq = data.get('sequence_ids')
    if seq is None:
        return dict(attention_mask=data['attention_mask'], position_ids=data.get('position_ids'))
    if getattr(llm.config, '_attn_implementation', 'eager') == 'flash_attention_2':
        return dict(attention_mask=None, position_ids=data['position_ids'])
    return dict(attention_mask=packed_attention_mask(seq, dtype), position_ids=data['position_ids'])
