"""Genixer's text formats, printed and parsed in one place (spec A.2).

Boxes (the Shikra convention): pixel xyxy divided by the image's W and H, clamped to [0, 1], rounded to 3
decimals, printed `[x1,y1,x2,y2]`; a point `[x,y]`; several boxes of one mention joined by `;`:
    format_box([10, 20, 50, 80], 100, 100) -> '[0.100,0.200,0.500,0.800]'
A generator's target is `Question: <q> Answer: <a>` (one pair), or several such pairs on their own lines for a
multi-turn dialogue. `parse_qa` is the inverse and the glue step the reference lacks: generated text ->
[(question, answer)], a FormatError (with the reason) for text that is not in that form. Stdlib only.
"""
import re

NUM = r'(?:\d+(?:\.\d*)?|\.\d+)'
BOX_RE = re.compile(rf'\[\s*({NUM})\s*,\s*({NUM})\s*,\s*({NUM})\s*,\s*({NUM})\s*\]')
POINT_RE = re.compile(rf'\[\s*({NUM})\s*,\s*({NUM})\s*\]')
# a bracketed group of one or more boxes/points joined by ';' (the mention of one expression)
GROUP_RE = re.compile(rf'\[\s*{NUM}(?:\s*,\s*{NUM}){{1,3}}\s*\](?:\s*;\s*\[\s*{NUM}(?:\s*,\s*{NUM}){{1,3}}\s*\])*')
QA_RE = re.compile(r'Question:\s*(.*?)\s*Answer:\s*(.*?)(?=\s*Question:|\Z)', re.S)


class FormatError(ValueError):
    """Generated or annotated text that is not in the expected Genixer format."""


def _clamp01(v):
    return min(1.0, max(0.0, v))


def normalise_box(box, width, height):
    """Pixel xyxy -> normalised xyxy (clamped to [0, 1], 3 decimals). Raises FormatError on a degenerate box
    (x2 <= x1 or y2 <= y1 after clamping) or a non-positive image size."""
    if width <= 0 or height <= 0:
        raise FormatError(f'image size {width}x{height} must be positive')
    if len(box) != 4:
        raise FormatError(f'a box has 4 numbers (x1, y1, x2, y2), got {list(box)}')
    x1, y1, x2, y2 = (round(_clamp01(v / s), 3) for v, s in zip(box, (width, height, width, height)))
    if x2 <= x1 or y2 <= y1:
        raise FormatError(f'degenerate box {list(box)} in a {width}x{height} image')
    return [x1, y1, x2, y2]


def normalise_point(point, width, height):
    if len(point) != 2:
        raise FormatError(f'a point has 2 numbers (x, y), got {list(point)}')
    return [round(_clamp01(point[0] / width), 3), round(_clamp01(point[1] / height), 3)]


def format_coords(coords):
    """Normalised numbers -> '[0.100,0.200,0.500,0.800]' (3 decimals, no spaces)."""
    return '[' + ','.join(f'{v:.3f}' for v in coords) + ']'


def format_box(box, width, height):
    return format_coords(normalise_box(box, width, height))


def format_point(point, width, height):
    return format_coords(normalise_point(point, width, height))


def format_boxes(boxes, width, height):
    """Several pixel boxes of one mention -> '[..];[..]'."""
    return ';'.join(format_box(b, width, height) for b in boxes)


def parse_boxes(text):
    """Every normalised box in `text`, in order -> [[x1, y1, x2, y2], ...] (floats). Points are not boxes."""
    return [[float(v) for v in m.groups()] for m in BOX_RE.finditer(text)]


def parse_points(text):
    return [[float(v) for v in m.groups()] for m in POINT_RE.finditer(text)]


def parse_box_groups(text):
    """Each bracketed mention in `text` -> a list of coordinate lists (boxes or points), in order:
    'a [0.1,0.2,0.3,0.4];[0.5,0.5,0.6,0.7] b [0.2,0.3]' -> [[[.1,.2,.3,.4],[.5,.5,.6,.7]], [[.2,.3]]]."""
    groups = []
    for m in GROUP_RE.finditer(text):
        groups.append([[float(v) for v in part.strip().strip('[]').split(',')] for part in m.group(0).split(';')])
    return groups


def denormalise_box(box, width, height):
    """Normalised xyxy -> integer pixel xyxy (the CLIP filter's crop)."""
    return [int(round(v * s)) for v, s in zip(box, (width, height, width, height))]


def format_qa(question, answer):
    return f'Question: {question.strip()} Answer: {answer.strip()}'


def format_dialogue(pairs):
    """A multi-turn dialogue target: one `Question: … Answer: …` per line."""
    return '\n'.join(format_qa(q, a) for q, a in pairs)


def parse_qa(text):
    """Generated text -> [(question, answer), ...] (several for a dialogue). FormatError with the reason when
    the text holds no `Question: … Answer: …`, or a question or answer is empty."""
    text = (text or '').strip()
    if not text.startswith('Question:'):
        raise FormatError('does not start with "Question:"')
    pairs = [(q.strip(), a.strip()) for q, a in QA_RE.findall(text)]
    if not pairs:
        raise FormatError('no "Answer:" after the question')
    for q, a in pairs:
        if not q:
            raise FormatError('empty question')
        if not a:
            raise FormatError('empty answer')
    return pairs
