"""tools/chat.py and mg_llava.inference.chat: multi-turn chat about a world image with a tiny exported model.

The references are built independently of the chat code: turn 1 with `build_prompt_sample` (as the demo
evaluation does), turn 2 with the training dataset (MGLLaVADataset) on the same conversation, both answered
by the evaluation's batched `generation.generate`.
"""
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CHAT = REPO / 'tools' / 'chat.py'
T_IMG, IMG_AUX = 112, 256
VISION_SPEC = dict(image_size=T_IMG, image_size_aux=IMG_AUX, pad_to_square=True, nms_iou=0.2, limit_num=100,
                   max_objects=100)


def env():
    return dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1',
                TOKENIZERS_PARALLELISM='false', OMP_NUM_THREADS='1')


@contextlib.contextmanager
def one_thread():
    """Same float reduction order as the OMP_NUM_THREADS=1 subprocess (greedy ties on a random model)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope='module')
def export_dir(tmp_path_factory, tiny_assets):
    """A random-init tiny MG-LLaVA (fusion + object tokens, everything trainable), exported like pth_to_hf."""
    from mg_llava.demo.tiny_assets import build_random_model
    model = build_random_model(tiny_assets, vision_spec=VISION_SPEC)  # LLM at std 0.1: answers depend on the input
    out = tmp_path_factory.mktemp('chat') / 'export'
    model.save_pretrained(str(out), fp32=True)
    return str(out)


@pytest.fixture(scope='module')
def model(export_dir):
    from mg_llava.models import MGLLaVAModel
    return MGLLaVAModel.from_pretrained(export_dir)


@pytest.fixture(scope='module')
def sample(tiny_world):
    """The first SFT image sample of the world: (record, box entry, image path, first two questions)."""
    from mg_llava.data import read_records
    rec = next(r for r in read_records(tiny_world['sft']) if r.get('image'))
    box = next(b for b in read_records(tiny_world['boxes']) if b['id'] == rec['id'])
    conv = rec['conversations']
    questions = [conv[0]['value'].replace('<image>', '').strip(), conv[2]['value']]
    return rec, box, os.path.join(tiny_world['images'], rec['image']), questions


def generate(model, samples):
    from mg_llava.data import mg_llava_collate_fn
    from mg_llava.inference.generation import generate as generate_batch
    data = mg_llava_collate_fn(samples, pad_index=model.tokenizer.pad_token_id or 0, padding_side='left',
                               return_hf_format=True)
    with one_thread():
        return generate_batch(model, data)


def first_turn_reference(model, sample):
    from mg_llava.data import VisionSpec, load_image
    from mg_llava.inference.prompt import build_prompt_sample
    rec, box, image, (q1, _) = sample
    s = build_prompt_sample(q1, load_image(image), model.tokenizer, model.template, VisionSpec(**VISION_SPEC),
                            model.num_image_tokens, box_entry=box)
    return s, generate(model, [s])[0]


def training_sample(model, sample, tiny_world, tmp_path, answer1):
    """MGLLaVADataset on [<image> q1, answer1, q2, 'yes']: returns (sample, prompt ids before 'yes')."""
    from xtuner.utils import IGNORE_INDEX

    from mg_llava.data import MGLLaVADataset
    rec, _, _, (q1, q2) = sample
    conv = [dict(rec, conversations=[{'from': 'human', 'value': '<image>\n' + q1}, {'from': 'gpt', 'value': answer1},
                                     {'from': 'human', 'value': q2}, {'from': 'gpt', 'value': 'yes'}])]
    path = tmp_path / 'conv.json'
    path.write_text(json.dumps(conv))
    ds = MGLLaVADataset(str(path), tiny_world['images'], model.tokenizer, model.template, max_length=256,
                        vision_spec=VISION_SPEC, num_image_tokens=model.num_image_tokens,
                        box_json_path=tiny_world['boxes'])
    s = ds[0]
    labels = list(s['labels'])
    start = max(i for i in range(1, len(labels)) if labels[i] != IGNORE_INDEX and labels[i - 1] == IGNORE_INDEX)
    return s, list(s['input_ids'][:start])


def run_chat(*args, timeout=120):
    res = subprocess.run([sys.executable, str(CHAT), *map(str, args)], cwd=REPO, env=env(), capture_output=True,
                         text=True, timeout=timeout)
    return res.returncode, res.stdout, res.stderr


def answers_of(stdout):
    return [line[len('ASSISTANT: '):].strip() for line in stdout.splitlines() if line.startswith('ASSISTANT: ')]


# ---------------------------------------------------------------------------------------------- tokenisation

@pytest.mark.parametrize('name', ['vicuna', 'phi3_chat_mgllava', 'llama3_chat', 'qwen_chat', 'internlm2_chat'])
def test_multi_turn_ids_equal_training_tokenisation(tiny_assets, name):
    from transformers import AutoTokenizer
    from xtuner.dataset.map_fns import template_map_fn
    from xtuner.dataset.utils import encode_fn
    from xtuner.utils import IMAGE_TOKEN_INDEX, PROMPT_TEMPLATE

    from mg_llava.data.dataset import tokenize_conversation
    from mg_llava.inference.prompt import encode_conversation, encode_prompt
    from mg_llava.templates import PROMPT_TEMPLATE_MG
    tok = AutoTokenizer.from_pretrained(tiny_assets['tokenizer'])
    template = PROMPT_TEMPLATE_MG.get(name) or PROMPT_TEMPLATE[name]
    q1, a1, q2, a2 = 'What color is the circle?', 'red', 'How many shapes are there?', 'two'
    record = {'image': 'x.png', 'conversations': [{'from': 'human', 'value': '<image>\n' + q1}, {'from': 'gpt', 'value': a1},
                                {'from': 'human', 'value': q2}, {'from': 'gpt', 'value': a2}]}
    train = tokenize_conversation(record, tok, template, max_length=10_000)
    assert not train['error'] and train['input_ids'].count(IMAGE_TOKEN_INDEX) == 1
    full = encode_conversation([(q1, a1), (q2, a2)], tok, template)
    assert full == train['input_ids']
    prompt2 = encode_conversation([(q1, a1), (q2, None)], tok, template)
    assert prompt2 == train['input_ids'][:len(prompt2)]
    # the prompt stops exactly where the supervised answer of round 2 starts
    assert train['labels'][len(prompt2) - 1] == -100 and train['labels'][len(prompt2)] != -100
    assert encode_conversation([(q1, None)], tok, template) == encode_prompt('<image>\n' + q1, tok, template)

    # with a system text (template_map_fn puts SYSTEM before round 1's INSTRUCTION)
    conv = [dict(input='<image>\n' + q1, output=a1, system='Be brief.'), dict(input=q2, output=a2)]
    want = encode_fn(template_map_fn({'conversation': conv}, template), tok, 10_000, with_image_token=True)
    assert encode_conversation([(q1, a1), (q2, a2)], tok, template, system='Be brief.') == want['input_ids']


# ---------------------------------------------------------------------------------------------- the CLI

def test_cli_answers_two_turns_like_model_generate(export_dir, model, sample, tiny_world, tmp_path):
    rec, _, image, (q1, q2) = sample
    rc, out, err = run_chat(export_dir, '--image', image, '--boxes', tiny_world['boxes'], '--box-id', rec['id'],
                            '--prompt', q1, '--prompt', q2)
    assert rc == 0, err[-3000:]
    assert f'USER: {q1}' in out and f'USER: {q2}' in out
    got = answers_of(out)
    assert len(got) == 2, out

    ref1, want1 = first_turn_reference(model, sample)
    assert got[0] == want1
    s2, prompt2 = training_sample(model, sample, tiny_world, tmp_path, want1)
    prompt_sample = {k: v for k, v in s2.items() if k != 'labels'}
    want2 = generate(model, [dict(prompt_sample, input_ids=prompt2)])[0]
    assert got[1] == want2
    assert any(got), 'the tiny model answered nothing: the comparison would be vacuous'

    # the in-process session sees exactly what training and evaluation see
    from mg_llava.inference.chat import ChatSession
    session = ChatSession(model, image, boxes=next(b for b in json.load(open(tiny_world['boxes']))
                                                   if b['id'] == rec['id']))
    assert session.input_ids(q1) == ref1['input_ids']
    torch.testing.assert_close(session.sample['pixel_values_aux'], s2['pixel_values_aux'], rtol=0, atol=0)
    torch.testing.assert_close(torch.as_tensor(session.sample['boxes']), s2['boxes'], rtol=0, atol=0)
    session.history.append((q1, want1))
    assert session.input_ids(q2) == prompt2
    # ... and its cached visual tokens embed them exactly as encoding the pixels again does
    from mg_llava.data import mg_llava_collate_fn
    data = mg_llava_collate_fn([dict(prompt_sample, input_ids=prompt2)], padding_side='left', return_hf_format=True)
    with torch.no_grad():
        cached = model.embed_inputs({'input_ids': torch.tensor([prompt2])}, visual_tokens=session.visual)
        torch.testing.assert_close(cached, model.embed_inputs(data), rtol=0, atol=0)


def test_streamer_receives_exactly_the_answer(model, sample):
    from mg_llava.inference.chat import ChatSession
    _, box, image, (q1, q2) = sample
    session = ChatSession(model, image, boxes=box)
    for q in (q1, q2):
        chunks = []
        with one_thread():
            answer = session.ask(q, streamer=chunks.append)
        assert ''.join(chunks).strip() == answer
        assert session.history[-1] == (q, answer)
    assert len(session.history) == 2


def test_repl_reads_stdin_until_exit(export_dir, sample, tiny_world, monkeypatch, capsys):
    rec, _, image, (q1, q2) = sample
    spec = importlib.util.spec_from_file_location('chat_cli', CHAT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.setattr(sys, 'stdin', io.StringIO(f'{q1}\nreset\n{q2}\nexit\nnever asked\n'))
    with one_thread():
        assert cli.main([export_dir, '--image', image, '--boxes', tiny_world['boxes'], '--box-id', rec['id'],
                         '--no-stream']) == 0
    out = capsys.readouterr().out
    assert len(answers_of(out)) == 2 and 'never asked' not in out


# ---------------------------------------------------------------------------------------------- errors

def test_bad_image_path_names_the_file(model, tmp_path, export_dir):
    from mg_llava.inference.chat import ChatSession
    from mg_llava.data.preprocess import ImageError
    missing = tmp_path / 'no_such_image.png'
    with pytest.raises(ImageError, match='no_such_image.png'):
        ChatSession(model, str(missing))
    rc, out, err = run_chat(export_dir, '--image', missing, '--prompt', 'hi')
    assert rc == 2 and str(missing) in err and 'file not found' in err and 'Traceback' not in err
    assert 'ASSISTANT' not in out


def test_box_json_selection(tmp_path, tiny_world):
    from mg_llava.inference.chat import load_box_entry
    from mg_llava.data import DataError
    with pytest.raises(DataError, match='--box-id'):
        load_box_entry(tiny_world['boxes'])
    with pytest.raises(DataError, match="no box entry with this id"):
        load_box_entry(tiny_world['boxes'], 'nope')
    entry = dict(boxes=[[1, 2, 30, 40]], scores=[0.9], labels=['circle'])
    (tmp_path / 'one.json').write_text(json.dumps([dict(entry, id='x')]))
    (tmp_path / 'bare.json').write_text(json.dumps(entry))
    assert load_box_entry(tmp_path / 'one.json')['boxes'] == entry['boxes']
    assert load_box_entry(str(tmp_path / 'bare.json'))['labels'] == ['circle']


def test_detector_missing_module_is_a_clear_error(monkeypatch):
    from mg_llava.inference.chat import detect_boxes
    monkeypatch.setitem(sys.modules, 'mg_llava.detection.owl', None)  # -> ImportError on import
    with pytest.raises(RuntimeError, match='mg_llava.detection.*--boxes'):
        detect_boxes(None, 'owlv2', tags=['star'])


def test_boxes_detected_on_the_fly(export_dir, sample, tmp_path, capsys):
    pytest.importorskip('mg_llava.detection.owl')
    tiny = pytest.importorskip('mg_llava.detection.tiny')
    from mg_llava.inference.chat import ChatSession, detect_boxes
    from mg_llava.data import load_image
    _, _, image, (q1, _) = sample
    owl = tiny.build_tiny_owlv2(str(tmp_path / 'owl'))
    entry = detect_boxes(load_image(image), owl, tags=['circle', 'square', 'star'])
    assert set(entry) >= {'boxes', 'scores', 'labels'} and len(entry['boxes']) == len(entry['labels'])
    spec = importlib.util.spec_from_file_location('chat_cli', CHAT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main([export_dir, '--image', image, '--detector', owl, '--tags', 'circle', 'square', 'star',
                     '--prompt', q1]) == 0
    captured = capsys.readouterr()
    assert len(answers_of(captured.out)) == 1 and f'detector: {len(entry["boxes"])} boxes' in captured.err
