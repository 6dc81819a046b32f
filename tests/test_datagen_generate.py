"""Genixer generation (tools/generate_data.py, mg_llava.datagen.generate) on a tiny random generator export:
seeded sampling reproducible byte for byte and independent of the batch a row shares, resume after an
interruption without duplicates or gaps, 1 vs 2 ranks identical, bad input named, outputs parsed or rejected."""
import json
import os
import subprocess
import sys

import pytest
import torch

from mg_llava.datagen import generate as G

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def tool(load_tool):
    return load_tool('generate_data')




def _run(tool, random_export, world, out, *extra):
    return tool.main([random_export, '--images', world['images'], '--out', str(out), '--no-progress',
                               '--max-new-tokens', '12', '--batch-size', '3', *extra])


def test_per_row_sampler_is_seeded_and_batch_independent():
    torch.manual_seed(0)
    scores = torch.randn(3, 50)
    a = G.PerRowSampler([11, 12, 13], 0.2)(None, scores).argmax(-1)
    b = G.PerRowSampler([11, 12, 13], 0.2)(None, scores).argmax(-1)
    alone = G.PerRowSampler([12], 0.2)(None, scores[1:2]).argmax(-1)
    assert torch.equal(a, b) and a[1] == alone[0]
    # it samples softmax(scores / T): frequencies of 4000 draws of one row
    logits = torch.tensor([[0.0, 0.2, -0.3]])
    sampler = G.PerRowSampler([5], 0.5)
    draws = torch.stack([sampler(None, logits).argmax(-1)[0] for _ in range(4000)])
    freq = torch.bincount(draws, minlength=3).float() / 4000
    assert torch.allclose(freq, torch.softmax(logits[0] / 0.5, -1), atol=0.03)
    with pytest.raises(ValueError, match='temperature'):
        G.PerRowSampler([1], 0.0)


def test_questions_carry_the_seeded_template_and_samples_parse(tmp_path):
    items = [('a', '/img/a.png'), ('b', '/img/b.png')]
    qs = G.generation_questions(items, 'mc', seed=1)
    assert qs == G.generation_questions(items, 'mc', seed=1)
    assert all(q['text'].endswith('\nThis is a Multi-choice VQA task.') for q in qs)
    agnostic = G.generation_questions(items, 'agnostic', seed=1)
    assert [q['template'] for q in agnostic] == [q['template'] for q in qs]   # same draw, no suffix
    assert not any('task' in q['text'] for q in agnostic)
    preds = {'a': 'Question: What colour is the star? Answer: red', 'b': 'A red star.'}
    samples, rejects = G.to_samples(qs, preds, 'mc', '/img', {'generator': '/g', 'seed': 1})
    assert samples == [{'id': 'gen_a', 'source_id': 'a', 'image': 'a.png', 'task': 'mc', 'template': qs[0]['template'],
                        'generator': '/g', 'seed': 1, 'question': 'What colour is the star?', 'answer': 'red',
                        'conversations': [{'from': 'human', 'value': '<image>\nWhat colour is the star?'},
                                          {'from': 'gpt', 'value': 'red'}],
                        'text': preds['a']}]
    assert [(r['id'], r['reason']) for r in rejects] == [('b', 'does not start with "Question:"')]
    rec, _ = G.to_samples(qs[:1], {'a': 'Question: Where is the cat? Answer: [0.1,0.2,0.3,0.4]'}, 'rec', None, {})
    assert rec[0]['boxes'] == [[0.1, 0.2, 0.3, 0.4]] and rec[0]['image'] == '/img/a.png'


