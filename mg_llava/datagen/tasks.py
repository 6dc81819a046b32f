"""Generator training data (spec A.2): annotated samples of the 9 Genixer tasks -> LLaVA conversations whose
human turn is `<image>\\n` + a two-level instruction and whose gpt turn is the `Question: … Answer: …` target.

Annotation layouts, one record per sample (LLaVA json or json lines; `id` and `image` always):
  common, adv, mc, longqa   a LLaVA conversation; each (human, gpt) turn pair becomes one generator sample
                            (mc: the options are in the question text, the answer is the letter)
  md                        a LLaVA conversation; the whole dialogue becomes one sample (a pair per line)
  rec, reg                  expression, box (pixel xyxy) or boxes, width, height
  pointqa                   question, answer, and box or point (Local), or question, candidates (boxes) and
                            answer_box / answer_point (Visual7W); width, height
  qca, rd                   a LLaVA conversation whose text marks box mentions with `<boxes>`, boxes (pixel
                            xyxy), boxes_seq (one list of box indices per `<boxes>`, in reading order); width,
                            height
Boxes are printed normalised (formats.format_box). A malformed record raises DataError naming file and id.
"""
from mg_llava.errors import DataError

from . import formats as F
from .templates import TASKS, inner_question, instruction, sample_rng

BOXES_SLOT = '<boxes>'


def _turns(rec):
    conv = rec.get('conversations')
    if not isinstance(conv, list) or len(conv) < 2 or len(conv) % 2:
        raise ValueError('needs a conversation of (human, gpt) turn pairs')
    pairs = []
    for i in range(0, len(conv), 2):
        human, gpt = conv[i], conv[i + 1]
        if human.get('from') != 'human' or gpt.get('from') != 'gpt':
            raise ValueError(f'turn {i} is not a (human, gpt) pair')
        pairs.append((human['value'].replace('<image>', '').strip(), gpt['value'].strip()))
    return pairs


def _size(rec):
    try:
        w, h = float(rec['width']), float(rec['height'])
    except (KeyError, TypeError, ValueError):
        raise ValueError('needs the image size: width and height') from None
    return w, h


def _box_list(rec):
    if 'boxes' in rec and 'box' not in rec:
        return rec['boxes']
    if 'box' in rec:
        return [rec['box']]
    raise ValueError('needs box (pixel xyxy) or boxes')


def _fill_boxes(text, rec, cursor, w, h):
    """Replace each `<boxes>` in text by the boxes boxes_seq[cursor] names; -> (text, cursor)."""
    while BOXES_SLOT in text:
        seq = rec.get('boxes_seq') or []
        if cursor >= len(seq):
            raise ValueError(f'more {BOXES_SLOT} slots than boxes_seq entries ({len(seq)})')
        try:
            boxes = [rec['boxes'][i] for i in seq[cursor]]
        except (IndexError, KeyError, TypeError):
            raise ValueError(f'boxes_seq[{cursor}] = {seq[cursor]} names a box that is not in boxes') from None
        text = text.replace(BOXES_SLOT, F.format_boxes(boxes, w, h), 1)
        cursor += 1
    return text, cursor


def targets(task, rec, rng):
    """One annotated record -> [(key suffix, target text)]: the `Question: … Answer: …` strings it yields."""
    if task in ('common', 'adv', 'mc', 'longqa'):
        return [(f'_{n}', F.format_qa(q, a)) for n, (q, a) in enumerate(_turns(rec))]
    if task == 'md':
        return [('', F.format_dialogue(_turns(rec)))]
    if task in ('qca', 'rd'):
        w, h = _size(rec)
        pairs, cursor = [], 0
        for q, a in _turns(rec):
            q, cursor = _fill_boxes(q, rec, cursor, w, h)
            a, cursor = _fill_boxes(a, rec, cursor, w, h)
            pairs.append((q, a))
        return [('', F.format_dialogue(pairs))]
    w, h = _size(rec)
    if task in ('rec', 'reg'):
        expr = str(rec.get('expression') or '').strip().rstrip('.')
        if not expr:
            raise ValueError('needs an expression')
        boxes = F.format_boxes(_box_list(rec), w, h)
        if task == 'rec':
            return [('', F.format_qa(inner_question('rec', rng, expr=expr), boxes))]
        return [('', F.format_qa(inner_question('reg', rng, objs=boxes), expr + '.'))]
    if task == 'pointqa':
        question = str(rec.get('question') or '').strip()
        if not question:
            raise ValueError('needs a question')
        if 'candidates' in rec:   # Visual7W: pick the right box among the candidates
            cands = ' '.join(F.format_box(b, w, h) for b in rec['candidates'])
            if 'answer_box' in rec:
                answer = F.format_box(rec['answer_box'], w, h)
            elif 'answer_point' in rec:
                answer = F.format_point(rec['answer_point'], w, h)
            else:
                raise ValueError('a Visual7W sample needs answer_box or answer_point')
            return [('', F.format_qa(f'{question} Candidates: {cands}', answer))]
        if 'point' in rec:
            where = F.format_point(rec['point'], w, h)
        else:
            where = F.format_box(_box_list(rec)[0], w, h)
        answer = str(rec.get('answer') or '').strip()
        if not answer:
            raise ValueError('needs an answer')
        return [('', F.format_qa(f'{question}{where}', answer))]
    raise ValueError(f'unknown Genixer task {task!r}; tasks: {", ".join(TASKS)}')


def generator_samples(task, records, seed=0, task_specific=0.5, source='<records>', stats=None):
    """Annotated records of one task -> generator training records (LLaVA conversations):
    {id, image, task, template, task_specific, conversations: [human: <image>\\n instruction, gpt: target]}.

    task_specific: the probability that a sample's instruction carries the task suffix (1: always, as Genixer_S;
    0: never; in between, one generator serves both inference modes). Draws are seeded per sample id.
    Text-only records (an id, no image: e.g. the ShareGPT part of LLaVA's mix) are skipped and counted in
    stats['text_only'] when a dict is given."""
    if task not in TASKS:
        raise ValueError(f'unknown Genixer task {task!r}; tasks: {", ".join(TASKS)}')
    out = []
    for n, rec in enumerate(records):
        key = rec.get('id', f'#{n}') if isinstance(rec, dict) else f'#{n}'
        if isinstance(rec, dict) and 'id' in rec and not rec.get('image') and rec.get('conversations'):
            if stats is not None:
                stats['text_only'] = stats.get('text_only', 0) + 1
            continue
        try:
            if not isinstance(rec, dict) or 'id' not in rec or not rec.get('image'):
                raise ValueError('needs an id and an image')
            rng = sample_rng(seed, f'{task}/{key}')
            specific = bool(rng.random() < task_specific)
            for suffix, target in targets(task, rec, rng):
                prompt, index = instruction(task, rng, specific)
                out.append({'id': f'{task}_{key}{suffix}', 'image': rec['image'], 'task': task,
                            'template': index, 'task_specific': specific,
                            'conversations': [{'from': 'human', 'value': '<image>\n' + prompt},
                                              {'from': 'gpt', 'value': target}]})
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(source, f'id {key}', f'{task} sample: {err}') from None
    return out
