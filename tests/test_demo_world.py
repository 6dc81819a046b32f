"""Synthetic shapes world (mg_llava.demo.world) and tiny offline assets (mg_llava.demo.tiny_assets)."""
import os

os.environ['HF_HUB_OFFLINE'] = '1'  # noqa: E402  (must precede the transformers import)
os.environ['TRANSFORMERS_OFFLINE'] = '1'

import collections
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mg_llava.demo import tiny_assets as T
from mg_llava.demo import world as W

SEED, N_TRAIN, N_HELDOUT = 3, 60, 20


@pytest.fixture(scope='module')
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('world')
    W.generate_world(out, num_train=N_TRAIN, num_heldout=N_HELDOUT, seed=SEED)
    return out


@pytest.fixture(scope='module')
def assets_dir(tmp_path_factory, world_dir):
    out = tmp_path_factory.mktemp('assets')
    T.build_tiny_assets(out, seed=0, world_dir=world_dir)
    return out


def _load(world_dir):
    wd = Path(world_dir)
    pretrain = json.loads((wd / 'pretrain.json').read_text())
    sft = json.loads((wd / 'sft.json').read_text())
    boxes = json.loads((wd / 'boxes.json').read_text())
    heldout = [json.loads(line) for line in (wd / 'heldout.jsonl').read_text().splitlines()]
    return pretrain, sft, boxes, heldout


MC_PROMPT = re.compile(r"(.+)\n((?:[A-F]\. \w+\n){2,6})"
                       r"Answer with the option's letter from the given choices directly\.")
YES_NO = '\nPlease answer the question with yes or no.'


def _check_answer(question, answer, objects, formats=None):
    """Re-derive the answer of a templated question from the generator's object list; returns the type.
    A lettered-options or yes-or-no form (benchmark_formats) is unwrapped first and counted in `formats`."""
    if m := MC_PROMPT.fullmatch(question):
        options = dict(line.split('. ') for line in m[2].splitlines())
        assert answer in options and list(options.values()) in [ch for _, ch in W.QUESTION_TYPES.values()]
        if formats is not None:
            formats['mc'] += 1
        question, answer = m[1], options[answer]
    elif question.endswith(YES_NO):
        if formats is not None:
            formats['yes_no'] += 1
        question = question[:-len(YES_NO)]
        assert re.fullmatch(r'Is there .*', question)
    by_shape = {o['shape']: o for o in objects}
    by_colour = {o['colour']: o for o in objects}
    if m := re.fullmatch(r'What color is the (\w+)\?', question):
        assert answer == by_shape[m[1]]['colour']
        return 'colour'
    if m := re.fullmatch(r'What shape is the (\w+) object\?', question):
        assert answer == by_colour[m[1]]['shape']
        return 'shape'
    if question == 'How many shapes are there?':
        assert answer == W.COUNT_WORDS[len(objects) - 1]
        return 'count'
    if m := re.fullmatch(r'Is there (a|an) (\w+) (\w+)\?', question):
        present = {(o['colour'], o['shape']) for o in objects}
        assert answer == ('yes' if (m[2], m[3]) in present else 'no')
        assert m[2] in by_colour or m[3] in by_shape  # a 'no' always shares colour or shape
        assert m[1] == W._article(m[2])
        return 'presence'
    if m := re.fullmatch(r'Is the (\w+) (\w+) left or right of the (\w+) (\w+)\?', question):
        a, b = by_colour[m[1]], by_colour[m[3]]
        assert a['shape'] == m[2] and b['shape'] == m[4] and a is not b
        assert answer == ('left' if a['cx'] < b['cx'] else 'right')
        return 'leftright'
    raise AssertionError(f'unknown question {question!r}')


def test_world_is_deterministic(world_dir, tmp_path):
    W.generate_world(tmp_path / 'again', num_train=N_TRAIN, num_heldout=N_HELDOUT, seed=SEED)
    for name in ('pretrain.json', 'sft.json', 'boxes.json', 'heldout.jsonl', 'world.json'):
        assert (world_dir / name).read_bytes() == (tmp_path / 'again' / name).read_bytes(), name
    for name in ('000000.png', f'{N_TRAIN - 1:06d}.png', 'h000003.png'):
        assert (world_dir / 'images' / name).read_bytes() == (tmp_path / 'again' / 'images' / name).read_bytes()
    # image i does not depend on how many images are generated; another seed gives another world
    W.generate_world(tmp_path / 'small', num_train=5, num_heldout=2, seed=SEED)
    assert _load(tmp_path / 'small')[0] == _load(world_dir)[0][:5]
    W.generate_world(tmp_path / 'other', num_train=5, num_heldout=0, seed=SEED + 1)
    assert _load(tmp_path / 'other')[0] != _load(world_dir)[0][:5]


