"""Convert RLAIF-V's public parquet files (openbmb/RLAIF-V-Dataset: question, chosen, rejected, image bytes) into
the preference json that mg_llava.data.preference reads (LLaVA-MoD's layout, spec §2), writing the images out.

    python tools/convert_rlaif_v.py PARQUET [PARQUET ...] --out pref.json --image-dir images/

Each row becomes {"id", "image": "<idx>.<ext>", "chosen": [human, gpt], "rejected": [human, gpt]} with the question
as the human turn ("<image>\\n" + question). A row without an image, question or both answers is reported (file and
row) and skipped; `--strict` stops at the first one instead. Reading needs pyarrow (installed with `datasets`).
"""
import argparse
import json
import os
import os.path as osp
import sys

IMAGE_EXT = {b'\x89PNG': 'png', b'\xff\xd8\xff': 'jpg', b'GIF8': 'gif', b'RIFF': 'webp', b'BM': 'bmp'}


def _ext(data):
    return next((ext for magic, ext in IMAGE_EXT.items() if data.startswith(magic)), 'jpg')


def convert_row(row, idx, image_dir):
    """A parquet row (dict) -> a preference record, writing its image; ValueError says what is missing."""
    image = row.get('image')
    data = image.get('bytes') if isinstance(image, dict) else image
    missing = [k for k in ('question', 'chosen', 'rejected') if not isinstance(row.get(k), str) or not row[k].strip()]
    if not data:
        missing.append('image')
    if missing:
        raise ValueError(f'missing or empty {", ".join(missing)}')
    sid = str(row.get('idx', idx))
    name = f'{sid}.{_ext(data)}'
    with open(osp.join(image_dir, name), 'wb') as f:
        f.write(data)
    human = {'from': 'human', 'value': '<image>\n' + row['question'].strip()}
    return {'id': sid, 'image': name,
            'chosen': [human, {'from': 'gpt', 'value': row['chosen'].strip()}],
            'rejected': [human, {'from': 'gpt', 'value': row['rejected'].strip()}]}


def convert(parquet_files, out, image_dir, strict=False):
    """-> (number of records written, list of 'file [row n]: reason' for the skipped rows)."""
    import pyarrow.parquet as pq
    os.makedirs(image_dir, exist_ok=True)
    records, skipped, seen = [], [], set()
    for path in parquet_files:
        table = pq.read_table(path)
        for n, row in enumerate(table.to_pylist()):
            try:
                rec = convert_row(row, f'{osp.splitext(osp.basename(path))[0]}_{n}', image_dir)
                if rec['id'] in seen:
                    raise ValueError(f'duplicated idx {rec["id"]!r}')
            except ValueError as e:
                if strict:
                    raise ValueError(f'{path} [row {n}]: {e}') from None
                skipped.append(f'{path} [row {n}]: {e}')
                continue
            seen.add(rec['id'])
            records.append(rec)
    tmp = out + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(records, f, ensure_ascii=False)
    os.replace(tmp, out)   # no half-written json on failure
    return len(records), skipped


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('parquet', nargs='+')
    p.add_argument('--out', required=True, help='preference json to write')
    p.add_argument('--image-dir', required=True, help='folder for the images (the dataset\'s image_folder)')
    p.add_argument('--strict', action='store_true', help='stop at the first bad row')
    args = p.parse_args(argv)
    try:
        n, skipped = convert(args.parquet, args.out, args.image_dir, args.strict)
    except ValueError as e:
        sys.exit(str(e))
    for line in skipped[:20]:
        print(f'skipped {line}')
    print(f'wrote {n} preference pairs to {args.out} (images in {args.image_dir}); skipped {len(skipped)} rows')
    return 0


if __name__ == '__main__':
    sys.exit(main())
