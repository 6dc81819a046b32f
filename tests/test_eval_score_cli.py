"""CLI tests of `python -m mg_llava.evaluation.score` on the hand-made fixtures in tests/fixtures/eval/.

Each expected number is derived in the comment next to it. Every run is the literal `python -m` command in a
subprocess: the scorer is stdlib-only and `import mg_llava` imports nothing heavy, so a run takes ~0.2 s
(test_scorer_runs_without_torch checks that it never needs torch, mmengine, transformers or bitsandbytes).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / 'tests' / 'fixtures' / 'eval'


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, '-m', 'mg_llava.evaluation.score', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)


def score(benchmark, data, preds, *extra):
    out = run_cli('--benchmark', benchmark, '--data', FIX / data, '--predictions', FIX / preds, *extra)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout  # exactly one JSON object
    return json.loads(lines[0])


def assert_subset(result, expected):
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_subset(result[key], value)
        elif isinstance(value, float):
            assert result[key] == pytest.approx(value, abs=1e-9), key
        else:
            assert result[key] == value, key


MC_PLAIN = {  # mc_plain.tsv: 'red' = option A text (right), 'The answer is B' (right), 'A' for C (wrong), 'D' (right)
    'accuracy': 75.0, 'n': 4, 'missing': 0, 'unextracted': 0,
    'categories': {'Scene Understanding': 100.0, 'Instance Identity': 50.0}}

CASES = {
    # 8 rows = questions 0..3 (+ rotations 1000000, 1000001, 1000003, 2000003).  Rows: 0 'A' ok, 1000000 '(D)' ok,
    # 1 'B.' ok, 1000001 'I am not sure' -> no letter, 2 'C) green' ok, 3 'd' ok, 1000003 missing, 2000003 'B' ok:
    # 6/8 rows; questions 0 and 2 survive circular evaluation, 1 and 3 do not -> 2/4.
    'mmbench': ('mmbench_dev.tsv', 'mmbench_pred.jsonl', {
        'accuracy': 50.0, 'vanilla_accuracy': 75.0, 'n': 4, 'num_rows': 8, 'missing': 1, 'unextracted': 1,
        'categories': {'attribute': 100.0, 'relation': 0.0}, 'l2_categories': {'perception': 100.0, 'reasoning': 0.0},
        'splits': {'dev': 50.0}, 'option_extractor': 'robust'}),
    'seed': ('mc_plain.tsv', 'mc_plain_pred.jsonl', MC_PLAIN),
    'ai2d': ('mc_plain.tsv', 'mc_plain_pred.jsonl', MC_PLAIN),
    'mmstar': ('mc_plain.tsv', 'mc_plain_pred.jsonl', MC_PLAIN),
    # 'E' among five options (right), '(B) no' (right), 'C' where only A/B exist (no letter, wrong) -> 2/3
    'sqa': ('sqa.tsv', 'sqa_pred.jsonl', {
        'accuracy': 200 / 3, 'n': 3, 'unextracted': 1,
        'categories': {'natural science': 50.0, 'language science': 100.0}}),
    # 100 'B' right; 101 open question -> A='42', B='Other Answers', answer A; '42' names A (right);
    # 102 open, '7' matches neither (wrong, unextracted); 103 'I' = ninth option (right) -> 3/4
    'mmmu': ('mmmu.tsv', 'mmmu_pred.jsonl', {
        'accuracy': 75.0, 'n': 4, 'unextracted': 1, 'splits': {'dev': 100.0, 'validation': 200 / 3},
        'categories': {'Math': 200 / 3, 'Art': 100.0}}),
    # 0.9 ('two' = 3 of 10 '2'), 0.6 ('The dog!' = 2 of 10), 0.3 ('Dont' = 1 of 10), 0 (missing) -> 1.8 / 4
    'textvqa': ('textvqa_val.json', 'textvqa_pred.jsonl', {'accuracy': 45.0, 'n': 4, 'missing': 1}),
    # 1.0 (' hello   world '), 0.7 (3 edits / 10), 0 ('12' vs '12345': 0.4 < 0.5) -> 1.7 / 3
    'docvqa': ('docvqa_val.json', 'docvqa_pred.jsonl', {'anls': 170 / 3, 'n': 3, 'missing': 0}),
    # strip+lower exact match, max over golds: ' john smith ' ok, 'BIG BOOK' = 2nd gold ok, 'No.' wrong (the '.'
    # stays), row 3 missing, 'Jane  Doe' wrong (inner whitespace is not collapsed) -> 2/5
    'ocrvqa': ('ocrvqa_test.tsv', 'ocrvqa_pred.jsonl', {'accuracy': 40.0, 'n': 5, 'missing': 1}),
    # 104~100 ok, 0.47~45% ok, yes=Yes ok, 0.0 vs 0 (zero gold: string) wrong, 2020~2019 ok, 106 vs 100 wrong
    'chartqa': ('chartqa_test.json', 'chartqa_pred.jsonl', {'relaxed_accuracy': 400 / 6, 'n': 6, 'missing': 0}),
    # existence: 'Yes','No.','yes, there is' right, 'There is none' -> other: acc 3/4, acc+ 1/2 -> 125;
    # count: 'No' wrong, 'no' right -> 50 + 0; commonsense_reasoning: 'Yes' right, 1 missing -> 50 + 0
    'mme': ('mme.tsv', 'mme_pred.jsonl', {
        'perception': 175.0, 'cognition': 50.0, 'total': 225.0, 'n': 8, 'missing': 1,
        'categories': {'existence': {'score': 125.0, 'acc': 75.0, 'acc_plus': 50.0},
                       'count': {'score': 50.0, 'acc': 50.0, 'acc_plus': 0.0},
                       'commonsense_reasoning': {'score': 50.0, 'acc': 50.0, 'acc_plus': 0.0}}}),
    # correct: VD set0 fig0 q0/q1 yes, fig1 q0 NO, fig1 q1 yes; VD set1 fig0 q0 yes, q1 NO; VS fig0 "cannot
    # tell" = unclear -> right (no figure); VS fig1 right.  aAcc 6/8.  Figures (VS fig0 excluded):
    # VD0/0 ok, VD0/1 no, VD1/0 no, VS0/1 ok -> 2/4.  Pairs: VD0/q0 no, VD0/q1 ok, VD1/q0 ok, VD1/q1 no,
    # VS0/q0 ok -> 3/5.
    'hallusion': ('hallusion.json', 'hallusion_pred.jsonl', {
        'aAcc': 75.0, 'fAcc': 50.0, 'qAcc': 60.0, 'n': 8, 'missing': 0, 'num_figures': 4, 'num_pairs': 5,
        'categories': {'VD': {'aAcc': 400 / 6, 'fAcc': 100 / 3, 'qAcc': 50.0}, 'VS': {'aAcc': 100.0}}}),
    # adversarial: TP 'Yes, there is a dog.', TN 'No.', FN 'There is not a cat', FP 'Not sure' -> all 50;
    # popular: TP, TN "no, there isn't", TP, missing label-no -> FP: P 2/3, R 1, F1 0.8, acc 3/4, yes 3/4;
    # random: TP, TN, TN, TN ('No. Yes.' -> first sentence) -> all 100, yes 1/4.
    'pope': ('pope', 'pope_pred.jsonl', {
        'f1': (50 + 80 + 100) / 3, 'accuracy': 75.0, 'precision': (50 + 200 / 3 + 100) / 3,
        'recall': 250 / 3, 'yes_ratio': 50.0, 'n': 12, 'missing': 1,
        'splits': {'adversarial': {'f1': 50.0, 'tp': 1, 'fp': 1, 'tn': 1, 'fn': 1},
                   'popular': {'f1': 80.0, 'precision': 200 / 3, 'recall': 100.0, 'tp': 2, 'fp': 1, 'tn': 1, 'fn': 0},
                   'random': {'f1': 100.0, 'yes_ratio': 25.0, 'tp': 1, 'fp': 0, 'tn': 3, 'fn': 0}}}),
    # balanced: 'Yes.' -> yes ok (verify), 'Left' ok (choose), 'The table.' -> 'the table' wrong (query),
    # 20000002 missing (query); 20000001 is unbalanced and not scored.
    'gqa': ('gqa_testdev_balanced_questions.json', 'gqa_pred.jsonl', {
        'accuracy': 50.0, 'binary': 100.0, 'open': 0.0, 'n': 4, 'missing': 1}),
}


@pytest.mark.parametrize('benchmark', sorted(CASES))
def test_cli_scores_fixture(benchmark):
    data, preds, expected = CASES[benchmark]
    result = score(benchmark, data, preds)
    assert result['benchmark'] == benchmark
    assert_subset(result, expected)


def test_mmbench_fork_extractor():
    # The fork regex finds no letter in 'I am not sure' nor in 'd': rows 6 -> 5 of 8; circular unchanged.
    result = score('mmbench', 'mmbench_dev.tsv', 'mmbench_pred.jsonl', '--option-extractor', 'fork')
    assert_subset(result, {'accuracy': 50.0, 'vanilla_accuracy': 62.5, 'unextracted': 2, 'option_extractor': 'fork'})


def test_gqa_with_llava_question_file(tmp_path):
    preds = tmp_path / 'p.jsonl'
    preds.write_text('{"id": 201307251, "prediction": "yes"}\n')  # 202225914 (also asked) is missing
    out = run_cli('--benchmark', 'gqa', '--data', FIX / 'llava_gqa_testdev_balanced.jsonl',
                  '--annotations', FIX / 'gqa_testdev_balanced_questions.json', '--predictions', preds)
    assert out.returncode == 0, out.stderr
    assert_subset(json.loads(out.stdout), {'accuracy': 50.0, 'n': 2, 'missing': 1, 'binary': 100.0, 'open': 0.0})


def test_unknown_prediction_id_is_an_error(tmp_path):
    preds = tmp_path / 'p.jsonl'
    preds.write_text('{"id": "adversarial/0", "prediction": "yes"}\n{"id": "adversarial/99", "prediction": "no"}\n')
    out = run_cli('--benchmark', 'pope', '--data', FIX / 'pope', '--predictions', preds)
    assert out.returncode == 2 and out.stdout == ''
    assert str(preds) in out.stderr and "'adversarial/99'" in out.stderr


def test_malformed_prediction_line_is_an_error(tmp_path):
    preds = tmp_path / 'p.jsonl'
    preds.write_text('{"id": 0, "prediction": "A"}\n{"id": 1, "prediction": \n')
    out = run_cli('--benchmark', 'seed', '--data', FIX / 'mc_plain.tsv', '--predictions', preds)
    assert out.returncode == 2
    assert f'{preds} [line 2]: malformed JSON' in out.stderr


def test_annotations_rejected_for_other_benchmarks():
    # textvqa takes --annotations now (as its evaluation entry does): docvqa is one that does not
    out = run_cli('--benchmark', 'docvqa', '--data', FIX / 'docvqa_val.json', '--annotations', FIX / 'mme.tsv',
                  '--predictions', FIX / 'docvqa_pred.jsonl')
    assert out.returncode == 2 and 'only used by gqa' in out.stderr


# Put first on PYTHONPATH, this sitecustomize makes the heavy packages unimportable for the whole process.
_NO_HEAVY_PACKAGES = """
import sys

