"""Unit tests of mg_llava.evaluation: answer extraction, per-question VQA metrics, benchmark aggregates, loaders.

Expected values are worked out by hand in the comments (or are the reference scorers' documented quirks).
The modules are imported without running mg_llava/__init__.py (it imports torch through mg_llava.compat,
~4 s); the scoring code itself is stdlib-only, which test_scoring_modules_import_no_heavy_packages checks.
"""
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _import_eval(name):
    """mg_llava.evaluation.<name>, importing the `mg_llava` package __init__ only if something already did."""
    full = f'mg_llava.evaluation.{name}'
    if 'mg_llava' in sys.modules:
        return importlib.import_module(full)
    sys.modules['mg_llava'] = stub = types.ModuleType('mg_llava')
    stub.__path__ = [str(REPO / 'mg_llava')]
    try:
        return importlib.import_module(full)
    finally:  # leave no half-initialised package behind for later tests that import the real one
        for key in [k for k in sys.modules if k == 'mg_llava' or k.startswith('mg_llava.evaluation')]:
            del sys.modules[key]


ae = _import_eval('answer_extraction')
vm = _import_eval('vqa_metrics')
mc = _import_eval('benchmarks.multiple_choice')
mme = _import_eval('benchmarks.mme')
hb = _import_eval('benchmarks.hallusion')
pope = _import_eval('benchmarks.pope')
gqa = _import_eval('benchmarks.gqa')
ld = _import_eval('loaders')

OPTS = {'A': 'dog', 'B': 'cat', 'C': 'red car', 'D': 'car'}


# ---------------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize('prediction, expected', [
    ('B', 'B'), ('(B)', 'B'), ('B.', 'B'), ('**C**', 'C'), (' [D] ', 'D'),        # bare letter
    ('The answer is B', 'B'), ('The answer is (C).', 'C'), ('Answer: C', 'C'),   # explicit phrase
    ('Option D', 'D'), ('The correct choice is A.', 'A'),
    ('B) cat', 'B'), ('B. A is wrong', 'B'), ('C: red car', 'C'), ('(b) cat', 'B'),  # leading letter
    ('I think B', 'B'), ('Because of the dog, C', 'C'),                          # one stand-alone letter
    ('cat', 'B'), ('Red car.', 'C'), ('I see a car', 'D'),                        # option text
    ('A cat', 'B'),            # "A" is an article here; the text names option B
    ('A is correct.', 'A'),    # no option text: the lone capital A is the answer after all
    ('b', 'B'), ('(b)', 'B'), ('the answer is b.', 'B'),                          # unambiguous lower case
    ('the answer is a bird', None),   # lower-case 'a' inside a sentence is an article, not option A
    ('cat and dog', None),            # two option texts
    ('B or C', None),                 # two letters
    ('I am not sure', None), ('', None), ('   ', None), (None, None),
    ('E', None),                      # not one of the options
])
def test_extract_option(prediction, expected):
    assert ae.extract_option(prediction, OPTS) == expected


def test_extract_option_letters_beyond_d():
    nine = {k: f'opt {k}' for k in 'ABCDEFGHI'}
    assert ae.extract_option('I', nine) == 'I'
    assert ae.extract_option('I think the answer is G', nine) == 'G'
    assert ae.extract_option('E.', nine) == 'E'
    assert ae.extract_option_fork('E.') is None  # the fork regex only knows A-D


def test_extract_option_fork_reproduces_the_fork_regex():
    assert ae.extract_option_fork('Because of the dog, C') == 'B'  # first capital A-D anywhere
    assert ae.extract_option_fork('AB') == 'AB'
    assert ae.extract_option_fork('answer: c') is None
    assert ae.extract_option_fork('(D)') == 'D'


