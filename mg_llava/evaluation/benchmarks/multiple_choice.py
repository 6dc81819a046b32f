"""Multiple choice: MMBench, SEED, ScienceQA, AI2D, MMMU, MMStar (VLMEvalKit / LMUData TSVs).

`data`: a TSV with columns `index`, `question`, base64 `image` (a cell shorter than 16 characters is the index of
the row holding the image), option columns `A`..`Z` (blank = no such option), optional `hint`, and for scoring
`answer` (a letter), optional `category`, `l2-category`, `split`.  id = box key = `index`.  A TSV without
`answer` (a test split) has questions but cannot be scored locally.

* Prompt (spec 4.2): `[hint\\n]question\\nA. ...\\nB. ...\\n` + "Answer with the option's letter from the given
  choices directly." (the Chinese suffix when the text has CJK characters, xtuner `is_cn_string`).
* MMMU rows with a blank `A` are open questions: A := answer text, B := 'Other Answers', answer := 'A'
  (VLMEvalKit MMMU_preproc); a non-letter MMMU answer is the re-formulated option A.
* Score: the option letter extracted from the prediction (`answer_extraction`, `--option-extractor`) equals the
  answer.  Plain accuracy (SEED, SQA, AI2D, MMMU, MMStar) or MMBench circular accuracy: rows whose `index` differ
  by multiples of 1e6 are rotations of one question; the question (main row, index < 1e6) is right only if every
  rotation is right (fork/xtuner `MultipleChoiceDataset.evaluate`, VLMEvalKit circular eval).
"""
import re
import string
from collections import OrderedDict, defaultdict

from .. import loaders as L
from ..answer_extraction import OPTION_EXTRACTORS, extract_option
from ..benchmark_metrics import grouped_accuracy, mean_pct
from mg_llava.errors import ScoreError
from . import Benchmark

MC_SUFFIX = "Answer with the option's letter from the given choices directly."
MC_SUFFIX_CN = '请直接回答选项字母。'
_CJK = re.compile('[\u4e00-\u9fff]')  # xtuner is_cn_string
CIRCULAR_STRIDE = 1_000_000


def multiple_choice_text(question, options, hint=None):
    """Spec 4.2 multiple-choice prompt; options = [(letter, text)] in order."""
    text = (hint + '\n' if hint else '') + question + '\n' + ''.join(f'{k}. {v}\n' for k, v in options)
    return text + (MC_SUFFIX_CN if _CJK.search(text) else MC_SUFFIX)


def read_questions(data, image_folder=None, annotations=None, mmmu=False):
    _, rows = L.read_tsv_cells(data, 'index', 'question', 'image')
    out = []
    for (rowno, row), image in zip(rows, L.tsv_images(data, rows)):
        where = f'row {rowno}'
        key = L.norm_id(L.cell(data, where, row, 'index'), data, where)
        if mmmu and not row.get('A'):  # VLMEvalKit/xtuner MMMU_preproc: open question -> 2 options
            row = dict(row, A=row.get('answer', ''), B='Other Answers')
        options = [(k, row[k]) for k in string.ascii_uppercase if row.get(k)]
        text = multiple_choice_text(L.cell(data, where, row, 'question'), options, row.get('hint') or None)
        out.append(L.question(key, text, image, key, f'{data} {where}'))
    return out


def load_multiple_choice(path, mmmu=False, circular=False):
    """Ground truth -> items {id, answer (letter), options {letter: text}, [index int], category, l2_category,
    split}."""
    items = []
    for rowno, row in L.read_tsv(path):
        where = f'row {rowno}'
        if 'answer' not in row:
            raise ScoreError(path, '', 'no "answer" column (a test split?): it cannot be scored locally')
        L.require_fields(path, where, row, 'index')
        if mmmu and not row.get('A'):
            row['A'], row['B'] = row.get('answer', ''), 'Other Answers'
        options = {k: row[k] for k in string.ascii_uppercase if row.get(k)}
        answer = row.get('answer', '')
        if mmmu and answer not in string.ascii_uppercase:
            answer = 'A'  # VLMEvalKit: a non-letter MMMU answer is the re-formulated option A
        if answer not in options:
            raise ScoreError(path, where, f'answer {answer!r} is not one of its options {sorted(options)}')
        item = {'id': L.norm_id(row['index'], path, where), 'answer': answer, 'options': options,
                'category': row.get('category'), 'l2_category': row.get('l2-category'), 'split': row.get('split'),
                '_where': where}
        if circular:
            try:
                item['index'] = int(item['id'])
            except ValueError:
                raise ScoreError(path, where, f'circular evaluation needs an integer index, got {row["index"]!r}')
        items.append(item)
    return L.unique(items, path)


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
        out['accuracy'] = mean_pct(hits)
        out['vanilla_accuracy'] = mean_pct(row_hit)
        out['n'] = len(main)
        out['num_rows'] = len(items)
        scored = main
    else:
        hits, scored = row_hit, items
        out['accuracy'] = mean_pct(hits)
        out['n'] = len(items)
    out['missing'] = sum(it['id'] not in predictions for it in items)
    out['unextracted'] = sum(it['id'] in extracted and extracted[it['id']] is None for it in items)
    out['categories'] = grouped_accuracy(scored, hits, 'category')
    for key, name in (('l2_category', 'l2_categories'), ('split', 'splits')):
        groups = grouped_accuracy(scored, hits, key)
        if groups:
            out[name] = groups
    return out


def check_data(data, image_folder=None):
    L.check_tsv_columns(data, 'index', 'question', 'image')


def _benchmark(name, mmmu=False, circular=False):
    def questions(data, image_folder=None, annotations=None):
        return read_questions(data, image_folder, annotations, mmmu=mmmu)

    def answers(data, annotations=None):
        return load_multiple_choice(data, mmmu=mmmu, circular=circular)

    def score(items, predictions, option_extractor='robust'):
        return multiple_choice_scores(items, predictions, circular=circular,
                                      extractor=OPTION_EXTRACTORS[option_extractor])

    return Benchmark(name, read_questions=questions, read_answers=answers, score=score, check_data=check_data,
                     options=('option_extractor',))


BENCHMARKS = (_benchmark('mmbench', circular=True), _benchmark('seed'), _benchmark('sqa'), _benchmark('ai2d'),
              _benchmark('mmmu', mmmu=True), _benchmark('mmstar'))