class _Blocked:
    NAMES = {'torch', 'torchvision', 'mmengine', 'transformers', 'bitsandbytes', 'xtuner', 'peft', 'deepspeed'}

    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in self.NAMES:
            raise ImportError(f'{name} is blocked by test_scorer_runs_without_torch')
        return None

sys.meta_path.insert(0, _Blocked())
"""


def test_scorer_runs_without_torch(tmp_path):
    """`python -m mg_llava.evaluation.score` gives the same scores in a process that cannot import torch."""
    (tmp_path / 'sitecustomize.py').write_text(_NO_HEAVY_PACKAGES)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(tmp_path), os.environ.get('PYTHONPATH')) if p))
    probe = subprocess.run([sys.executable, '-c', 'import torch'], env=env, capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode != 0 and 'blocked by test_scorer_runs_without_torch' in probe.stderr  # blocker is live
    args = ('--benchmark', 'mmbench', '--data', FIX / 'mmbench_dev.tsv', '--predictions', FIX / 'mmbench_pred.jsonl')
    blocked, normal = run_cli(*args, env=env), run_cli(*args)
    assert blocked.returncode == 0, blocked.stderr
    assert normal.returncode == 0, normal.stderr
    assert json.loads(blocked.stdout) == json.loads(normal.stdout)
    assert_subset(json.loads(blocked.stdout), CASES['mmbench'][2])
