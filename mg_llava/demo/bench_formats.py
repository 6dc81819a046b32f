"""The demo's held-out questions written in public benchmark formats, so `tools/test.py` scores them with the
real readers, prompts and scorers (mg_llava.evaluation):

  bench/shapes_mc.tsv            MMBench-style TSV (index, question, A-F, answer, category, base64 image; later
                                 rows of an image hold the index of its first row, as VLMEvalKit does):
                                 colour, shape, count and left/right questions as lettered options
  bench/shapes_pope.jsonl        POPE jsonl (question_id, image, text, label): the presence questions
  bench/shapes_short.jsonl       GQA-style LLaVA jsonl (question_id, image, text): every question, answered in
  bench/shapes_short_gt.json       one word, scored against {question_id: {answer, ...}} like GQA testdev
  bench/*_boxes.json             the detector boxes of each question's image, keyed by that benchmark's box key

Also `as_multiple_choice`, which SFT uses to teach the multiple-choice answer format (LLaVA-1.5 mixes such
format prompts into its instruction data for the same reason).
"""
import base64
import io
import json
from pathlib import Path

from mg_llava.evaluation.questions import multiple_choice_text

LETTERS = 'ABCDEF'
# GQA's structural types (its scorer splits "binary" = verify/logical/choose/compare from "open" = query)
STRUCTURAL = {'colour': 'query', 'shape': 'query', 'count': 'query', 'presence': 'verify', 'leftright': 'choose'}


def as_multiple_choice(question, answer, choices):
    """(prompt, letter, options): every choice of the question type, in its fixed order, as spec 4.2's
    multiple-choice prompt. options = [(letter, text)]. A fixed order makes the letter a function of the
    answer, which the demo's tiny LLM learns; with shuffled options it must find the answer among them and
    copy the letter before it, which it did not learn within the demo's budget (31%, chance ~30%)."""
    options = list(zip(LETTERS, choices))
    return multiple_choice_text(question, options), LETTERS[list(choices).index(answer)], options


def _b64_png(path):
    buf = io.BytesIO(Path(path).read_bytes())
    return base64.b64encode(buf.getvalue()).decode('ascii')


def write_benchmarks(out_dir, heldout, boxes_by_sample):
    """heldout: the world's held-out question dicts; boxes_by_sample: {sample_id: {boxes, scores, labels}}.
    Returns {name: path} of the files written under out_dir/bench."""
    bench = Path(out_dir) / 'bench'
    bench.mkdir(parents=True, exist_ok=True)
    images = Path(out_dir) / 'images'
    mc_rows, mc_boxes, pope, pope_boxes, short, short_gt, short_boxes = [], [], [], [], [], {}, []
    first_row = {}  # image -> index of the row that carries its base64
    for q in heldout:
        det = boxes_by_sample[q['sample_id']]
        short.append({'question_id': q['id'], 'image': q['image'], 'text': q['question']})
        short_gt[q['id']] = {'answer': q['answer'], 'isBalanced': True, 'types': {'structural': STRUCTURAL[q['type']]}}
        short_boxes.append({'id': q['id'], **det})
        if q['type'] == 'presence':
            qid = len(pope)
            pope.append({'question_id': qid, 'image': q['image'], 'text': q['question'], 'label': q['answer']})
            pope_boxes.append({'id': qid, **det})
            continue
        index = len(mc_rows)
        _, letter, options = as_multiple_choice(q['question'], q['answer'], q['choices'])
        image = str(first_row[q['image']]) if q['image'] in first_row else _b64_png(images / q['image'])
        first_row.setdefault(q['image'], index)
        row = {'index': index, 'question': q['question'], **dict(options), 'answer': letter,
               'category': q['type'], 'image': image}
        mc_rows.append(row)
        mc_boxes.append({'id': index, **det})
    paths = {name: bench / f for name, f in [
        ('mc', 'shapes_mc.tsv'), ('mc_boxes', 'shapes_mc_boxes.json'), ('pope', 'shapes_pope.jsonl'),
        ('pope_boxes', 'shapes_pope_boxes.json'), ('short', 'shapes_short.jsonl'), ('short_gt', 'shapes_short_gt.json'),
        ('short_boxes', 'shapes_short_boxes.json')]}
    columns = ['index', 'question', *LETTERS, 'answer', 'category', 'image']
    with open(paths['mc'], 'w') as f:
        f.write('\t'.join(columns) + '\n')
        f.writelines('\t'.join(str(r.get(c, '')) for c in columns) + '\n' for r in mc_rows)
    for name, records in (('pope', pope), ('short', short)):
        with open(paths[name], 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in records)
    for name, obj in (('mc_boxes', mc_boxes), ('pope_boxes', pope_boxes), ('short_boxes', short_boxes),
                      ('short_gt', short_gt)):
        paths[name].write_text(json.dumps(obj) + '\n')
    return {k: str(v) for k, v in paths.items()}