def test_scenes_match_images_and_rules(world_dir):
    for split, n, fmt in (('train', N_TRAIN, '{:06d}.png'), ('heldout', N_HELDOUT, 'h{:06d}.png')):
        for i in range(n):
            scene = W.scene_for(SEED, split, i)
            objs, w, h = scene['objects'], scene['width'], scene['height']
            img = np.asarray(Image.open(world_dir / 'images' / fmt.format(i)).convert('RGB')).astype(int)
            assert img.shape == (h, w, 3) and 96 <= min(w, h) and max(w, h) <= 160
            assert 1 <= len(objs) <= 3
            assert len({o['colour'] for o in objs}) == len({o['shape'] for o in objs}) == len(objs)
            assert [o['cx'] for o in objs] == sorted(o['cx'] for o in objs)
            for o in objs:
                assert o['size'] >= 0.18 * min(w, h)
                x1, y1, x2, y2 = o['box']
                assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
                pixel = img[int(round(o['cy'])), int(round(o['cx']))]
                assert np.abs(pixel - np.array(W.COLOURS[o['colour']])).max() <= 30, (split, i, o)
            for a, b in zip(objs, objs[1:]):
                assert b['cx'] - a['cx'] >= 0.15 * w
            for j, a in enumerate(objs):  # tight boxes do not overlap
                for b in objs[j + 1:]:
                    assert (a['box'][2] < b['box'][0] or b['box'][2] < a['box'][0]
                            or a['box'][3] < b['box'][1] or b['box'][3] < a['box'][1])


