"""Benchmark-level aggregation: items (ground truth) + predictions -> metric dict, all rates in percent.

Common contract: `items` is a list of dicts with a unique string `id` (see `loaders` for the fields each
benchmark needs); `predictions` maps id -> prediction text. An item without a prediction is scored as wrong and
counted in `missing`. Items are never dropped.

* multiple choice: plain accuracy (SEED, SQA, AI2D, MMMU, MMStar) or MMBench circular accuracy: rows whose
  `index` differ by multiples of 1e6 are rotations of one question; the question (main row, index < 1e6) is right
  only if every rotation is right (fork/xtuner `MultipleChoiceDataset.evaluate`, VLMEvalKit circular eval).
* MME: official `eval_tool/calculation.py`: per category acc (all questions) and acc+ (images whose questions are
  all right; MME has 2 per image), category score = 100*acc + 100*acc+ (max 200), perception = sum over the 10
  perception categories, cognition = sum over the 4 cognition categories.
* HallusionBench: official `utils.py` (tianyi-lab/HallusionBench): aAcc over questions; fAcc over figures
  (category, subcategory, set_id, figure_id), a figure right when all its questions are, VS questions without a
  figure (figure_id 0) excluded; qAcc over question pairs (category, subcategory, set_id, question_id) across
  figures.  The official judge is GPT-4 ("correct"/"incorrect"/"unclear"); here the judge is the deterministic
  yes/no extraction (VLMEvalKit YOrN, as the fork) with undecided answers playing "unclear", which the official
  rule counts as correct only for VS questions without a figure.
* POPE: LLaVA `eval_pope.py`: per split TP/FP/TN/FN with 'yes' positive, accuracy, precision, recall, F1,
  yes-ratio; headline = mean over splits.  Divisions by zero give 0 (the reference raises).
* GQA: official `eval.py` accuracy over balanced questions, plus binary (structural type != 'query') / open.
"""
from collections import OrderedDict, defaultdict

from .answer_extraction import extract_option, mme_yes_no, pope_yes_no, yorn_extraction
from .vqa_metrics import gqa_match

CIRCULAR_STRIDE = 1_000_000

MME_PERCEPTION = ['existence', 'count', 'position', 'color', 'posters', 'celebrity', 'scene', 'landmark',
                  'artwork', 'OCR']
MME_COGNITION = ['commonsense_reasoning', 'numerical_calculation', 'text_translation', 'code_reasoning']


def _pct(hits, total):
    return 100.0 * hits / total if total else 0.0


def _mean_pct(values):
    values = list(values)
    return _pct(sum(values), len(values))


def _grouped_accuracy(items, hits, key):
    groups = defaultdict(list)
    for it, h in zip(items, hits):
        if it.get(key) not in (None, ''):
            groups[it[key]].append(h)
    return OrderedDict((k, _mean_pct(v)) for k, v in sorted(groups.items()))


def average_of_scores(items, predictions, score_fn, name):
    """{name: mean (x100) of score_fn(prediction, item), n, missing}; a missing prediction scores 0."""
    scores = [score_fn(predictions[it['id']], it) if it['id'] in predictions else 0.0 for it in items]
    return OrderedDict([(name, 100.0 * sum(scores) / len(scores) if scores else 0.0), ('n', len(items)),
                        ('missing', sum(it['id'] not in predictions for it in items))])