def test_generation_is_reproducible_and_resumes_after_an_interruption(tool, random_export, tiny_world, tmp_path,
                                                                     monkeypatch, capsys, interrupt_at):
    from mg_llava.evaluation import loop
    first = tmp_path / 'a' / 'gen.json'
    _run(tool, random_export, tiny_world, first)
    out = json.loads(first.read_text())
    rejects = [json.loads(line) for line in open(str(first)[:-5] + '.rejects.jsonl')]
    n_images = len([f for f in os.listdir(tiny_world['images']) if f.endswith('.png')])
    assert len(out) + len(rejects) == n_images and not os.path.exists(str(first) + '.parts')
    assert all(r['reason'] and 'text' in r for r in rejects)   # a random generator: kept and counted
    _run(tool, random_export, tiny_world, tmp_path / 'b' / 'gen.json')
    assert (tmp_path / 'b' / 'gen.rejects.jsonl').read_bytes() == open(str(first)[:-5] + '.rejects.jsonl', 'rb').read()
    assert (tmp_path / 'b' / 'gen.json').read_bytes() == first.read_bytes()
    _run(tool, random_export, tiny_world, tmp_path / 'c' / 'gen.json', '--seed', '1')
    assert (tmp_path / 'c' / 'gen.rejects.jsonl').read_bytes() != open(str(first)[:-5] + '.rejects.jsonl', 'rb').read()

    real = loop.generate
    monkeypatch.setattr(loop, 'generate', interrupt_at(real, 3))
    cut = tmp_path / 'd' / 'gen.json'
    with pytest.raises(KeyboardInterrupt):
        _run(tool, random_export, tiny_world, cut)
    assert not cut.exists() and len(open(cut.parent / 'gen.json.parts' / 'generate_predictions.partial.rank0.jsonl')
                                    .readlines()) == 6   # two batches of 3 kept
    monkeypatch.setattr(loop, 'generate', real)
    with pytest.raises(SystemExit, match='made differently'):   # other settings are refused
        _run(tool, random_export, tiny_world, cut, '--temperature', '0.7')
    capsys.readouterr()
    _run(tool, random_export, tiny_world, cut)
    assert 'resumed 6 answers' in capsys.readouterr().out
    assert (cut.parent / 'gen.rejects.jsonl').read_bytes() == open(str(first)[:-5] + '.rejects.jsonl', 'rb').read()
    assert cut.read_bytes() == first.read_bytes()


def test_two_ranks_write_the_same_file_as_one(random_export, tiny_world, tmp_path):
    one = tmp_path / 'one' / 'gen.json'
    two = tmp_path / 'two' / 'gen.json'
    common = [random_export, '--images', tiny_world['images'], '--no-progress', '--max-new-tokens', '12',
              '--batch-size', '2']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    subprocess.run([sys.executable, 'tools/generate_data.py', *common, '--out', str(one)], cwd=REPO, env=env,
                   check=True, capture_output=True)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', '2',
                        '--master-port', '29561', 'tools/generate_data.py', *common, '--out', str(two), '--launcher', 'pytorch'],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert two.read_bytes() == one.read_bytes()
    assert (two.parent / 'gen.rejects.jsonl').read_bytes() == (one.parent / 'gen.rejects.jsonl').read_bytes()


def test_bad_input_is_named(tool, random_export, tiny_world, tmp_path):
    with pytest.raises(SystemExit, match='no such image folder'):
        tool.main([random_export, '--images', str(tmp_path / 'nope'), '--out', str(tmp_path / 'o.json')])
    with pytest.raises(SystemExit, match='not a generator export'):
        tool.main([str(tmp_path), '--images', tiny_world['images'], '--out', str(tmp_path / 'o.json')])
    lst = tmp_path / 'imgs.jsonl'
    lst.write_text('{"id": 1, "image": "000000.png"}\n{"image": "000001.png"}\n')
    with pytest.raises(SystemExit, match='imgs.jsonl.*"id"'):
        tool.main([random_export, '--images', str(lst), '--out', str(tmp_path / 'o.json')])
    lst.write_text('{"id": 1, "image": "000000.png"}\n{"id": 2, "image": "missing.png"}\n')
    with pytest.raises(SystemExit, match='missing.png.*question 2.*image file not found.*kept'):
        tool.main([random_export, '--images', str(lst), '--image-folder', tiny_world['images'],
                            '--out', str(tmp_path / 'o.json'), '--no-progress', '--max-new-tokens', '4'])


def test_throughput_timing_tiny_gives_the_same_outputs_batched():
    """timing/genixer_throughput.py --tiny: batch 1 and batch 8 write the same texts and P(Yes) (exit 0)."""
    r = subprocess.run([sys.executable, os.path.join(REPO, 'timing', 'genixer_throughput.py'), '--tiny'], cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result['generate_identical'] and result['judge_equal'] and result['samples'] == 24
