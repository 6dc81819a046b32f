"""mg_llava.inference: the one prompt encoder, generation path, resumable sharded writer and rank sharding.

The model is the tiny random-init MG-LLaVA of the shared fixtures (LLM at std 0.1, so answers depend on the
image, the boxes and the prompt); every generation test runs on one thread (greedy ties must not flip).
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SPEC = dict(image_size=112, image_size_aux=256)  # the tests preset's tower sizes


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """One float reduction order (greedy ties on a random model must not flip)."""


@pytest.fixture(scope='module')
def model(random_model):
    return random_model


@pytest.fixture(scope='module')
def heldout(tiny_world):
    """[(question, PIL image, box entry)] of the world's held-out questions (4 of them, 2 images)."""
    from mg_llava.data import load_box_index, load_image, read_records
    boxes = load_box_index(tiny_world['boxes'])
    rows = read_records(tiny_world['heldout'])[:4]
    return [(r['question'], load_image(os.path.join(tiny_world['images'], r['image'])), boxes[r['sample_id']])
            for r in rows]


def samples_of(model, rows):
    from mg_llava.data import VisionSpec
    from mg_llava.inference.prompt import build_prompt_sample
    return [build_prompt_sample(q, image, model.tokenizer, model.template, VisionSpec(**SPEC),
                                model.num_image_tokens, box_entry=box, sample_id=str(i))
            for i, (q, image, box) in enumerate(rows)]


# ---------------------------------------------------------------------------------------------- prompt.py

def test_chat_turn_one_equals_the_single_turn_encoder_and_training(model, heldout, tiny_assets):
    from xtuner.utils import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX, PROMPT_TEMPLATE

    from mg_llava.data import VisionSpec
    from mg_llava.data.dataset import tokenize_conversation
    from mg_llava.inference.chat import ChatSession
    from mg_llava.inference.prompt import encode_conversation, encode_prompt, encode_turns
    q, image, box = heldout[0]
    tok = model.tokenizer
    for template in (model.template, PROMPT_TEMPLATE.internlm2_chat, None):  # SUFFIX_AS_EOS, and no template
        one = encode_prompt(DEFAULT_IMAGE_TOKEN + '\n' + q, tok, template, system='Be brief.')
        assert encode_conversation([(q, None)], tok, template, system='Be brief.') == one
        assert one.count(IMAGE_TOKEN_INDEX) == 1
    # a finished conversation is exactly training's sequence
    record = {'image': 'x.png', 'conversations': [{'from': 'human', 'value': '<image>\n' + q},
                                                  {'from': 'gpt', 'value': 'red'}]}
    train = tokenize_conversation(record, tok, model.template, max_length=10_000)
    assert encode_turns([('<image>\n' + q, 'red')], tok, model.template) == train['input_ids']
    # the session's turn-1 prompt is the evaluation's prompt sample (slots expanded alike)
    session = ChatSession(model, image, boxes=box, spec=VisionSpec(**SPEC))
    assert session.input_ids(q) == samples_of(model, heldout[:1])[0]['input_ids']
    with pytest.raises(ValueError, match='one <image> per prompt'):
        encode_turns([('<image> a', 'b'), ('<image> c', None)], tok, model.template)


def test_text_only_sample_has_no_visual_slots(model):
    from mg_llava.data import VisionSpec
    from mg_llava.inference.prompt import build_prompt_sample, encode_prompt
    s = build_prompt_sample('How many colors are there?', None, model.tokenizer, model.template,
                            VisionSpec(**SPEC), model.num_image_tokens, box_entry=None, sample_id='t')
    assert s == dict(id='t', input_ids=encode_prompt('How many colors are there?', model.tokenizer, model.template))


# ------------------------------------------------------------------------------------------ generation.py

