"""Genixer data engine: a trained model of this framework becomes a data generator; its generated QA are
judged, filtered and mixed into SFT data (the Genixer recipe, fixed where the reference is wrong).

  formats.py      boxes / points / `Question: … Answer: …` printed and parsed (stdlib only)
  templates.py    the two-level instructions (templates/*.json) and the per-sample seeded draws
  tasks.py        annotated samples of the 9 tasks -> generator training conversations
  judge.py        the judge filter's P(Yes) score and band (and the reference's geometric mean)
  clip_filter.py  the CLIP REC filter's crop and cosine score

Nothing is imported here, so the stdlib-only parts load without torch.
"""