def test_answers_match_objects(world_dir):
    pretrain, sft, _, heldout = _load(world_dir)
    assert len(pretrain) == N_TRAIN
    for i, s in enumerate(pretrain):
        objs = W.scene_for(SEED, 'train', i)['objects']
        assert s['id'] == f'pt_{i:06d}' and s['image'] == f'{i:06d}.png'
        assert s['conversations'][0] == {'from': 'human', 'value': '<image>\nDescribe the image.'}
        assert s['conversations'][1]['value'] == W.caption(objs)
    image_sft = [s for s in sft if 'image' in s]
    text_sft = [s for s in sft if 'image' not in s]
    formats = collections.Counter()
    assert len(image_sft) == N_TRAIN and len(text_sft) == round(0.05 * N_TRAIN)
    for s in image_sft:
        i = int(s['id'].split('_')[1])
        objs = W.scene_for(SEED, 'train', i)['objects']
        conv = s['conversations']
        assert [t['from'] for t in conv] == ['human', 'gpt'] * (len(conv) // 2)
        assert conv[0]['value'].startswith('<image>\n')
        assert all('<image>' not in t['value'] for t in conv[1:])
        types = [_check_answer(q['value'].replace('<image>\n', ''), a['value'], objs, formats)
                 for q, a in zip(conv[::2], conv[1::2])]
        assert all(re.fullmatch(r'[a-z]+|[A-F]', a['value']) for a in conv[1::2])
        expected = {'colour', 'shape', 'count', 'presence'} | ({'leftright'} if len(objs) > 1 else set())
        assert set(types) == expected and len(types) == 5
    # about a third of the images carry one lettered-options question (and a third the yes-or-no suffix)
    assert 0.15 * N_TRAIN <= formats['mc'] <= 0.55 * N_TRAIN and formats['yes_no'] > 0, formats
    for s in text_sft:
        assert all('<image>' not in t['value'] for t in s['conversations'])
        assert s['conversations'][0]['from'] == 'human'
    per_sample = collections.defaultdict(list)
    for h in heldout:
        objs = W.scene_for(SEED, 'heldout', int(h['sample_id'].split('_')[1]))['objects']
        assert _check_answer(h['question'], h['answer'], objs) == h['type']
        assert h['answer'] in h['choices'] and h['choices'] == W.QUESTION_TYPES[h['type']][1]
        assert h['id'].startswith(h['sample_id'] + '_') and h['image'] == 'h' + h['sample_id'][3:] + '.png'
        per_sample[h['sample_id']].append(h['type'])
    assert len(per_sample) == N_HELDOUT
    for qtype in ('presence', 'leftright'):  # held-out yes/no and left/right alternate: exactly balanced
        c = collections.Counter(h['answer'] for h in heldout if h['type'] == qtype)
        assert abs(c[W.QUESTION_TYPES[qtype][1][0]] - c[W.QUESTION_TYPES[qtype][1][1]]) <= 1, c
    assert all(len(t) == len(set(t)) >= 4 for t in per_sample.values())


def test_boxes_join_with_samples(world_dir):
    pretrain, sft, boxes, heldout = _load(world_dir)
    by_id = {b['id']: b for b in boxes}
    assert len(by_id) == len(boxes)
    images = {s['id']: s['image'] for s in pretrain + sft if 'image' in s}
    images.update({h['sample_id']: h['image'] for h in heldout})
    assert set(by_id) == set(images)
    for sid, b in by_id.items():
        split = 'heldout' if sid.startswith('ho_') else 'train'
        scene = W.scene_for(SEED, split, int(sid.split('_')[1]))
        assert sorted(b['labels']) == sorted(o['shape'] for o in scene['objects'])
        assert len(b['boxes']) == len(b['scores']) == len(b['labels'])
        assert all(0.3 <= s <= 0.95 for s in b['scores']) and b['scores'] == sorted(b['scores'], reverse=True)
        for box, label in zip(b['boxes'], b['labels']):
            assert all(isinstance(v, int) for v in box)
            assert 0 <= box[0] < box[2] < scene['width'] and 0 <= box[1] < box[3] < scene['height']
            tight = next(o['box'] for o in scene['objects'] if o['shape'] == label)
            assert np.abs(np.array(box) - np.array(tight)).max() <= 4.5
    assert by_id['pt_000001'] == {**by_id['sft_000001'], 'id': 'pt_000001'}


def test_heldout_images_are_new(world_dir):
    digest = lambda p: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
    train = {digest(p) for p in (world_dir / 'images').glob('0*.png')}
    held = {digest(p) for p in (world_dir / 'images').glob('h*.png')}
    assert len(train) == N_TRAIN and len(held) == N_HELDOUT and not train & held
    sig = lambda s: tuple((o['colour'], o['shape'], round(o['cx'])) for o in s['objects'])  # noqa: E731
    assert not {sig(W.scene_for(SEED, 'train', i)) for i in range(N_TRAIN)} & \
        {sig(W.scene_for(SEED, 'heldout', i)) for i in range(N_HELDOUT)}


def test_answer_balance():
    answers = collections.defaultdict(collections.Counter)
    for i in range(600):
        objs = W.scene_for(0, 'train', i)['objects']
        for qtype, _, a in W.make_questions(objs, W._rng(0, 'train', i, 1)):
            answers[qtype][a] += 1
    for qtype, tol in (('presence', 0.05), ('leftright', 0.07)):
        c = answers[qtype]
        assert abs(c[W.QUESTION_TYPES[qtype][1][0]] / sum(c.values()) - 0.5) < tol, c
    for qtype, tol in (('count', 0.06), ('colour', 0.06), ('shape', 0.07)):
        c, choices = answers[qtype], W.QUESTION_TYPES[qtype][1]
        fracs = [c[k] / sum(c.values()) for k in choices]
        assert max(abs(f - 1 / len(choices)) for f in fracs) < tol, c


def test_tiny_tokenizer_and_models_reload(assets_dir, world_dir):
    from transformers import (AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor, CLIPVisionModel)
    tok = AutoTokenizer.from_pretrained(assets_dir / 'tokenizer')
    assert tok.bos_token == '<s>' and tok.bos_token_id is not None and tok.eos_token == '</s>'
    assert tok.pad_token_id == 0 and tok.unk_token == '<unk>'
    text = 'USER: What color is the circle? ASSISTANT: red'
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id not in ids and tok.decode(ids) == text
    assert tok(text).input_ids[0] == tok.bos_token_id
    for t in T.world_texts(world_dir) + T.CHAT_TEXTS:
        assert tok.unk_token_id not in tok.encode(t, add_special_tokens=False), t

    llm = AutoModelForCausalLM.from_pretrained(assets_dir / 'llm')
    cfg = llm.config
    assert type(llm).__name__ == 'LlamaForCausalLM' and cfg.vocab_size == len(tok)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (tok.bos_token_id, tok.eos_token_id, 0)
    assert cfg.hidden_size == 256 and cfg.num_hidden_layers == 4 and not cfg.tie_word_embeddings
    assert (assets_dir / 'llm' / 'model.safetensors').exists()
    with torch.no_grad():
        assert llm(torch.tensor([ids])).logits.shape == (1, len(ids), len(tok))

    clip = CLIPVisionModel.from_pretrained(assets_dir / 'clip_vit')
    proc = CLIPImageProcessor.from_pretrained(assets_dir / 'clip_vit')
    assert proc.crop_size == {'height': 112, 'width': 112}
    pixels = proc(Image.open(world_dir / 'images' / '000000.png'), return_tensors='pt').pixel_values
    with torch.no_grad():
        hidden = clip(pixels, output_hidden_states=True).hidden_states[-2]
    assert pixels.shape == (1, 3, 112, 112) and hidden.shape == (1, 65, 128)


def test_tiny_convnext_open_clip_layout(assets_dir):
    import timm
    cfg = json.loads((assets_dir / 'convnext' / 'open_clip_config.json').read_text())
    vcfg = cfg['model_cfg']['vision_cfg']
    assert vcfg['timm_model_name'] == 'convnext_atto' and cfg['preprocess_cfg']['mean'] == T.CLIP_MEAN
    sd = torch.load(assets_dir / 'convnext' / 'open_clip_pytorch_model.bin', map_location='cpu', weights_only=True)
    prefix = 'visual.trunk.'
    assert 'logit_scale' in sd and 'visual.head.mlp.fc1.weight' in sd  # loaders must filter these
    trunk_sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    model = timm.create_model(vcfg['timm_model_name'], pretrained=False, num_classes=0, **vcfg['timm_model_kwargs'])
    model.load_state_dict(trunk_sd, strict=True)
    x = model.stem(torch.zeros(1, 3, 256, 256))
    shapes = []
    for stage in model.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(16, 64, 64), (32, 32, 32), (64, 16, 16), (128, 8, 8)]