def test_batched_left_padded_generation_equals_one_by_one(model, heldout):
    from mg_llava.data import VisionSpec
    from mg_llava.inference.generation import generate
    from mg_llava.inference.prompt import build_prompt_sample, collate_prompts
    samples = samples_of(model, heldout)
    samples.append(build_prompt_sample('How many colors are there?', None, model.tokenizer, model.template,
                                       VisionSpec(**SPEC), model.num_image_tokens, sample_id='txt'))
    batch = collate_prompts(samples, model.tokenizer)
    assert len({len(s['input_ids']) for s in samples}) > 1 and batch['attention_mask'][:, -1].all()  # left-padded
    together = generate(model, batch)
    alone = [generate(model, collate_prompts([s], model.tokenizer))[0] for s in samples]
    assert together == alone
    assert len(set(alone)) > 1  # answers depend on the input: the comparison means something


def test_generate_is_greedy_decoding_with_stop_words(model, heldout):
    """An independent reference: argmax of the full forward pass, token by token, stopped at EOS."""
    from mg_llava.inference.generation import decode, generate, generation_kwargs
    from mg_llava.inference.prompt import collate_prompts
    tok = model.tokenizer
    data = collate_prompts(samples_of(model, heldout[:1]), tok)
    n, tokens = 6, []
    with torch.no_grad():
        embeds = model.embed_inputs(data)
        for _ in range(n):
            tokens.append(int(model.llm(inputs_embeds=embeds).logits[0, -1].argmax()))
            if tokens[-1] == tok.eos_token_id:
                break
            embeds = torch.cat([embeds, model.llm.get_input_embeddings()(torch.tensor([tokens[-1:]]))], 1)
    text = tok.decode(tokens, skip_special_tokens=True)
    assert generate(model, data, max_new_tokens=n) == [decode(model, torch.tensor(tokens))] == [text.strip()]

    # a single-token stop word of the template ends generation; decode cuts the text at its first occurrence
    stop = next(w for w in text.split()[1:] if len(tok.encode(w, add_special_tokens=False)) == 1)
    old = model.template
    try:
        model.template = dict(old, STOP_WORDS=[stop, 'not generated here'])
        gen = generation_kwargs(model, 4, top_k=3)
        assert gen['eos_token_id'] == [tok.eos_token_id] + tok.encode(stop, add_special_tokens=False)
        assert gen['max_new_tokens'] == 4 and gen['do_sample'] is False and gen['top_k'] == 3
        assert generation_kwargs(model)['max_new_tokens'] == model.max_new_tokens
        want = text[:text.index(stop)].strip()
        assert decode(model, torch.tensor(tokens)) == want
        assert generate(model, data, max_new_tokens=n) == [want]
    finally:
        model.template = old


def test_streaming_goes_through_the_same_generation(model, heldout):
    from mg_llava.inference.generation import generate
    from mg_llava.inference.prompt import collate_prompts
    data = collate_prompts(samples_of(model, heldout[1:2]), model.tokenizer)
    chunks = []
    streamed = generate(model, data, streamer=chunks.append)
    assert streamed == generate(model, data) and ''.join(chunks).strip() == streamed[0] != ''


# ------------------------------------------------------------------------------------- writer / sharding

def record(i):
    return {'id': f'q{i}', 'prediction': f'answer {i}'}


def test_writer_resumes_after_a_torn_tail_and_merges_in_order(tmp_path):
    from mg_llava.errors import DataError
    from mg_llava.inference.writer import ShardedJsonl
    out = ShardedJsonl(tmp_path / 'run' / 'preds.rank', '.jsonl', final=str(tmp_path / 'run' / 'preds.jsonl'))
    with out.appender(0) as w:
        w.write_many([record(0), record(1)])
    with out.appender(10) as w:   # ranks sort by number, not by name
        w.write(record(5))
    with out.appender(2) as w:
        w.write(record(2))
    assert [Path(p).name for p in out.files()] == ['preds.rank0.jsonl', 'preds.rank2.jsonl', 'preds.rank10.jsonl']
    with open(out.path(0), 'a') as f:
        f.write('{"id": "q3", "predic')   # the run was killed mid-write
    assert [r['id'] for r in out.records()] == ['q0', 'q1', 'q2', 'q5']   # the torn line is not done
    with out.appender(0) as w:
        assert w.trimmed
        w.write(record(3))
    assert Path(out.path(0)).read_text() == ''.join(json.dumps(record(i)) + '\n' for i in (0, 1, 3))
    with out.appender(0) as w:
        assert not w.trimmed

    assert out.merge(['q5', 'q3', 'q2', 'q1', 'q0'], key=lambda r: r['id']) == 5
    first = Path(out.final).read_text()
    assert [json.loads(x)['id'] for x in first.splitlines()] == ['q5', 'q3', 'q2', 'q1', 'q0']
    assert out.files() == []
    assert out.merge(['q0'], key=lambda r: r['id']) == 5   # again: the final file alone, q0 first
    Path(out.path(1)).write_text(json.dumps(record(7)) + '\n{"id": \n' + json.dumps(record(8)) + '\n')
    with pytest.raises(DataError, match=r'preds.rank1.jsonl \[line 2\]: malformed record'):
        out.records()   # a damaged file, not an interruption


