"""Mixing generated samples into SFT data (Genixer's 8K-into-665K step, missing from the reference).

    mix(sft, [(path, samples), ...], num=8000 | ratio=0.012, seed) -> (records, manifest)
records = the SFT samples in their order, then the drawn generated samples (LLaVA conversations, their
provenance fields kept). A generated sample is a candidate unless its (image, first question) is already in the
SFT data or in an earlier candidate (case and spacing ignored); `num` (or round(ratio * len(sft))) candidates
are drawn without replacement, seeded, and kept in input order. The manifest says what was mixed. Stdlib only.
"""
import random
import re

from mg_llava.errors import DataError


def sample_key(rec):
    """(image, first human turn without <image>, lower-cased, spacing collapsed): what counts as a duplicate."""
    conv = rec.get('conversations') or []
    first = next((t.get('value', '') for t in conv if t.get('from') == 'human'), rec.get('question', ''))
    text = re.sub(r'\s+', ' ', first.replace('<image>', '')).strip().lower()
    return (rec.get('image') or '', text)


def mix(sft, added, num=None, ratio=None, seed=0, sft_path='<sft>'):
    """sft: LLaVA records; added: [(path, records)] of generated samples. Exactly one of num ('all': every
    candidate) / ratio."""
    if (num is None) == (ratio is None):
        raise ValueError('give exactly one of num and ratio')
    want = num if num is not None else round(ratio * len(sft))
    if want != 'all' and want < 0:
        raise ValueError(f'cannot add {want} samples')
    seen, ids = {sample_key(r) for r in sft}, {str(r.get('id')) for r in sft}
    candidates, sources = [], []
    for path, records in added:
        dup = 0
        for n, rec in enumerate(records):
            if not isinstance(rec, dict) or not rec.get('conversations') or 'id' not in rec:
                raise DataError(path, f'sample {n}', 'a generated sample needs an id and conversations')
            if str(rec['id']) in ids:
                raise DataError(path, f'id {rec["id"]!r}', f'id already used in {sft_path} or an earlier file')
            key = sample_key(rec)
            if key in seen:
                dup += 1
                continue
            seen.add(key)
            ids.add(str(rec['id']))
            candidates.append((len(sources), rec))
        sources.append({'path': str(path), 'samples': len(records), 'duplicates': dup,
                        'candidates': len(records) - dup, 'mixed': 0})
    if want == 'all':
        want = len(candidates)
    if want > len(candidates):
        raise ValueError(f'asked for {want} generated samples, only {len(candidates)} candidates '
                         f'(after removing duplicates)')
    picked = sorted(random.Random(seed).sample(range(len(candidates)), want))
    chosen = [candidates[i] for i in picked]
    for src, _ in chosen:
        sources[src]['mixed'] += 1
    records = list(sft) + [rec for _, rec in chosen]
    manifest = {'sft': str(sft_path), 'sft_samples': len(sft), 'added': sources, 'num': want, 'ratio': ratio,
                'seed': seed, 'total': len(records), 'mixed_ids': [rec['id'] for _, rec in chosen]}
    return records, manifest


def mixed_boxes(sft_entries, generated_index, mixed, sft_path='<sft boxes>', generated_path='<generated boxes>'):
    """MG-LLaVA's object tokens need a box entry per sample id: the SFT box entries plus, for each mixed generated
    sample, a copy of the entry of its image (`source_id`, the id generation listed the image under) in
    generated_index ({str(id): entry}, the detector's boxes of the unlabelled images)."""
    out = list(sft_entries)
    for rec in mixed:
        key = str(rec.get('source_id', ''))
        if key not in generated_index:
            raise DataError(generated_path, f'id {key!r}', f'no box entry for the image of generated sample '
                            f'{rec["id"]!r} (run tools/detect_boxes.py on the generation image list)')
        out.append({**generated_index[key], 'id': rec['id']})
    return out
