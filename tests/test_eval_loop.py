"""The batched evaluation loop (mg_llava.evaluation.loop), tools/test.py's argument checks and
benchmarks/eval_generate.py. The end-to-end runs of tools/test.py (checkpoint vs export, 2 processes) are in
test_train_e2e.py, next to the training run they evaluate."""
import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SPEC = dict(image_size=112, image_size_aux=256)  # the tests preset's tower sizes


@pytest.fixture(autouse=True)
def single_thread():
    """One float reduction order in every test here (greedy ties on a random model must not flip)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def model(tiny_assets):
    from mg_llava.demo.tiny_assets import build_random_model
    return build_random_model(tiny_assets).eval()


@pytest.fixture(scope='module')
def bench(tiny_world):
    return dict(name='shapes_short', benchmark='gqa', data=tiny_world['bench_short'],
                annotations=tiny_world['bench_short_gt'], image_folder=tiny_world['images'],
                box_file=tiny_world['bench_short_boxes'])


def builder(model, bench, boxes=True):
    from mg_llava.data import VisionSpec, load_box_index
    from mg_llava.evaluation.loop import SampleBuilder
    index = load_box_index(bench['box_file']) if boxes else None
    return SampleBuilder(model, VisionSpec(**SPEC), index, bench['box_file'] if boxes else None)


def questions_of(bench):
    from mg_llava.evaluation import questions as Q
    return Q.load_questions(bench['benchmark'], bench['data'], bench['image_folder'], bench['annotations'])


def test_batches_are_dealt_to_ranks_and_give_the_one_rank_predictions(model, bench, monkeypatch):
    from mg_llava.evaluation import loop
    qs, build = questions_of(bench), builder(model, bench)
    whole = loop.predict(model, qs, build, batch_size=3, progress=False)
    parts = []
    for rank in (0, 1):
        monkeypatch.setattr(loop, 'rank_and_world', lambda r=rank: (r, 2))
        parts.append(loop.predict(model, qs, build, batch_size=3, progress=False))
    assert set(whole) == {q['id'] for q in qs}
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert {**parts[0], **parts[1]} == whole
    assert len(set(whole.values())) > 1  # answers depend on the input: the comparison means something


def test_batch_size_does_not_change_predictions(model, bench):
    from mg_llava.evaluation import loop
    qs, build = questions_of(bench), builder(model, bench)
    assert loop.predict(model, qs, build, batch_size=1, progress=False) == \
        loop.predict(model, qs, build, batch_size=5, progress=False)


def test_batches_are_fixed_longest_first(model):
    from mg_llava.evaluation.loop import make_batches
    qs = [dict(id=str(i), text=' '.join(['red'] * n), image={'path': 'x'}) for i, n in enumerate([2, 5, 2, 7, 1])]
    batches = make_batches(qs, model.tokenizer, 2)
    assert [[q['id'] for q in b] for b in batches] == [['3', '1'], ['0', '2'], ['4']]


def test_missing_box_entry_names_box_file_and_question(model, bench, tmp_path):
    from mg_llava.data import DataError
    from mg_llava.evaluation import loop
    qs = questions_of(bench)
    entries = [e for e in json.loads(Path(bench['box_file']).read_text()) if e['id'] != qs[0]['box_key']]
    path = tmp_path / 'boxes.json'
    path.write_text(json.dumps(entries))
    with pytest.raises(DataError, match=rf"boxes.json.*no box entry for question '{qs[0]['id']}'"):
        loop.evaluate_benchmark(model, loop.VisionSpec(**SPEC), dict(bench, box_file=str(path)), str(tmp_path),
                                progress=False)


def test_no_box_file_gives_the_no_detection_fallback_and_text_only_questions_work(model, bench):
    from mg_llava.evaluation import loop
    qs = questions_of(bench)[:3] + [dict(id='txt', text='How many colors are there?', image=None, box_key='txt')]
    build = builder(model, bench, boxes=False)
    samples = [build(q) for q in qs]
    assert samples[-1].keys() == {'id', 'input_ids'}  # no image, no visual slots
    assert all(len(s['boxes']) == 1 and not s['boxes'].any() for s in samples[:3])  # one empty box each
    preds = loop.predict(model, qs, build, batch_size=4, progress=False)
    alone = loop.predict(model, qs[-1:], build, batch_size=1, progress=False)
    assert set(preds) == {q['id'] for q in qs} and preds['txt'] == alone['txt']


def test_evaluate_writes_predictions_scores_and_summary(model, bench, tmp_path):
    from mg_llava.evaluation import loop
    rows = loop.run_evaluation(model, SPEC, [bench], str(tmp_path), header={'checkpoint': 'ckpt.pth'},
                               batch_size=4, progress=False)
    (name, kind, result), = rows
    preds = [json.loads(x) for x in (tmp_path / 'shapes_short_predictions.jsonl').read_text().splitlines()]
    gt = json.loads(Path(bench['annotations']).read_text())
    assert [p['id'] for p in preds] == list(gt)  # file order
    right = sum(p['prediction'].rstrip('.').lower() == gt[p['id']]['answer'] for p in preds)
    assert result['accuracy'] == pytest.approx(100 * right / len(preds)) and result['n_questions'] == len(preds)
    assert json.loads((tmp_path / 'shapes_short_scores.json').read_text())['accuracy'] == result['accuracy']
    md = (tmp_path / 'summary.md').read_text()
    assert '- checkpoint: `ckpt.pth`' in md and f'| shapes_short | gqa | accuracy | {result["accuracy"]:.2f} |' in md
    rows = list(csv.reader((tmp_path / 'summary.csv').open()))
    assert ['# checkpoint', 'ckpt.pth'] in rows and ['shapes_short', 'gqa', 'open', f'{result["open"]:.2f}'] in rows


@pytest.mark.parametrize('entry, message', [
    (dict(name='x', benchmark='textvqa', data='q.jsonl', image_folder='i'), 'needs `annotations`'),
    (dict(name='x', benchmark='pope', data='pope/'), 'set `image_folder`'),
    (dict(name='x', benchmark='chartqa', data='test_human.json'), 'set `image_folder`'),
    (dict(name='x', benchmark='mmbnech', data='a.tsv'), "got 'mmbnech'"),
    (dict(name='x', benchmark='mmbench', data='a.tsv', box='b.json'), "unknown key 'box'"),
])
def test_incomplete_entries_are_rejected_with_their_name(entry, message):
    from mg_llava.evaluation.loop import check_entry
    with pytest.raises(ValueError, match=rf"evaluation entry 'x': .*{re.escape(message)}"):
        check_entry(entry)
    check_entry(dict(name='ok', benchmark='mmbench', data='a.tsv', box_file='b.json'))  # TSVs carry images


def _tools_test():
    spec = importlib.util.spec_from_file_location('tools_test', REPO / 'tools' / 'test.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tools_test_rejects_unknown_entries_and_accepts_an_empty_list(tmp_path, capsys):
    cfg = REPO / 'configs' / 'demo' / 'mg_llava_demo_sft.py'
    with pytest.raises(SystemExit, match=r"no benchmark entry named \['nope'\]"):
        _tools_test().main([str(cfg), '--export', 'x', '--benchmarks', 'nope'])
    assert _tools_test().main([str(cfg), '--export', 'x', '--cfg-options', 'evaluation.benchmarks=[]']) == 0
    assert 'nothing to evaluate' in capsys.readouterr().out


def test_eval_generate_tiny_is_faster_batched_with_identical_predictions():
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
    res = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'eval_generate.py'), '--tiny'], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r['identical'] and r['mismatches'] == 0 and r['questions'] > r['batch_size'] > 1
    assert r['speedup'] == pytest.approx(r['batched_questions_per_s'] / r['bs1_questions_per_s'], rel=0.02)


def test_interrupted_benchmark_resumes_without_redoing_finished_batches(model, bench, tmp_path, monkeypatch):
    """A missing image half-way stops the run with an error naming the file and the question; the batches
    answered before it are kept in the partial file and not generated again by the rerun."""
    import shutil

    from mg_llava.evaluation import loop
    from mg_llava.evaluation.loaders import ScoreError
    clean = loop.evaluate_benchmark(model, loop.VisionSpec(**SPEC), bench, str(tmp_path / 'clean'), batch_size=1,
                                    progress=False)
    images = Path(shutil.copytree(bench['image_folder'], tmp_path / 'images'))
    qs = questions_of(bench)
    order = [q for b in loop.make_batches(qs, model.tokenizer, 1) for q in b]
    last = max(order, key=lambda q: min(k for k, o in enumerate(order) if o['image'] == q['image']))  # seen last
    (images / Path(last['image']['path']).name).rename(tmp_path / 'moved.png')
    moved_bench = dict(bench, image_folder=str(images))
    out = tmp_path / 'run'
    with pytest.raises(ScoreError, match=rf"{Path(last['image']['path']).name} \[question ho_.*line \d+\]: "
                                         "image file not found"):
        loop.evaluate_benchmark(model, loop.VisionSpec(**SPEC), moved_bench, str(out), batch_size=1, progress=False)
    batches = loop.make_batches(qs, model.tokenizer, 1)
    first_bad = next(k for k, b in enumerate(batches) if any(q['image'] == last['image'] for q in b))
    partial = (out / 'shapes_short_predictions.partial.rank0.jsonl').read_text().splitlines()
    assert first_bad > 0 and len(partial) == sum(len(b) for b in batches[:first_bad])
    (tmp_path / 'moved.png').rename(images / Path(last['image']['path']).name)
    calls = []
    generate = model.generate
    monkeypatch.setattr(model, 'generate', lambda data, **kw: calls.append(1) or generate(data, **kw))
    again = loop.evaluate_benchmark(model, loop.VisionSpec(**SPEC), moved_bench, str(out), batch_size=1,
                                    progress=False)
    assert len(calls) == len(batches) - first_bad and again['accuracy'] == clean['accuracy']
    assert (out / 'shapes_short_predictions.jsonl').read_text() == \
        (tmp_path / 'clean' / 'shapes_short_predictions.jsonl').read_text()
    assert not list(out.glob('*.partial.*'))