# ----------------------------------------------------------------------------------------------------- yes/no
@pytest.mark.parametrize('prediction, yorn, pope, mme', [
    ('Yes.', 'yes', 'yes', 'yes'),
    ('yes, there is', 'yes', 'yes', 'yes'),
    ('No, there is not.', 'no', 'no', 'no'),
    ('There is not a dog', None, 'no', 'other'),  # POPE: the word 'not' means no
    ('Not sure', None, 'yes', 'no'),              # POPE only checks 'No'/'no'/'not'; MME: 'no' in "not "
    ('No. Yes.', None, 'no', 'no'),               # POPE keeps only the first sentence
    ('No\nthere is', 'no', 'yes', 'no'),          # POPE splits on single spaces: "No\nthere" is one word
    ('Yes and no', None, 'no', 'yes'),
    ('There is none', None, 'yes', 'other'),
    ('(yes)', 'yes', 'yes', 'yes'),
    ('(no)', 'no', 'yes', 'no'),                  # POPE: '(no)' is not the word 'no'; MME: 4-char prefix
    ('', None, 'yes', 'other'),
])
def test_yes_no_extractors(prediction, yorn, pope, mme):
    assert ae.yorn_extraction(prediction) == yorn
    assert ae.pope_yes_no(prediction) == pope
    assert ae.mme_yes_no(prediction) == mme


# ------------------------------------------------------------------------------------------------ VQA metrics
@pytest.mark.parametrize('raw, normalised', [
    ('Two', '2'), ('ten', '10'), ('none', '0'),              # number words
    ('The cat.', 'cat'), ('an apple', 'apple'), ('a man', 'man'),  # articles, trailing period
    ('dont', "don't"), ('Isnt it?', "isn't it"),              # contractions, '?'
    ('1,000', '1000'), ('3.5', '3.5'), ('e.g.', 'eg'),        # commas, periods before a digit kept
    ('hello-world', 'hello world'), ('hello - world', 'hello world'),
    ('Yes!', 'yes'), ("It's", "it 's"), ('\tTwo\n', '2'),
    ('the answer: "yes"', 'answer: yes'),                     # ':' is not an EvalAI punctuation mark
])
def test_normalize_answer(raw, normalised):
    assert vm.normalize_answer(raw) == normalised


@pytest.mark.parametrize('prediction, answers, expected', [
    # 3 of 10 match: the 3 subsets without a match-answer give 2/3, the 7 others 3/3 -> (3*2/3 + 7)/10
    ('two', ['2', '2', 'two'] + ['3'] * 7, 0.9),
    # 'The dog!' and 'a dog' both normalise to 'dog': 2 matches -> (2*(1/3) + 8*(2/3))/10
    ('The dog!', ['a dog', 'dog'] + ['cat'] * 8, 0.6),
    ('Dont', ["don't"] + ['no'] * 9, 0.3),     # 1 match -> 9*(1/3)/10
    ('yes', ['yes'] * 4 + ['no'] * 6, 1.0),    # 4 matches: min(1, 3/3) and min(1, 4/3) -> 1
    ('maybe', ['yes'] * 10, 0.0),
    ('2', [], 0.0),
])
def test_vqa_soft_accuracy(prediction, answers, expected):
    assert vm.vqa_soft_accuracy(prediction, answers) == pytest.approx(expected, abs=1e-12)


def test_levenshtein():
    assert vm.levenshtein('kitten', 'sitting') == 3
    assert vm.levenshtein('', 'abc') == 3
    assert vm.levenshtein('abc', 'abc') == 0


@pytest.mark.parametrize('prediction, golds, expected', [
    (' hello   world ', ['Hello World'], 1.0),    # case and whitespace normalised
    ('abcdefgxyz', ['abcdefghij', 'xyz'], 0.7),   # 3 substitutions / 10 beats 7 insertions / 10
    ('12', ['12345'], 0.0),                       # 1 - 3/5 = 0.4 < 0.5 -> 0
    ('abxy', ['abcd'], 0.5),                      # exactly at the threshold: kept
    ('', [''], 1.0),
    ('abc', [], 0.0),
])
def test_anls(prediction, golds, expected):
    assert vm.anls(prediction, golds) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize('prediction, target, expected', [
    ('104', '100', True), ('95', '100', True), ('106', '100', False),
    ('0.47', '45%', True),          # 45% -> 0.45, |0.47-0.45|/0.45 = 0.044
    ('yes', 'Yes', True), ('Yes.', 'Yes', False),
    ('0.0', '0', False), ('0', '0', True),  # zero gold: string comparison, as the reference
    (' 12 \n', '12', True), ('12 apples', '12', False),
])
def test_relaxed_correctness(prediction, target, expected):
    assert vm.relaxed_correctness(prediction, target) is expected


