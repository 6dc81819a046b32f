"""MME (perception and cognition yes/no questions).

`data`: the VLMEvalKit MME TSV (`index`, `category`, `question`, `answer` Yes/No, base64 `image` or, with
`image_folder`, `image_path` under that folder, the format of spec 4.3 and the fork); id = box key = `index`.
* Prompt: the question with "Please answer yes or no." replaced by "Please answer the question only a single word
  yes or no." (the reference).
* Ground truth: the two questions of an image are paired by `image_path`, or, without that column, by the
  `image` cell (VLMEvalKit stores a short row index in place of a repeated image).
* Score: official `eval_tool/calculation.py`: per category acc (all questions) and acc+ (images whose questions
  are all right; MME has 2 per image), category score = 100*acc + 100*acc+ (max 200), perception = sum over the
  10 perception categories, cognition = sum over the 4 cognition categories.  Yes/no: `answer_extraction.mme_yes_no`.
"""
from collections import OrderedDict, defaultdict

from mg_llava.errors import DataError, ScoreError

from .. import loaders as L
from ..answer_extraction import mme_yes_no
from . import Benchmark

MME_FROM, MME_TO = 'Please answer yes or no.', 'Please answer the question only a single word yes or no.'
MME_PERCEPTION = ['existence', 'count', 'position', 'color', 'posters', 'celebrity', 'scene', 'landmark',
                  'artwork', 'OCR']
MME_COGNITION = ['commonsense_reasoning', 'numerical_calculation', 'text_translation', 'code_reasoning']


def read_questions(data, image_folder=None, annotations=None):
    if not data.endswith('.tsv'):
        raise ScoreError(data, '', 'mme questions are read from a VLMEvalKit .tsv file')
    _, rows = L.read_tsv_cells(data, 'index', 'question', 'image_path' if image_folder else 'image')
    images = [None] * len(rows) if image_folder else L.tsv_images(data, rows)
    out = []
    for (rowno, row), image in zip(rows, images):
        where = f'row {rowno}'
        key = L.norm_id(L.cell(data, where, row, 'index'), data, where)
        text = L.cell(data, where, row, 'question').replace(MME_FROM, MME_TO)
        if image_folder:  # the reference reads image_folder/image_path
            image = L.folder_image(image_folder, L.cell(data, where, row, 'image_path'), data, where)
        out.append(L.question(key, text, image, key, f'{data} {where}'))
    return out


def load_mme(path, annotations=None):
    """Ground truth -> items {id, category, image (pairing key), answer 'yes'|'no'}."""
    items = []
    for rowno, row in L.read_tsv(path):
        where = f'row {rowno}'
        L.require_fields(path, where, row, 'index', 'category', 'answer')
        key = L.norm_id(row['index'], path, where)
        image = row.get('image_path') or (L.norm_id(row['_image_ref']) if row.get('_image_ref') else key)
        items.append({'id': key, 'category': row['category'], 'image': image,
                      'answer': L.yes_no_label(path, where, row['answer']), '_where': where})
    return L.unique(items, path)


def mme_scores(items, predictions, yes_no=mme_yes_no):
    """items: {id, category, image (pairing key), answer 'yes'|'no'}.

    -> perception, cognition, total, categories {name: {score, acc, acc_plus, n}}, absent_categories."""
    by_cat = defaultdict(list)
    for it in items:
        pred = yes_no(predictions[it['id']]) if it['id'] in predictions else None
        by_cat[it['category']].append((it['image'], int(pred == it['answer'])))
    categories = OrderedDict()
    official = MME_PERCEPTION + MME_COGNITION
    for cat in sorted(by_cat, key=lambda c: (official.index(c) if c in official else len(official), c)):
        rows = by_cat[cat]
        per_image = defaultdict(list)
        for image, hit in rows:
            per_image[image].append(hit)
        acc = sum(h for _, h in rows) / len(rows)
        acc_plus = sum(all(v) for v in per_image.values()) / len(per_image)
        categories[cat] = OrderedDict([('score', 100.0 * acc + 100.0 * acc_plus), ('acc', 100.0 * acc),
                                       ('acc_plus', 100.0 * acc_plus), ('n', len(rows))])
    perception = sum(categories[c]['score'] for c in MME_PERCEPTION if c in categories)
    cognition = sum(categories[c]['score'] for c in MME_COGNITION if c in categories)
    absent = [c for c in MME_PERCEPTION + MME_COGNITION if c not in categories]
    return OrderedDict([('perception', perception), ('cognition', cognition), ('total', perception + cognition),
                        ('n', len(items)), ('missing', sum(it['id'] not in predictions for it in items)),
                        ('categories', categories), ('absent_categories', absent)])


def check_data(data, image_folder=None):
    if not data.endswith('.tsv'):
        L.check_readable(data)
        raise DataError(data, '', 'mme questions are read from a VLMEvalKit .tsv file')
    header = L.check_tsv_columns(data, 'index', 'question', 'image_path' if image_folder else 'image')
    if 'answer' in header and 'category' not in header:  # load_mme scores by it
        raise DataError(data, '', "header row has 'answer' but lacks 'category' (MME scores per category)")


BENCHMARKS = (Benchmark('mme', read_questions=read_questions, read_answers=load_mme, score=mme_scores,
                        headline_keys=('perception', 'cognition'), check_data=check_data),)
