"""The batched evaluation loop (mg_llava.evaluation.loop), tools/test.py's argument checks and
timing/eval_generate.py. The end-to-end runs of tools/test.py (checkpoint vs export, 2 processes) are in
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

REPO = Path(__file__).resolve().parents[1]
SPEC = dict(image_size=112, image_size_aux=256)  # the tests preset's tower sizes


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """One float reduction order in every test here (greedy ties on a random model must not flip)."""


@pytest.fixture(scope='module')
def model(random_model):
    return random_model


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
    res = subprocess.run([sys.executable, str(REPO / 'timing' / 'eval_generate.py'), '--tiny'], cwd=REPO,
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
    generate = loop.generate
    monkeypatch.setattr(loop, 'generate', lambda m, data, *a, **kw: calls.append(1) or generate(m, data, *a, **kw))
    again = loop.evaluate_benchmark(model, loop.VisionSpec(**SPEC), moved_bench, str(out), batch_size=1,
                                    progress=False)
    assert len(calls) == len(batches) - first_bad and again['accuracy'] == clean['accuracy']
    assert (out / 'shapes_short_predictions.jsonl').read_text() == \
        (tmp_path / 'clean' / 'shapes_short_predictions.jsonl').read_text()
    assert not list(out.glob('*.partial.*'))


# ------------------------------------------------------------------ resume provenance (issue 7, item 4)
def crash_after(monkeypatch, model, n):
    """The loop's generation raises on its (n+1)-th call for `model` (an interrupted run); returns the list of
    calls made (batch sizes)."""
    from mg_llava.evaluation import loop
    from mg_llava.inference.generation import generate  # the real one, not an earlier test double
    calls = []

    def fake(m, data, *args, **kw):
        if m is model:
            if len(calls) == n:
                raise RuntimeError('simulated crash')
            calls.append(len(data['ids']))
        return generate(m, data, *args, **kw)
    monkeypatch.setattr(loop, 'generate', fake)
    return calls


def count_calls(monkeypatch, model):
    return crash_after(monkeypatch, model, n=-1)  # never equal: counts only


def partial_answers(out, name='shapes_short'):
    return {r['id']: r['prediction'] for f in sorted(out.glob(f'{name}_predictions.partial.rank*.jsonl'))
            for r in map(json.loads, f.read_text().splitlines())}


def test_resume_refuses_partial_answers_of_another_model_and_restart_regenerates_all(
        model, bench, tiny_assets, tmp_path, monkeypatch):
    """Crash half-way with model A, rerun with model B (other weights) into the same work dir: refused, naming
    the benchmark and both models; with restart every answer is B's (none of A's partial answers kept)."""
    from mg_llava.demo.tiny_assets import build_random_model
    from mg_llava.evaluation import loop
    from mg_llava.evaluation.resume import ResumeError, short, state_dict_digest
    model_b = build_random_model(tiny_assets, seed=1).eval()
    digest_a, digest_b = state_dict_digest(model.state_dict()), state_dict_digest(model_b.state_dict())
    assert digest_a != digest_b
    prov_a = {'model': {'export': '/exports/model_A', 'digest': digest_a}, 'config': '/configs/sft.py'}
    prov_b = {'model': {'export': '/exports/model_B', 'digest': digest_b}, 'config': '/configs/sft.py'}
    clean_b = tmp_path / 'clean_b'
    loop.run_evaluation(model_b, SPEC, [bench], str(clean_b), batch_size=2, progress=False, provenance=prov_b)

    out = tmp_path / 'run'
    crash_after(monkeypatch, model, 2)
    with pytest.raises(RuntimeError, match='simulated crash'):
        loop.run_evaluation(model, SPEC, [bench], str(out), batch_size=2, progress=False, provenance=prov_a)
    from_a = partial_answers(out)
    assert len(from_a) == 4
    meta = json.loads((out / 'shapes_short_predictions.partial.meta.json').read_text())
    assert meta['model'] == prov_a['model'] and meta['settings']['batch_size'] == 2

    calls_b = count_calls(monkeypatch, model_b)
    with pytest.raises(ResumeError) as refused:
        loop.run_evaluation(model_b, SPEC, [bench], str(out), batch_size=2, progress=False, provenance=prov_b)
    msg = str(refused.value)
    for needle in (str(out), "'shapes_short'", '/exports/model_A', short(digest_a), '/exports/model_B',
                   short(digest_b), '--restart', 'fresh --work-dir'):
        assert needle in msg, (needle, msg)
    assert calls_b == [] and partial_answers(out) == from_a  # nothing generated, nothing deleted
    with pytest.raises(ResumeError, match=r'settings\.batch_size: was 2, now 5'):  # same model, other batches
        loop.run_evaluation(model, SPEC, [bench], str(out), batch_size=5, progress=False, provenance=prov_a)

    (_, _, result), = loop.run_evaluation(model_b, SPEC, [bench], str(out), batch_size=2, progress=False,
                                          provenance=prov_b, restart=True)
    assert sum(calls_b) == 10 and result['resumed'] == 0 and result['generated'] == 10  # all regenerated
    final = (out / 'shapes_short_predictions.jsonl').read_text()
    assert final == (clean_b / 'shapes_short_predictions.jsonl').read_text()
    b_answers = {r['id']: r['prediction'] for r in map(json.loads, final.splitlines())}
    assert any(b_answers[i] != a for i, a in from_a.items())  # A's answers differ: "none kept" is tested
    md = (out / 'summary.md').read_text()
    assert f'- model_digest: `{digest_b}`' in md and '- shapes_short: all 10 answers generated in this run' in md
    assert not list(out.glob('*.partial.*'))


def test_partial_answers_without_a_fingerprint_are_refused_unless_restart(model, bench, tmp_path, monkeypatch):
    """A partial file of an older version (no meta file) has unknown provenance: refused; restart drops it."""
    from mg_llava.evaluation import loop
    from mg_llava.evaluation.resume import ResumeError
    out = tmp_path / 'run'
    out.mkdir()
    first = loop.make_batches(questions_of(bench), model.tokenizer, 5)[0]
    (out / 'shapes_short_predictions.partial.rank0.jsonl').write_text(
        ''.join(json.dumps({'id': q['id'], 'prediction': 'FROM AN UNKNOWN MODEL'}) + '\n' for q in first))
    with pytest.raises(ResumeError, match=r"(?s)'shapes_short'.*unknown provenance.*--restart"):
        loop.run_evaluation(model, SPEC, [bench], str(out), batch_size=5, progress=False)
    calls = count_calls(monkeypatch, model)
    loop.run_evaluation(model, SPEC, [bench], str(out), batch_size=5, progress=False, restart=True)
    assert sum(calls) == 10 and 'UNKNOWN' not in (out / 'shapes_short_predictions.jsonl').read_text()


def test_same_model_resume_is_byte_identical_and_reported_in_summary(model, bench, tmp_path, monkeypatch, capsys):
    from mg_llava.evaluation import loop
    from mg_llava.evaluation.resume import short
    clean = tmp_path / 'clean'
    loop.run_evaluation(model, SPEC, [bench], str(clean), header={'export': '/e'}, batch_size=2, progress=False)
    out = tmp_path / 'run'
    crash_after(monkeypatch, model, 2)
    with pytest.raises(RuntimeError, match='simulated crash'):
        loop.run_evaluation(model, SPEC, [bench], str(out), header={'export': '/e'}, batch_size=2, progress=False)
    calls = count_calls(monkeypatch, model)
    capsys.readouterr()
    (_, _, result), = loop.run_evaluation(model, SPEC, [bench], str(out), header={'export': '/e'}, batch_size=2,
                                          progress=False)
    assert sum(calls) == 6 and result['resumed'] == 4 and result['generated'] == 6
    assert (out / 'shapes_short_predictions.jsonl').read_text() == \
        (clean / 'shapes_short_predictions.jsonl').read_text()
    assert json.loads((out / 'shapes_short_scores.json').read_text())['resumed'] == 4
    assert 'shapes_short: resuming an interrupted run in' in capsys.readouterr().out
    digest = result['model_digest']
    md = (out / 'summary.md').read_text()
    assert f'- model_digest: `{digest}`' in md
    assert (f'- shapes_short: resumed 4 of 10 answers from an interrupted run (same model digest {short(digest)}, '
            'entry and settings), 6 generated in this run') in md
    rows = list(csv.reader((out / 'summary.csv').open()))
    assert ['# model_digest', digest] in rows
    assert ['shapes_short', 'gqa', 'answers_resumed', '4'] in rows and \
        ['shapes_short', 'gqa', 'answers_generated', '6'] in rows
    assert not list(out.glob('*.partial.*'))


def write_eval_config(path, benchmarks, **settings):
    path.write_text(f'evaluation = dict(benchmarks={benchmarks!r}, **{settings!r})\n')
    return str(path)


def test_tools_test_lists_every_bad_entry_file_before_building_the_model(tmp_path, bench, monkeypatch):
    from mg_llava.models import MGLLaVAModel
    tools = _tools_test()

    def never(*a, **kw):
        raise AssertionError('the model was built before the entries were checked')
    monkeypatch.setattr(MGLLaVAModel, 'from_pretrained', never)
    monkeypatch.setattr(tools, 'build_from_checkpoint', never)
    bad_gt = tmp_path / 'gt.json'
    bad_gt.write_text('{"q1": {"answer": "red"},')  # cut off
    tsv = tmp_path / 'mc.tsv'
    tsv.write_text('index\timage\tanswer\n0\tiVBOR\tA\n')  # no `question` column
    missing = str(tmp_path / 'missing_pope.jsonl')
    cfg = write_eval_config(tmp_path / 'cfg.py', [
        dict(bench),  # fine
        dict(name='pope_gone', benchmark='pope', data=missing, image_folder=bench['image_folder']),
        dict(bench, name='gt_cut', annotations=str(bad_gt), image_folder=str(tmp_path / 'no_images'),
             box_file=str(tmp_path / 'no_boxes.json')),
        dict(name='mc_cols', benchmark='mmbench', data=str(tsv)),
    ])
    for source in (['--export', str(tmp_path / 'export')], ['--checkpoint', str(tmp_path / 'x.pth')]):
        with pytest.raises(SystemExit) as e:
            tools.main([cfg, *source])
        msg = str(e.value.code)
        assert msg.startswith(f'{cfg}: 5 problem(s)'), msg
        for needle in (f"'pope_gone': `data` {missing}: file not found",
                       f"'gt_cut': `annotations` {bad_gt}: malformed JSON",
                       f"'gt_cut': `image_folder` {tmp_path / 'no_images'}: directory not found",
                       f"'gt_cut': `box_file` {tmp_path / 'no_boxes.json'}: file not found",
                       f"'mc_cols': `data` {tsv}: header row lacks column(s) 'question'"):
            assert needle in msg, (needle, msg)
        assert "'shapes_short'" not in msg


def test_tools_test_refuses_another_exports_partial_answers_and_restart_flag(model, bench, tmp_path, monkeypatch):
    """The digest of an export folder's files identifies the model; `--restart` starts the benchmark afresh."""
    from mg_llava.evaluation.resume import export_digest
    from mg_llava.models import MGLLaVAModel
    exports = {}
    for k in 'AB':
        exports[k] = tmp_path / f'export_{k}'
        exports[k].mkdir()
        (exports[k] / 'mg_llava_config.json').write_text(json.dumps({'weights': k}))
    monkeypatch.setattr(model.config, 'vision_spec', dict(SPEC))   # what the export's config would carry
    monkeypatch.setattr(MGLLaVAModel, 'from_pretrained', lambda path, torch_dtype: model)
    cfg = write_eval_config(tmp_path / 'cfg.py', [dict(bench)], batch_size=2)
    work = tmp_path / 'eval'
    args = [cfg, '--work-dir', str(work), '--dtype', 'fp32', '--no-progress']
    crash_after(monkeypatch, model, 2)
    with pytest.raises(RuntimeError, match='simulated crash'):
        _tools_test().main([*args, '--export', str(exports['A'])])
    with pytest.raises(SystemExit) as e:
        _tools_test().main([*args, '--export', str(exports['B'])])
    msg = str(e.value.code)
    for needle in (cfg, "'shapes_short'", f'export {exports["A"]}', f'export {exports["B"]}', '--restart'):
        assert needle in msg, (needle, msg)
    calls = count_calls(monkeypatch, model)
    assert _tools_test().main([*args, '--export', str(exports['B']), '--restart']) == 0
    md = (work / 'summary.md').read_text()
    assert sum(calls) == 10 and f'- export: `{exports["B"]}`' in md
    assert f'- model_digest: `{export_digest(str(exports["B"]))}`' in md and 'all 10 answers generated' in md


def test_entry_file_check_accepts_what_the_readers_accept(tiny_world, bench, tmp_path):
    """POPE `data` may be a folder of coco_pope_<split>.json files (loaders.pope_files) or one file; the
    tiny world's entries (TSV, jsonl + annotations, box files) pass."""
    import shutil

    from mg_llava.evaluation.entries import entry_problems
    pope = tmp_path / 'pope'
    pope.mkdir()
    folder = dict(name='p', benchmark='pope', data=str(pope), image_folder=tiny_world['images'])
    assert entry_problems(folder) == [('data', str(pope), 'no coco_pope_<split>.json files in this directory')]
    for split in ('adversarial', 'popular', 'random'):
        shutil.copy(tiny_world['bench_pope'], pope / f'coco_pope_{split}.json')
    assert entry_problems(folder) == []
    assert entry_problems(dict(folder, data=tiny_world['bench_pope'])) == []
    assert entry_problems(bench) == []
    assert entry_problems(dict(name='mc', benchmark='mmbench', data=tiny_world['bench_mc'])) == []