def test_relaxed_accuracy_takes_the_best_gold():
    assert vm.relaxed_accuracy('7', ['100', '7.2']) == 1.0
    assert vm.relaxed_accuracy('7', ['100', '8']) == 0.0


def test_gqa_match():
    assert vm.gqa_match(' Yes. ', 'yes') == 1.0
    assert vm.gqa_match('The table.', 'table') == 0.0  # LLaVA's GQA rule keeps articles


# -------------------------------------------------------------------------------------------------- aggregates
def _mc(index, answer, cat='c'):
    return {'id': str(index), 'index': index, 'answer': answer, 'options': dict(OPTS), 'category': cat}


def test_circular_accuracy_needs_every_rotation():
    items = [_mc(5, 'A'), _mc(1000005, 'B'), _mc(2000005, 'C'), _mc(6, 'D'), _mc(1000006, 'A'),
             _mc(1000007, 'A')]  # a rotation whose main row (7) is absent is not a question of its own
    preds = {'5': 'A', '1000005': 'B', '2000005': 'D', '6': 'D', '1000006': 'A', '1000007': 'A'}
    out = mc.multiple_choice_scores(items, preds, circular=True)
    assert out['accuracy'] == 50.0              # question 5 fails on its third rotation, 6 passes
    assert out['vanilla_accuracy'] == pytest.approx(100.0 * 5 / 6)
    assert (out['n'], out['num_rows'], out['missing']) == (2, 6, 0)


def test_plain_accuracy_counts_missing_and_unextracted_as_wrong():
    items = [_mc(1, 'A', 'x'), _mc(2, 'B', 'x'), _mc(3, 'C', 'y'), _mc(4, 'D', 'y')]
    out = mc.multiple_choice_scores(items, {'1': 'A', '2': 'no idea', '3': 'C'})
    assert (out['accuracy'], out['missing'], out['unextracted']) == (50.0, 1, 1)
    assert out['categories'] == {'x': 50.0, 'y': 50.0}


def test_mme_acc_plus_and_category_sums():
    items = [{'id': str(i), 'category': c, 'image': img, 'answer': a} for i, (c, img, a) in enumerate([
        ('OCR', 'o1', 'yes'), ('OCR', 'o1', 'no'), ('OCR', 'o2', 'yes'), ('OCR', 'o2', 'no'),
        ('code_reasoning', 'k1', 'yes'), ('code_reasoning', 'k1', 'no')])]
    preds = {'0': 'Yes', '1': 'No', '2': 'Yes', '3': 'Yes', '4': 'Yes', '5': 'no'}
    out = mme.mme_scores(items, preds)
    # OCR: acc 3/4, acc+ 1/2 -> 75 + 50; code_reasoning: 100 + 100
    assert out['categories']['OCR']['score'] == 125.0
    assert (out['perception'], out['cognition'], out['total']) == (125.0, 200.0, 325.0)
    assert 'OCR' not in out['absent_categories'] and len(out['absent_categories']) == 12


def test_hallusion_unclear_counts_only_for_vs_without_figure():
    base = {'subcategory': 's', 'set_id': '0', 'question_id': '0', 'answer': 'yes'}
    items = [dict(base, id='vs0', category='VS', figure_id='0'), dict(base, id='vd0', category='VD', figure_id='0')]
    out = hb.hallusion_scores(items, {'vs0': 'I cannot tell.', 'vd0': 'I cannot tell.'})
    assert out['aAcc'] == 50.0                          # VS/no-figure "unclear" is right, VD is not
    assert (out['fAcc'], out['num_figures']) == (0.0, 1)  # the VS question has no figure to count


def test_pope_split_scores_without_positive_predictions():
    out = pope.pope_split_scores(['yes', 'no'], ['no', 'no'])
    assert (out['precision'], out['recall'], out['f1'], out['accuracy'], out['yes_ratio']) == (0, 0, 0, 50.0, 0)


def test_gqa_scores_skip_unbalanced_questions():
    items = [{'id': '1', 'answer': 'yes', 'balanced': True, 'structural': 'verify'},
             {'id': '2', 'answer': 'dog', 'balanced': False, 'structural': 'query'}]
    out = gqa.gqa_scores(items, {'1': 'yes', '2': 'cat'})
    assert (out['accuracy'], out['n'], out['binary'], out['open']) == (100.0, 1, 100.0, 0.0)