# ---------------------------------------------------------------------------------------------------------------
def multiple_choice_scores(items, predictions, circular=False, extractor=extract_option):
    """items: {id, answer (letter), options {letter: text}, [index int], [category], [l2_category], [split]}.

    Returns accuracy (circular for MMBench), n, missing, unextracted, categories (+ l2_categories / splits when
    present); circular mode adds vanilla_accuracy (per row) and num_rows."""
    extracted = {}
    for it in items:
        if it['id'] in predictions:
            extracted[it['id']] = extractor(predictions[it['id']], it['options'])
    row_hit = [int(extracted.get(it['id']) is not None and extracted[it['id']] == it['answer']) for it in items]
    out = OrderedDict()
    if circular:
        by_index = {it['index']: h for it, h in zip(items, row_hit)}
        group_hits = defaultdict(list)
        for it in items:
            group_hits[it['index'] % CIRCULAR_STRIDE].append(by_index[it['index']])
        # Only questions whose main row (index < 1e6) is present are counted, as the fork does.
        main = [it for it in items if it['index'] < CIRCULAR_STRIDE]
        hits = [int(all(group_hits[it['index']])) for it in main]
        out['accuracy'] = _mean_pct(hits)
        out['vanilla_accuracy'] = _mean_pct(row_hit)
        out['n'] = len(main)
        out['num_rows'] = len(items)
        scored = main
    else:
        hits, scored = row_hit, items
        out['accuracy'] = _mean_pct(hits)
        out['n'] = len(items)
    out['missing'] = sum(it['id'] not in predictions for it in items)
    out['unextracted'] = sum(it['id'] in extracted and extracted[it['id']] is None for it in items)
    out['categories'] = _grouped_accuracy(scored, hits, 'category')
    for key, name in (('l2_category', 'l2_categories'), ('split', 'splits')):
        groups = _grouped_accuracy(scored, hits, key)
        if groups:
            out[name] = groups
    return out


# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
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
    return OrderedDict([('aAcc', _mean_pct(correct)),
                        ('fAcc', _mean_pct(all(v) for v in figures.values())),
                        ('qAcc', _mean_pct(all(v) for v in pairs.values())),
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


# ---------------------------------------------------------------------------------------------------------------
def pope_split_scores(labels, preds):
    """labels, preds: lists of 'yes'/'no' -> dict (percent) with the confusion counts."""
    tp = sum(p == 'yes' and t == 'yes' for p, t in zip(preds, labels))
    fp = sum(p == 'yes' and t != 'yes' for p, t in zip(preds, labels))
    tn = sum(p == 'no' and t != 'yes' for p, t in zip(preds, labels))
    fn = sum(p == 'no' and t == 'yes' for p, t in zip(preds, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(labels)
    return OrderedDict([('f1', 100.0 * f1), ('accuracy', _pct(tp + tn, n)), ('precision', 100.0 * precision),
                        ('recall', 100.0 * recall), ('yes_ratio', _pct(sum(p == 'yes' for p in preds), n)),
                        ('n', n), ('tp', tp), ('fp', fp), ('tn', tn), ('fn', fn)])


def pope_scores(items, predictions, yes_no=pope_yes_no):
    """items: {id, split, label 'yes'|'no'} -> f1/accuracy/precision/recall/yes_ratio (mean of splits), splits.

    A missing prediction is counted as the wrong answer (the opposite of the label)."""
    per_split = defaultdict(lambda: ([], []))
    for it in items:
        label = 'no' if it['label'] == 'no' else 'yes'  # eval_pope: anything but 'no' is positive
        if it['id'] in predictions:
            pred = yes_no(predictions[it['id']])
        else:
            pred = 'no' if label == 'yes' else 'yes'
        per_split[it['split']][0].append(label)
        per_split[it['split']][1].append(pred)
    splits = OrderedDict((s, pope_split_scores(*per_split[s])) for s in sorted(per_split))
    out = OrderedDict()
    for key in ('f1', 'accuracy', 'precision', 'recall', 'yes_ratio'):
        out[key] = sum(v[key] for v in splits.values()) / len(splits) if splits else 0.0
    out['n'] = len(items)
    out['missing'] = sum(it['id'] not in predictions for it in items)
    out['splits'] = splits
    return out


# ---------------------------------------------------------------------------------------------------------------
def gqa_scores(items, predictions):
    """items: {id, answer, [balanced bool], [structural type]} -> accuracy, binary, open, n, missing."""
    scored = [it for it in items if it.get('balanced', True)]
    hits = [gqa_match(predictions[it['id']], it['answer']) if it['id'] in predictions else 0.0 for it in scored]
    out = OrderedDict([('accuracy', _mean_pct(hits))])
    typed = [(it.get('structural'), h) for it, h in zip(scored, hits) if it.get('structural')]
    if typed:
        out['binary'] = _mean_pct(h for s, h in typed if s != 'query')
        out['open'] = _mean_pct(h for s, h in typed if s == 'query')
    out['n'] = len(scored)
    out['missing'] = sum(it['id'] not in predictions for it in scored)
    return out
