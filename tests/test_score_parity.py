"""The offline scorer reads what the evaluation loop reads (issue 8, item 6).

For every registered benchmark, the `<name>_predictions.jsonl` the loop writes, scored by
`python -m mg_llava.evaluation.score` with the entry's own `data` / `annotations`, gives exactly the loop's
scores (`<name>_scores.json`).  The loop runs for real (questions, images, prompts, batches, files) on the tiny
random model, except that generation returns canned answers (half of them the ground truth, so the scores are
not all zero).  Fixtures: tests/fixtures/eval/ (images written into tmp).

Also: LLaVA's own TextVQA answer files (keyed by the jsonl question_id, an image id, with the prompt) and POPE
predictions keyed by bare question_ids score.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / 'tests' / 'fixtures' / 'eval'
SPEC = dict(image_size=112, image_size_aux=256)  # the tests preset's tower sizes
LOOP_KEYS = ('n_questions', 'resumed', 'generated', 'model_digest', 'seconds', 'questions_per_s')
CLI_KEYS = ('benchmark', 'option_extractor')
FOLDER = '<images>'  # stands for the tmp image folder in ENTRIES

# benchmark -> its evaluation entries (every format the benchmark reads gets one where the fixtures allow)
ENTRIES = {
    'mmbench': [dict(data='mmbench_dev.tsv')],
    'seed': [dict(data='mc_plain.tsv')],
    'sqa': [dict(data='sqa.tsv')],
    'ai2d': [dict(data='mc_plain.tsv')],
    'mmmu': [dict(data='mmmu.tsv')],
    'mmstar': [dict(data='mc_plain.tsv')],
    'textvqa': [dict(data='llava_textvqa_val.jsonl', annotations='textvqa_val.json', image_folder=FOLDER)],
    'docvqa': [dict(data='docvqa_val.tsv'), dict(data='docvqa_val.json', image_folder=FOLDER)],
    'ocrvqa': [dict(data='ocrvqa_test.tsv')],
    'chartqa': [dict(data='chartqa_test.json', image_folder=FOLDER)],
    'mme': [dict(data='mme.tsv', image_folder=FOLDER)],
    'hallusion': [dict(data='hallusion.json', image_folder=FOLDER), dict(data='hallusion.tsv')],
    'pope': [dict(data='pope', image_folder=FOLDER), dict(data='pope/coco_pope_random.json', image_folder=FOLDER)],
    'gqa': [dict(data='llava_gqa_testdev_balanced.jsonl', annotations='gqa_testdev_balanced_questions.json',
                 image_folder=FOLDER)],
    'vqav2': [dict(data='llava_questions.jsonl', image_folder=FOLDER)],
    'vizwiz': [dict(data='llava_questions.jsonl', image_folder=FOLDER)],
    'llava_bench': [dict(data='llava_questions.jsonl', image_folder=FOLDER)],
    'mmvet': [dict(data='llava_questions.jsonl', image_folder=FOLDER)],
}
CASES = [(kind, i) for kind in sorted(ENTRIES) for i in range(len(ENTRIES[kind]))]
WRONG = ['I am not sure.', 'Yes', 'No.', 'B', 'The answer is A', '2', 'left']


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'mg_llava.evaluation.score', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def cli_args(benchmark, data, predictions, annotations=None):
    return ['--benchmark', benchmark, '--data', data, '--predictions', predictions] + \
        (['--annotations', annotations] if annotations else [])


def entry(kind, i, images):
    spec = dict(ENTRIES[kind][i], name=f'{kind}_{i}', benchmark=kind)
    for key in ('data', 'annotations'):
        if key in spec:
            spec[key] = str(FIX / spec[key])
    if spec.get('image_folder') == FOLDER:
        spec['image_folder'] = str(images)
    return spec


def write_images(questions):
    """A small RGB image at every image path the questions name (colour from the file name)."""
    from PIL import Image
    for q in questions:
        if q['image'] and 'path' in q['image'] and not os.path.exists(q['image']['path']):
            path = q['image']['path']
            os.makedirs(os.path.dirname(path), exist_ok=True)
            colour = tuple(sum(map(ord, os.path.basename(path))) * k % 256 for k in (3, 5, 7))
            Image.new('RGB', (5, 3), colour).save(path)


def canned_answers(questions, items):
    """Even questions get their ground truth (in the benchmark's own answer form), the others a fixed answer."""
    truth = {}
    for it in items or ():
        truth[it['id']] = (it['label'].capitalize() if 'label' in it else it['answers'][0] if 'answers' in it
                           else it['answer'])
    return {q['id']: truth[q['id']] if q['id'] in truth and k % 2 == 0 else WRONG[k % len(WRONG)]
            for k, q in enumerate(questions)}


@pytest.fixture(scope='module')
def model(tiny_assets):
    from mg_llava.demo.tiny_assets import build_random_model
    return build_random_model(tiny_assets).eval()


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """The image folder of every entry, with an image at each path an entry's questions name."""
    from mg_llava.evaluation import questions as Q
    root = tmp_path_factory.mktemp('parity_images')
    for kind, i in CASES:
        e = entry(kind, i, root)
        write_images(Q.load_questions(kind, e['data'], e.get('image_folder'), e.get('annotations')))
    return root


def canned_generation(monkeypatch, model, answers):
    """The loop's generation answers from `answers` ({question id: text}), through either seam the loop uses
    (mg_llava.inference's generate(model, data, ...) imported into the loop, or model.generate(data))."""
    from mg_llava.evaluation import loop

    def reply(data):
        return [answers[i] for i in data['ids']]
    monkeypatch.setattr(loop, 'generate', lambda m, data, *a, **kw: reply(data), raising=False)
    monkeypatch.setattr(model, 'generate', lambda data, *a, **kw: reply(data), raising=False)


def test_every_registered_benchmark_is_covered():
    from mg_llava.evaluation import benchmarks as B
    assert set(ENTRIES) == set(B.names()), 'add the new benchmark to ENTRIES'


@pytest.mark.parametrize('kind, i', CASES, ids=[f'{k}-{i}' for k, i in CASES])
def test_cli_on_the_loops_predictions_reproduces_the_loops_scores(kind, i, model, images, tmp_path, monkeypatch):
    from mg_llava.evaluation import benchmarks as B
    from mg_llava.evaluation import loop
    from mg_llava.evaluation import questions as Q
    bench = entry(kind, i, images)
    qs = Q.load_questions(kind, bench['data'], bench.get('image_folder'), bench.get('annotations'))
    items = Q.score_data(kind, bench['data'], bench.get('annotations'))
    answers = canned_answers(qs, items)
    canned_generation(monkeypatch, model, answers)
    result = loop.evaluate_benchmark(model, loop.VisionSpec(**SPEC), bench, str(tmp_path), batch_size=3,
                                     progress=False)
    name = bench['name']
    written = [json.loads(x) for x in (tmp_path / f'{name}_predictions.jsonl').read_text().splitlines()]
    assert written == [{'id': q['id'], 'prediction': answers[q['id']]} for q in qs]  # every question, file order
    out = run_cli(*cli_args(kind, bench['data'], tmp_path / f'{name}_predictions.jsonl', bench.get('annotations')))
    if not B.get(kind).scored:
        assert out.returncode == 2 and 'prediction-only' in out.stderr, out.stderr
        assert not loop.headline(kind, result) and B.get(kind).write_submission is not None
        return
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    loop_scores = json.loads((tmp_path / f'{name}_scores.json').read_text())
    assert cli['benchmark'] == kind
    assert {k: v for k, v in cli.items() if k not in CLI_KEYS} == \
        {k: v for k, v in loop_scores.items() if k not in LOOP_KEYS}
    shown = loop.headline(kind, result)
    assert shown and all(cli[k] == v for k, v in shown.items())
    assert cli['missing'] == 0 and any(v for v in shown.values())  # half the answers are right: not all zero


# ------------------------------------------------------------------ other keys the scorer accepts (item 6)
def score(*args):
    out = run_cli(*cli_args(*args))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def write_jsonl(path, rows):
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return path


def test_llava_textvqa_answer_file_scores_like_the_loops_predictions(tmp_path):
    """LLaVA's model_vqa_loader.py answers: question_id = the jsonl's (image id), prompt = the jsonl text."""
    data, ann = FIX / 'llava_textvqa_val.jsonl', FIX / 'textvqa_val.json'
    lines = [json.loads(x) for x in data.read_text().splitlines()]
    texts = ['two', 'The dog!', 'Dont', 'nokia phone']
    official = write_jsonl(tmp_path / 'ours.jsonl', [{'id': i, 'prediction': t}
                                                     for i, t in zip([34602, 34603, 34604, 34605], texts)])
    llava = write_jsonl(tmp_path / 'llava.jsonl', [
        {'question_id': q['question_id'], 'prompt': q['text'], 'text': t, 'answer_id': f'a{k}', 'model_id': 'm',
         'metadata': {}} for k, (q, t) in enumerate(reversed(list(zip(lines, texts))))])  # any order
    expected = score('textvqa', data, official, ann)
    assert expected['accuracy'] == pytest.approx((0.9 + 0.6 + 0.3 + 0.0) * 25) and expected['missing'] == 0
    assert score('textvqa', data, llava, ann) == expected
    # the image id alone is ambiguous where the image has two questions: an error that says what to do
    plain = write_jsonl(tmp_path / 'plain.jsonl', [{'id': q['question_id'], 'prediction': 'x'} for q in lines[:1]])
    out = run_cli(*cli_args('textvqa', data, plain, ann))
    assert out.returncode == 2 and 'question_id of 2 questions' in out.stderr and '"prompt"' in out.stderr
    # ... and names the question when its image has only one in `data`
    one_each = write_jsonl(tmp_path / 'one_each.jsonl', [lines[0], lines[2]])
    plain = write_jsonl(tmp_path / 'plain.jsonl', [{'id': lines[0]['question_id'], 'prediction': 'two'},
                                                   {'id': lines[2]['question_id'], 'prediction': 'Dont'}])
    assert score('textvqa', one_each, plain, ann) == \
        score('textvqa', one_each, write_jsonl(tmp_path / 'o.jsonl', [{'id': 34602, 'prediction': 'two'},
                                                                       {'id': 34604, 'prediction': 'Dont'}]), ann)


def test_llava_textvqa_answers_to_a_repeated_question_take_its_ids_in_order(tmp_path):
    ann = {'data': [{'question_id': 7, 'image_id': 'im', 'question': 'what?', 'answers': ['a'] * 10},
                    {'question_id': 9, 'image_id': 'im', 'question': 'What?', 'answers': ['b'] * 10}]}
    (tmp_path / 'ann.json').write_text(json.dumps(ann))
    line = {'question_id': 'im', 'image': 'im.jpg', 'text': 'What?\nAnswer the question using a single word or phrase.'}
    data = write_jsonl(tmp_path / 'q.jsonl', [line, line])
    llava = write_jsonl(tmp_path / 'a.jsonl', [{'question_id': 'im', 'prompt': line['text'], 'text': t}
                                               for t in ('a', 'c')])
    assert score('textvqa', data, llava, tmp_path / 'ann.json')['accuracy'] == 50.0  # 'a' -> 7 right, 'c' -> 9
    third = write_jsonl(tmp_path / 'b.jsonl', [{'question_id': 'im', 'prompt': line['text'], 'text': 'a'}] * 3)
    out = run_cli(*cli_args('textvqa', data, third, tmp_path / 'ann.json'))
    assert out.returncode == 2 and 'line 3' in out.stderr and 'asks it only 2 time(s)' in out.stderr


def test_pope_plain_question_ids_score_when_unique_over_the_splits(tmp_path):
    pope = tmp_path / 'pope'
    pope.mkdir()
    rows = {}
    for s, split in enumerate(('adversarial', 'popular', 'random')):
        src = [json.loads(x) for x in (FIX / 'pope' / f'coco_pope_{split}.json').read_text().splitlines()]
        rows[split] = [dict(r, question_id=100 * s + r['question_id']) for r in src]  # unique over the splits
        write_jsonl(pope / f'coco_pope_{split}.json', rows[split])
    preds = [('Yes' if k % 3 else 'No', split, r['question_id']) for split in rows
             for k, r in enumerate(rows[split])]
    keyed = write_jsonl(tmp_path / 'split_keys.jsonl', [{'id': f'{s}/{q}', 'prediction': p} for p, s, q in preds])
    plain = write_jsonl(tmp_path / 'plain.jsonl', [{'id': q, 'prediction': p} for p, s, q in preds])
    expected = score('pope', pope, keyed)
    assert expected['n'] == 12 and expected['missing'] == 0 and 0 < expected['f1'] < 100
    assert score('pope', pope, plain) == expected
    # LLaVA answer lines (question_id + text) are keyed the same way
    llava = write_jsonl(tmp_path / 'llava.jsonl', [{'question_id': q, 'prompt': 'p', 'text': p} for p, s, q in preds])
    assert score('pope', pope, llava) == expected
    # two keys naming one question are an error
    both = write_jsonl(tmp_path / 'both.jsonl', [{'id': 'random/200', 'prediction': 'Yes'},
                                                 {'id': 200, 'prediction': 'No'}])
    out = run_cli(*cli_args('pope', pope, both))
    assert out.returncode == 2 and "[line 2]: duplicate prediction id '200' (question 'random/200')" in out.stderr


def test_pope_plain_ids_shared_by_splits_are_refused_and_split_keys_always_work(tmp_path):
    plain = write_jsonl(tmp_path / 'plain.jsonl', [{'id': 3, 'prediction': 'No'}])
    out = run_cli(*cli_args('pope', FIX / 'pope', plain))
    assert out.returncode == 2 and 'question_id of 3 questions' in out.stderr and 'split/question_id' in out.stderr
    single = FIX / 'pope' / 'coco_pope_random.json'
    keyed = write_jsonl(tmp_path / 'keyed.jsonl', [{'id': f'random/{q}', 'prediction': 'No'} for q in range(4)])
    bare = write_jsonl(tmp_path / 'bare.jsonl', [{'id': q, 'prediction': 'No'} for q in range(4)])
    assert score('pope', single, keyed) == score('pope', single, bare)