# ----------------------------------------------------------------------------------------------------- loaders
def test_norm_id():
    assert ld.norm_id(12) == ld.norm_id('12') == ld.norm_id(12.0) == ld.norm_id(' 12.0 ') == '12'
    assert ld.norm_id('adversarial/3') == 'adversarial/3'
    with pytest.raises(ld.ScoreError):
        ld.norm_id(None, 'p.jsonl', 'line 1')


def test_tsv_with_large_base64_image_cell(tmp_path):
    path = tmp_path / 'big.tsv'
    big = 'iVBORw0KGgo' + 'A' * 300_000  # > csv's default 128 KiB field limit
    path.write_text('index\tquestion\tA\tB\tanswer\tcategory\timage\n'
                    f'7\tq?\tx\ty\tB\tcat\t{big}\n8\tq?\tx\ty\tA\tcat\t7\n')
    items = mc.load_multiple_choice(str(path))
    assert [(it['id'], it['answer'], it['options']) for it in items] == [('7', 'B', {'A': 'x', 'B': 'y'}),
                                                                          ('8', 'A', {'A': 'x', 'B': 'y'})]
    assert max(len(str(it)) for it in items) < 500  # the base64 cell is not kept


def test_mme_pairs_by_image_reference_without_image_path(tmp_path):
    path = tmp_path / 'mme.tsv'
    # VLMEvalKit writes an image once; the image's second question holds the first row's index instead.
    path.write_text('index\tcategory\tquestion\tanswer\timage\n'
                    f'0\tcolor\tq\tYes\t{"x" * 40}\n1\tcolor\tq\tNo\t0\n'
                    f'2\tcolor\tq\tYes\t{"y" * 40}\n3\tcolor\tq\tNo\t2\n')
    items = mme.load_mme(str(path))
    assert [it['image'] for it in items] == ['0', '0', '2', '2']


def test_multiple_choice_test_split_is_an_error(tmp_path):
    path = tmp_path / 'MMBench_TEST_EN.tsv'
    path.write_text('index\tquestion\tA\tB\tcategory\n0\tq\tx\ty\tc\n')
    with pytest.raises(ld.ScoreError, match='no "answer" column'):
        mc.load_multiple_choice(str(path))


def test_read_predictions_errors_name_file_and_line(tmp_path):
    path = tmp_path / 'pred.jsonl'
    path.write_text('{"id": 1, "prediction": "A"}\n\n{"id": 2, "prediction": "B"\n')
    with pytest.raises(ld.ScoreError, match=r'pred\.jsonl \[line 3\]: malformed JSON'):
        ld.read_predictions(str(path))
    path.write_text('{"id": 1, "prediction": "A"}\n{"id": "1", "prediction": "B"}\n')
    with pytest.raises(ld.ScoreError, match=r"\[line 2\]: duplicate prediction id '1'"):
        ld.read_predictions(str(path))
    path.write_text('{"id": 1, "prediction": null}\n')
    with pytest.raises(ld.ScoreError, match=r'\[line 1\]: prediction for id'):
        ld.read_predictions(str(path))
    path.write_text('{"id": 1, "answer": "A"}\n')
    with pytest.raises(ld.ScoreError, match=r'\[line 1\]: expected an object with "id" and "prediction"'):
        ld.read_predictions(str(path))


def test_hallusion_id_matches_loader(tmp_path):
    rec = {'category': 'VD', 'subcategory': 'math', 'visual_input': '1', 'set_id': '3', 'figure_id': '1',
           'question_id': '0', 'gt_answer': '1'}
    path = tmp_path / 'hb.json'
    path.write_text(json.dumps([rec]))
    (item,) = hb.load_hallusion(str(path))
    assert item['id'] == hb.hallusion_id(rec) == 'VD_math_1_3_1_0'
    assert item['id'].split('_')[3:6] == ['3', '1', '0']  # set/figure/question where VLMEvalKit reads them


def test_scoring_modules_import_no_heavy_packages():
    code = ("import sys, types; p = types.ModuleType('mg_llava'); p.__path__ = [sys.argv[1]]; "
            "sys.modules['mg_llava'] = p; import mg_llava.evaluation, mg_llava.evaluation.score; "
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'numpy', 'mmengine') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code, str(REPO / 'mg_llava')], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'