def test_tiny_assets_deterministic(assets_dir, world_dir, tmp_path):
    T.build_tiny_assets(tmp_path, seed=0, world_dir=world_dir)
    for rel in ('tokenizer/tokenizer.json', 'llm/model.safetensors', 'clip_vit/model.safetensors',
                'convnext/open_clip_config.json'):
        assert (assets_dir / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    a, b = (torch.load(d / 'convnext' / 'open_clip_pytorch_model.bin', weights_only=True)
            for d in (assets_dir, tmp_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_heldout_in_benchmark_formats_reads_back_through_the_benchmark_code(world_dir):
    """bench/ files: read by the real question builders and scorers, every question kept with its answer."""
    from mg_llava.evaluation import questions as Q
    _, _, _, heldout = _load(world_dir)
    bench, images = world_dir / 'bench', str(world_dir / 'images')
    by_id = {h['id']: h for h in heldout}
    # short answer (GQA format): every held-out question, verbatim, its answer in the ground truth
    short = Q.load_questions('gqa', str(bench / 'shapes_short.jsonl'), images, str(bench / 'shapes_short_gt.json'))
    assert [q['id'] for q in short] == [h['id'] for h in heldout]
    assert all(q['text'] == by_id[q['id']]['question'] for q in short)
    gt = {it['id']: it['answer'] for it in Q.score_data('gqa', str(bench / 'shapes_short.jsonl'),
                                                       str(bench / 'shapes_short_gt.json'))}
    assert gt == {h['id']: h['answer'] for h in heldout}
    # POPE: the presence questions with the yes-or-no suffix, labels = answers
    presence = [h for h in heldout if h['type'] == 'presence']
    pope = Q.load_questions('pope', str(bench / 'shapes_pope.jsonl'), images)
    assert [q['text'] for q in pope] == [h['question'] + YES_NO for h in presence]
    assert [it['label'] for it in Q.score_data('pope', str(bench / 'shapes_pope.jsonl'))] == \
        [h['answer'] for h in presence]
    # multiple choice (MMBench TSV): the other questions; the answer letter names the right option;
    # the image of a row decodes to the held-out image (later rows of an image refer to its first row)
    others = [h for h in heldout if h['type'] != 'presence']
    mc = Q.load_questions('mmbench', str(bench / 'shapes_mc.tsv'))
    items = Q.score_data('mmbench', str(bench / 'shapes_mc.tsv'))
    assert len(mc) == len(items) == len(others)
    for q, it, h in zip(mc, items, others):
        assert q['text'].startswith(h['question'] + '\nA. ') and it['options'][it['answer']] == h['answer']
        assert list(it['options'].values()) == h['choices']
        assert np.array_equal(np.asarray(Q.open_image(q)), np.asarray(Image.open(world_dir / 'images' / h['image'])
                                                                       .convert('RGB')))
    # box files: each benchmark's box key finds its image's detections
    boxes = {b['id']: b for b in json.loads((world_dir / 'boxes.json').read_text())}
    mc_boxes = {str(b['id']): b for b in json.loads((bench / 'shapes_mc_boxes.json').read_text())}
    for q, h in zip(mc, others):
        assert mc_boxes[q['box_key']]['boxes'] == boxes[h['sample_id']]['boxes']
