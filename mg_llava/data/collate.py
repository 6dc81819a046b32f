"""Batch collation: padding, attention mask, and the visual-slot layout the model scatters into.

Each sample's input_ids already hold IMAGE_TOKEN_INDEX in its T + n_obj visual slots (the dataset
expanded the single <image> token). Here we compute `visual_index`, which maps the batch's visual
slots, in row-major order, to rows of cat(image_tokens.flatten(0, 1), object_tokens) — so the model
places everything with one gather and one masked_scatter.
"""
import torch
from xtuner.utils import IGNORE_INDEX, IMAGE_TOKEN_INDEX


def _as_long(x):
    return x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=torch.long)


def mg_llava_collate_fn(instances, pad_index=0, padding_side='right', return_hf_format=False):
    """instances: dicts with input_ids (L_i,), optional labels (L_i,), and for image samples
    pixel_values (3,s,s), optional pixel_values_aux (3,S,S), boxes (n_i,4), num_image_tokens T; or packs (lists
    of such dicts, MGLLaVADataset(pack_to_max_length=True)): one row each, plus sequence_ids (B,L) (sample number
    within the row, -1 padding) and position_ids restarting per sample (data/packing.py).

    Returns {'data': dict, 'data_samples': None} with input_ids/labels/attention_mask/position_ids (B,L),
    pixel_values (N_img,3,s,s) or None, pixel_values_aux, boxes (K,4), box_batch_index (K,),
    visual_index (V,), supervised_index (N_sup,), num_image_tokens and max_boxes_per_image (ints: no host sync in the model), ids.
    """
    packed = bool(instances) and isinstance(instances[0], (list, tuple))
    rows = instances if packed else [[x] for x in instances]  # a packed row: several samples (data/packing.py)
    instances = [x for row in rows for x in row]
    ids = [[_as_long(x['input_ids']) for x in row] for row in rows]
    has_labels = all('labels' in x for x in instances)
    lens = [sum(len(t) for t in row) for row in ids]
    bsz, max_len = len(rows), max(lens)
    input_ids = torch.full((bsz, max_len), pad_index, dtype=torch.long)
    labels = torch.full((bsz, max_len), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((bsz, max_len), dtype=torch.bool)
    position_ids = torch.zeros((bsz, max_len), dtype=torch.long)
    sequence_ids = torch.full((bsz, max_len), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        n = lens[i]
        sl = slice(0, n) if padding_side == 'right' else slice(max_len - n, max_len)
        sizes = torch.tensor([len(t) for t in ids[i]])
        input_ids[i, sl] = torch.cat(ids[i])
        attention_mask[i, sl] = True
        position_ids[i, sl] = torch.cat([torch.arange(len(t)) for t in ids[i]])  # restarting per sample
        sequence_ids[i, sl] = torch.repeat_interleave(torch.arange(len(row)), sizes)
        if has_labels:
            row_labels = [_as_long(x['labels']).clone() for x in row]
            for lab in row_labels[1:]:  # unpacked, a first label is never predicted (the shift drops it)
                lab[0] = IGNORE_INDEX
            labels[i, sl] = torch.cat(row_labels)

    images = [x for x in instances if x.get('pixel_values') is not None]
    data = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                labels=labels if has_labels else None, pixel_values=None, ids=[x.get('id') for x in instances])
    if packed:
        data['sequence_ids'] = sequence_ids
    if has_labels:
        # flat positions of labels[:, 1:] that carry loss: the model runs the LM head only there
        data['supervised_index'] = (labels[:, 1:].reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)
    if images:
        tokens_per_image = {int(x['num_image_tokens']) for x in images}
        if len(tokens_per_image) != 1:
            raise ValueError(f'samples disagree on num_image_tokens: {sorted(tokens_per_image)}')
        t = tokens_per_image.pop()
        boxes = [x['boxes'] if x.get('boxes') is not None else torch.zeros(0, 4) for x in images]
        counts = [len(b) for b in boxes]
        n_img, obj_base = len(images), len(images) * t
        parts, obj_offset = [], 0
        for j, (x, n_obj) in enumerate(zip(images, counts)):
            slots = int((_as_long(x['input_ids']) == IMAGE_TOKEN_INDEX).sum())
            if slots != t + n_obj:
                raise ValueError(f'sample {x.get("id")!r}: {slots} visual slots for {t} image + {n_obj} object tokens')
            parts += [torch.arange(j * t, (j + 1) * t), torch.arange(obj_offset, obj_offset + n_obj) + obj_base]
            obj_offset += n_obj
        data.update(
            pixel_values=torch.stack([x['pixel_values'] for x in images]),
            pixel_values_aux=(torch.stack([x['pixel_values_aux'] for x in images])
                              if images[0].get('pixel_values_aux') is not None else None),
            boxes=torch.cat([torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]),
            box_batch_index=torch.repeat_interleave(torch.arange(n_img), torch.tensor(counts, dtype=torch.long)),
            visual_index=torch.cat(parts), num_image_tokens=t, max_boxes_per_image=max(counts))
    if return_hf_format:
        return data
    return {'data': data, 'data_samples': None}
