"""Offline box generation (spec §3): image tags -> OWLv2 boxes -> box json (spec §2.2).

Entry point: `tools/detect_boxes.py`. Modules:
  owl.py      OWLv2 detection with the reference thresholds, padded-square -> original-pixel boxes;
  tagger.py   tags per image: fixed vocabulary or zero-shot CLIP (RAM++ is not on PyPI; see its docstring);
  boxfile.py  inputs (folder / jsonl), the resumable JSON-lines output, rank shards and their merge;
  tiny.py     tiny random-init OWLv2/CLIP checkpoints for tests.
Nothing here is imported by training or by `mg_llava.models` (the reference imports its tagger and detector
with the model package, spec §3 "Packaging BUG"); transformers' OWLv2/CLIP classes load lazily.
"""
