"""HallusionBench.

`data`: the official `HallusionBench.json` (list of {category VD|VS, subcategory, visual_input, set_id, figure_id,
question_id, question, gt_answer '1'|'0', filename}; images `filename` under `image_folder`, none when
visual_input is '0'); id = box key = "{category}_{subcategory}_{visual_input}_{set_id}_{figure_id}_{question_id}"
(`hallusion_id`), which keeps set/figure/question at `_`-positions 3/4/5 like VLMEvalKit's index.  Or
VLMEvalKit's TSV: `index` (positions 3/4/5 give set/figure/question), `question`, base64 `image` (empty: a
text-only question), `category`, `l2-category` (= subcategory), `answer` Yes/No; id = the stripped `index`.
* Prompt: question + "\\nPlease answer the question with yes or no.".
* Score: official `utils.py` (tianyi-lab/HallusionBench): aAcc over questions; fAcc over figures (category,
  subcategory, set_id, figure_id), a figure right when all its questions are, VS questions without a figure
  (figure_id 0) excluded; qAcc over question pairs (category, subcategory, set_id, question_id) across figures.
  The official judge is GPT-4 ("correct"/"incorrect"/"unclear"); here the judge is the deterministic yes/no
  extraction (VLMEvalKit YOrN, as the fork) with undecided answers playing "unclear", which the official rule
  counts as correct only for VS questions without a figure.
"""
from collections import OrderedDict, defaultdict

from mg_llava.errors import ScoreError

from .. import loaders as L
from ..answer_extraction import yorn_extraction
from ..benchmark_metrics import mean_pct
from . import Benchmark

HALLUSION_FIELDS = ('category', 'subcategory', 'visual_input', 'set_id', 'figure_id', 'question_id')


def hallusion_id(record):
    """Prediction id of one HallusionBench.json record."""
    return '_'.join(str(record[k]) for k in HALLUSION_FIELDS)


def read_questions(data, image_folder=None, annotations=None):
    if data.endswith('.tsv'):
        return L.tsv_questions(data, lambda question: question + L.YES_NO, raw_id=True, optional_images=True)
    out = []
    for i, r in enumerate(L.json_list(data)):
        where = f'[{i}]'
        L.require_fields(data, where, r, *HALLUSION_FIELDS, 'question')
        image = None  # visual_input '0': a text-only question
        if str(r['visual_input']) != '0':
            L.require_fields(data, where, r, 'filename')
            image = L.folder_image(image_folder, r['filename'], data, where)
        key = hallusion_id(r)
        out.append(L.question(key, r['question'] + L.YES_NO, image, key, f'{data} {where}'))
    return out


def load_hallusion(path, annotations=None):
    """Ground truth -> items {id, category, subcategory, set_id, figure_id, question_id, answer 'yes'|'no'}."""
    items = []
    if path.endswith('.tsv'):
        for rowno, row in L.read_tsv(path):
            where = f'row {rowno}'
            L.require_fields(path, where, row, 'index', 'answer')
            parts = row['index'].split('_')
            if len(parts) < 6:
                raise ScoreError(path, where, f'index {row["index"]!r} lacks the _set_figure_question fields')
            items.append({'id': row['index'], 'category': row.get('category', ''),
                          'subcategory': row.get('l2-category', ''), 'set_id': parts[3], 'figure_id': parts[4],
                          'question_id': parts[5], 'answer': L.yes_no_label(path, where, row['answer']),
                          '_where': where})
        return L.unique(items, path)
    data = L.read_json(path)
    if not isinstance(data, list):
        raise ScoreError(path, '', 'expected the HallusionBench.json list')
    for i, r in enumerate(data):
        where = f'[{i}]'
        L.require_fields(path, where, r, *HALLUSION_FIELDS, 'gt_answer')
        if str(r['gt_answer']) not in ('0', '1'):
            raise ScoreError(path, where, f'gt_answer must be "0" or "1", got {r["gt_answer"]!r}')
        item = {k: str(r[k]) for k in HALLUSION_FIELDS}
        item.update(id=hallusion_id(r), answer='yes' if str(r['gt_answer']) == '1' else 'no', _where=where)
        items.append(item)
    return L.unique(items, path)


def _hallusion_correct(item, predictions, yes_no):
    if item['id'] not in predictions:
        return 0
    pred = yes_no(predictions[item['id']])
    if pred is None:  # "unclear": official rule counts it right only for VS questions without a figure
        return int(item['category'] == 'VS' and str(item['figure_id']) == '0')
    return int(pred == item['answer'])


def _hallusion_rates(items, correct):
    figures, pairs = defaultdict(list), defaultdict(list)
    for it, c in zip(items, correct):
        base = (it['category'], it['subcategory'], str(it['set_id']))
        if not (it['category'] == 'VS' and str(it['figure_id']) == '0'):
            figures[base + (str(it['figure_id']),)].append(c)
        pairs[base + (str(it['question_id']),)].append(c)
    return OrderedDict([('aAcc', mean_pct(correct)),
                        ('fAcc', mean_pct(all(v) for v in figures.values())),
                        ('qAcc', mean_pct(all(v) for v in pairs.values())),
                        ('n', len(items)), ('num_figures', len(figures)), ('num_pairs', len(pairs))])


def hallusion_scores(items, predictions, yes_no=yorn_extraction):
    """items: {id, category 'VD'|'VS', subcategory, set_id, figure_id, question_id, answer 'yes'|'no'}.

    -> aAcc, fAcc, qAcc (overall), n, missing, categories {VD|VS: {aAcc, fAcc, qAcc, ...}}."""
    correct = [_hallusion_correct(it, predictions, yes_no) for it in items]
    out = _hallusion_rates(items, correct)
    out['missing'] = sum(it['id'] not in predictions for it in items)
    cats = OrderedDict()
    for cat in sorted({it['category'] for it in items}):
        idx = [i for i, it in enumerate(items) if it['category'] == cat]
        cats[cat] = _hallusion_rates([items[i] for i in idx], [correct[i] for i in idx])
    out['categories'] = cats
    return out


def check_data(data, image_folder=None):
    if data.endswith('.tsv'):
        L.check_tsv_columns(data, 'index', 'question', 'image')
    else:
        L.check_json_records(data, fields=HALLUSION_FIELDS + ('question', 'gt_answer'))


BENCHMARKS = (Benchmark('hallusion', read_questions=read_questions, read_answers=load_hallusion,
                        score=hallusion_scores, headline_keys=('aAcc', 'fAcc', 'qAcc'), check_data=check_data),)
