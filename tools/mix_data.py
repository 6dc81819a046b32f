"""Mix filtered generated samples into an SFT json (Genixer's recipe: 8K generated into LLaVA's 665K).

    python tools/mix_data.py --sft llava_v1_5_mix665k.json --add kept.json [--add more.json] \\
        (--num 8000 | --ratio 0.012 | --all) --out mixed.json [--seed 0]

Writes OUT (the SFT samples, then the drawn generated ones, provenance fields kept) and OUT minus .json +
`.manifest.json` (sources, duplicates removed, how many were mixed from each, the mixed ids). Generated samples
whose (image, question) already appear are left out; ids must be unique across all files. See
mg_llava.datagen.mix.
"""
import argparse
import json
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sft', required=True)
    p.add_argument('--add', action='append', required=True, help='generated samples (.json / .jsonl); repeatable')
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument('--num', type=int)
    how.add_argument('--all', action='store_true', help='every generated sample that is not a duplicate')
    how.add_argument('--ratio', type=float, help='number to add = round(ratio * SFT samples)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', required=True)
    p.add_argument('--box-file', help="MG-LLaVA: the SFT data's box file; with --generated-box-file, writes OUT "
                   "minus .json + `.boxes.json` (its entries + one per mixed generated sample)")
    p.add_argument('--generated-box-file', help='detector boxes of the generation images (ids as generated)')
    args = p.parse_args(argv)
    if not args.out.endswith('.json'):
        p.error('--out must end in .json')
    if bool(args.box_file) != bool(args.generated_box_file):
        p.error('--box-file and --generated-box-file go together')
    from mg_llava.data.dataset import read_records
    from mg_llava.data import load_box_index
    from mg_llava.datagen.mix import mix, mixed_boxes
    from mg_llava.errors import InputError
    from mg_llava.inference.writer import write_atomic
    try:
        sft = read_records(args.sft)
        records, manifest = mix(sft, [(path, read_records(path)) for path in args.add],
                                num='all' if args.all else args.num,
                                ratio=args.ratio, seed=args.seed, sft_path=args.sft)
        boxes = None
        if args.box_file:
            boxes = mixed_boxes(read_records(args.box_file), load_box_index(args.generated_box_file),
                                records[len(sft):], args.box_file, args.generated_box_file)
    except InputError as e:
        sys.exit(f'mix_data: {e}')
    except ValueError as e:
        sys.exit(f'mix_data: {e}')
    write_atomic(args.out, records)
    if boxes is not None:
        write_atomic(args.out[:-len('.json')] + '.boxes.json', boxes)
    with open(args.out[:-len('.json')] + '.manifest.json', 'w') as f:
        json.dump(manifest, f, indent=1)
    print(f'mix_data: {manifest["sft_samples"]} SFT + {manifest["num"]} generated -> {len(records)} samples in '
          f'{args.out} ({sum(s["duplicates"] for s in manifest["added"])} duplicates left out)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