def test_evaluation_partial_predictions_resume_after_a_torn_tail(model, tiny_world, tmp_path, monkeypatch):
    """Rank 0's partial file holds the first batch and a torn line: the rerun generates only the other batches,
    and the file is repaired before it is appended to."""
    from mg_llava.data import VisionSpec
    from mg_llava.evaluation import loop
    from mg_llava.evaluation import questions as Q
    from mg_llava.evaluation.resume import partial_output
    qs = Q.load_questions('gqa', tiny_world['bench_short'], tiny_world['images'], tiny_world['bench_short_gt'])
    build = loop.SampleBuilder(model, VisionSpec(**SPEC))
    whole = loop.predict(model, qs, build, batch_size=3, progress=False)
    first = loop.make_batches(qs, model.tokenizer, 3)[0]
    path = Path(partial_output(str(tmp_path), 'b').path(0))
    assert path.name == 'b_predictions.partial.rank0.jsonl'
    path.write_text(''.join(json.dumps({'id': q['id'], 'prediction': whole[q['id']]}) + '\n' for q in first)
                    + '{"id": "torn')
    calls = []
    generate = loop.generate
    monkeypatch.setattr(loop, 'generate', lambda m, data, *a, **kw: calls.append(data['ids']) or
                        generate(m, data, *a, **kw))
    stats = {}
    again = loop.predict(model, qs, build, batch_size=3, progress=False, partial=(str(tmp_path), 'b'), stats=stats)
    assert again == whole and stats['resumed'] == 3
    n_batches = len(loop.make_batches(qs, model.tokenizer, 3))
    assert not {q['id'] for q in first} & {i for ids in calls for i in ids} and len(calls) == n_batches - 1
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert {r['id']: r['prediction'] for r in lines} == whole and len(lines) == len(qs)


def test_shard_deals_round_robin_and_one_process_is_the_whole():
    from mg_llava.inference.sharding import barrier, gather, rank_and_world, shard
    items = list(range(7))
    assert [shard(items, r, 3) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert rank_and_world() == (0, 1) and gather({'a': 1}) == [{'a': 1}]
    barrier()


# ----------------------------------------------------------------------------------------------- layering

def imported_modules(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_layering():
    """data/models never import inference or evaluation; the writer and sharding load without torch."""
    for package in ('data', 'models'):
        for path in (REPO / 'mg_llava' / package).rglob('*.py'):
            bad = {m for m in imported_modules(path) if m.startswith(('mg_llava.inference', 'mg_llava.evaluation'))}
            assert not bad, (path, bad)
    code = ('import sys, mg_llava.inference.writer, mg_llava.inference.sharding, mg_llava.detection.boxfile; '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")))')
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == '[]', out.stdout + out.stderr


def test_evaluation_images_come_from_the_one_loader(tiny_world, tmp_path):
    import numpy as np

    from mg_llava.data import load_image
    from mg_llava.evaluation import questions as Q
    from mg_llava.evaluation.loaders import ScoreError
    q = Q.load_questions('gqa', tiny_world['bench_short'], tiny_world['images'], tiny_world['bench_short_gt'])[0]
    assert np.array_equal(np.asarray(Q.open_image(q)), np.asarray(load_image(q['image']['path'])))
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n not really')
    with pytest.raises(ScoreError, match=r'bad.png \[question .*\]: unreadable image \(UnidentifiedImageError'):
        Q.open_image(dict(q, image={'path': str(bad)}))
