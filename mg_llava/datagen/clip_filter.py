"""The CLIP REC filter's geometry and score (spec A.7): a generated REC sample (expression, normalised box) is
kept when the box's crop of the image matches the expression.

    crop = image[box de-normalised to pixels]; rejected when its width or height < min_size (50 px)
    score = 100 * cos(CLIP_image(crop), CLIP_text(expression))       (the CLIPScore scale)
The reference scores the raw dot product of the un-normalised projected embeddings and keeps `> 60`, a number
that corresponds to no cosine: `score='raw_dot'` reproduces it; the cosine threshold is recalibrated by the user.
"""
from .formats import FormatError, denormalise_box

MIN_SIZE = 50


def crop_box(image, box, min_size=MIN_SIZE):
    """PIL image + normalised xyxy -> the crop (PIL); FormatError when the crop is under min_size px either way."""
    w, h = image.size
    x1, y1, x2, y2 = denormalise_box(box, w, h)
    if x2 - x1 < min_size or y2 - y1 < min_size:
        raise FormatError(f'box crop {x2 - x1}x{y2 - y1} px is under {min_size} px')
    return image.crop((x1, y1, x2, y2))


def clip_scores(image_features, text_features, score='cosine'):
    """(B, D) image and text embeddings of matching rows -> (B,) scores: 100 * cosine, or the reference's raw
    dot product (`score='raw_dot'`)."""
    import torch
    a, b = image_features.float(), text_features.float()
    if score == 'raw_dot':
        return (a * b).sum(-1)
    if score != 'cosine':
        raise ValueError(f"score must be 'cosine' or 'raw_dot', got {score!r}")
    return 100 * torch.nn.functional.cosine_similarity(a, b, dim=-1)
