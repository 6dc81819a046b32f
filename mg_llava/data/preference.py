"""Preference pairs (image, question, chosen answer, rejected answer) through the training preprocessing.

Record layouts (json / jsonl, one pair per record):
    {"id", "image", "chosen": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": ...}],
                    "rejected": [same human turn, {"from": "gpt", "value": ...}]}      (LLaVA-MoD / RLAIF-V, spec §2)
    {"id", "image", "question", "chosen": "...", "rejected": "..."}                     (flat; <image> prepended)
`tools/convert_rlaif_v.py` writes the first layout from RLAIF-V's public parquet files.

Both answers are tokenised with the same template and masking as SFT (`tokenize_conversation`); the image and
its boxes are prepared once and shared. `preference_collate_fn` lays the batch out as [chosen rows; rejected rows]
(2B sequences) so the policy and the reference each run ONE forward per step.
"""
from xtuner.utils import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX

from .collate import mg_llava_collate_fn
from .dataset import MGLLaVADataset, expand_visual_slots, tokenize_conversation


def as_conversations(record, side):
    """One side ('chosen' / 'rejected') of a record -> LLaVA conversations, or raise ValueError."""
    value = record.get(side)
    if isinstance(value, list):
        return value
    if isinstance(value, str) and isinstance(record.get('question'), str):
        question = record['question']
        if record.get('image') is not None and DEFAULT_IMAGE_TOKEN not in question:
            question = DEFAULT_IMAGE_TOKEN + '\n' + question
        return [{'from': 'human', 'value': question}, {'from': 'gpt', 'value': value}]
    raise ValueError(f'"{side}" must be a conversation list, or a string next to a "question"')


class PreferenceDataset(MGLLaVADataset):
    """MGLLaVADataset whose samples carry a chosen and a rejected answer (same arguments, same checks: a bad
    pair raises a DataError naming the file and the id, or is skipped with on_bad_sample='skip')."""

    def tokenize(self, records, num_proc=1):
        from datasets import Dataset
        rows = []
        for i, r in enumerate(records):
            sid = str(r.get('id', f'#{i}')) if isinstance(r, dict) else f'#{i}'
            row = dict(id=sid, image=r.get('image') if isinstance(r, dict) else None, input_ids=[], labels=[],
                       rejected_input_ids=[], rejected_labels=[], error='')
            try:
                if not isinstance(r, dict) or 'id' not in r:
                    raise ValueError('a preference record needs "id", "chosen" and "rejected"')
                sides = [tokenize_conversation(dict(image=r.get('image'), conversations=as_conversations(r, s)),
                                               self.tokenizer, self.template, self.max_length)
                         for s in ('chosen', 'rejected')]
            except ValueError as e:
                row['error'] = str(e)
                rows.append(row)
                continue
            (chosen, rejected) = sides
            row.update(input_ids=chosen['input_ids'], labels=chosen['labels'],
                       rejected_input_ids=rejected['input_ids'], rejected_labels=rejected['labels'],
                       error=chosen['error'] and f'chosen: {chosen["error"]}' or
                       rejected['error'] and f'rejected: {rejected["error"]}')
            rows.append(row)
        return Dataset.from_list(rows)

    def load_sample(self, i):
        """The chosen sample as MGLLaVADataset builds it (image, boxes, expanded slots) + rejected_input_ids /
        rejected_labels with the same visual slots."""
        sample = super().load_sample(i)
        row = self.text[i]
        ids, labels = list(row['rejected_input_ids']), list(row['rejected_labels'])
        if row['image'] is not None:
            n_slots = sum(1 for t in sample['input_ids'] if t == IMAGE_TOKEN_INDEX)
            ids, labels = expand_visual_slots(ids, labels, n_slots)
        sample['rejected_input_ids'], sample['rejected_labels'] = ids, labels
        return sample


def preference_collate_fn(instances, pad_index=0, return_hf_format=False):
    """B preference samples -> one batch of 2B rows: chosen rows [0, B), rejected rows [B, 2B), sharing nothing
    but the layout (the image is repeated for the rejected row: each row has its own visual slots)."""
    chosen = [{k: v for k, v in x.items() if not k.startswith('rejected_')} for x in instances]
    rejected = [dict(c, input_ids=x['rejected_input_ids'], labels=x['rejected_labels'], id=f'{x.get("id")}:rejected')
                for c, x in zip(chosen, instances)]
    out = mg_llava_collate_fn(chosen + rejected, pad_index=pad_index, return_hf_format=True)
    out['num_pairs'] = len(instances)
    return out if return_hf_format else {'data': out, 'data_samples': None}
