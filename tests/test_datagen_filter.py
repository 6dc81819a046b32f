"""Genixer filters (tools/filter_data.py, mg_llava.datagen.filtering): the judge's P(Yes) equals a hand-run
forward, the band selects, the judge resumes after an interruption, REC expressions and boxes are recovered from
generated text, the CLIP filter's scores equal a direct CLIP computation, bad input is named."""
import json
import os

import pytest
import torch

from mg_llava.datagen import filtering as FL
from mg_llava.datagen import formats as F
from mg_llava.datagen import judge as J
from mg_llava.datagen.templates import load, sample_rng
from mg_llava.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def tool(load_tool):
    return load_tool('filter_data')




@pytest.fixture(scope='module')
def generated(tiny_world, tmp_path_factory):
    """Samples as generate_data writes them, one per world image (true and false answers)."""
    images = sorted(f for f in os.listdir(tiny_world['images']) if f.endswith('.png'))
    samples = [{'id': f'gen_{i}', 'source_id': img[:-4], 'image': img, 'task': 'common', 'template': 0,
                'question': 'What colour is the star?', 'answer': ['red', 'blue'][i % 2]}
               for i, img in enumerate(images)]
    path = tmp_path_factory.mktemp('gen') / 'generated.json'
    path.write_text(json.dumps(samples))
    return str(path), samples


def test_rec_expression_is_recovered_from_every_template():
    rng = sample_rng(0, 'x')
    for template in load('rec_questions'):
        question = template.replace('<expr>', 'the small red star')
        assert FL.rec_expression(question) == 'the small red star', template
    assert FL.rec_expression('Show me the cat?') == 'Show me the cat'          # not one of ours: as it is
    from mg_llava.datagen.templates import inner_question
    assert FL.rec_expression(inner_question('rec', rng, expr='a dog')) == 'a dog'
    ok = {'question': 'What are the coordinates of the dog?', 'answer': '[0.1,0.2,0.5,0.6]'}
    assert FL.rec_target(ok) == ('the dog', [0.1, 0.2, 0.5, 0.6])
    for bad, why in [({'question': 'What are the coordinates of [0.1,0.1,0.2,0.2]?', 'answer': '[0.1,0.2,0.5,0.6]'},
                      'expression itself'),
                     ({'question': 'What are the coordinates of the dog?', 'answer': 'on the left'}, 'no \\['),
                     ({'question': 'What are the coordinates of the dog?', 'answer': '[0.5,0.2,0.1,0.6]'},
                      'not a normalised')]:
        with pytest.raises(F.FormatError, match=why):
            FL.rec_target(bad)


def test_check_samples_names_file_and_sample():
    with pytest.raises(DataError, match=r"g.json \[id 'a'\].*needs id, image, question, answer"):
        FL.check_samples([{'id': 'a', 'image': 'x.png', 'question': 'q'}], 'g.json')
    with pytest.raises(DataError, match=r"g.json \[id 'a'\].*repeated"):
        FL.check_samples([{'id': 'a', 'image': 'x', 'question': 'q', 'answer': 'a'}] * 2, 'g.json')
    with pytest.raises(DataError, match=r'g.json \[sample 0\]'):
        FL.check_samples(['text'], 'g.json')


def test_select_keeps_the_band_and_says_yes_in_reference_mode():
    samples = [{'id': i} for i in 'abcd']
    scores = {'a': 0.49, 'b': 0.5, 'c': 0.7, 'd': 0.71}
    kept, table = FL.select(samples, scores, (0.5, 0.7))
    assert [s['id'] for s in kept] == ['b', 'c'] and [t['kept'] for t in table] == [False, True, True, False]
    ref = {'a': {'score': 0.6, 'said': 'Yes'}, 'b': {'score': 0.6, 'said': 'No'}, 'c': {'score': None, 'said': 'Y'},
           'd': {'score': 0.9, 'said': 'yes, it is'}}
    kept, _ = FL.select(samples, ref, (0.5, 0.7), mode='reference_geomean')
    assert [s['id'] for s in kept] == ['a']


def test_judge_p_yes_is_the_hand_computed_forward_and_resumes(tool, random_export, generated, tiny_world, tmp_path,
                                                             monkeypatch, interrupt_at):
    from mg_llava.evaluation.loop import SampleBuilder
    from mg_llava.inference.prompt import collate_prompts
    from mg_llava.models import MGLLaVAModel
    path, samples = generated
    args = ['judge', random_export, '--data', path, '--image-folder', tiny_world['images'], '--no-progress',
            '--batch-size', '4', '--band', '0', '1']
    out = tmp_path / 'a' / 'kept.json'
    assert tool.main(args + ['--out', str(out)]) == 0
    table = [json.loads(line) for line in open(tmp_path / 'a' / 'kept.scores.jsonl')]
    assert [t['id'] for t in table] == [s['id'] for s in samples] and all(t['kept'] for t in table)
    # by hand: one sample, batch of one, the full-vocabulary logits of a plain forward
    model = MGLLaVAModel.from_pretrained(random_export).eval()
    s = samples[1]
    q = FL.judge_questions([s], tiny_world['images'])[0]
    data = collate_prompts([SampleBuilder(model, model.vision_spec)(q)], model.tokenizer)
    with torch.no_grad():
        embeds = model.embed_inputs(data)
        logits = model.llm(inputs_embeds=embeds, attention_mask=data['attention_mask']).logits[0, -1]
    yes, no = J.yes_no_ids(model.tokenizer)
    probs = torch.softmax(logits, -1)
    expect = (probs[yes].sum() / (probs[yes].sum() + probs[no].sum())).item()
    assert table[1]['judge_score'] == pytest.approx(expect, rel=1e-4)
    # a narrow band around that score keeps exactly the samples inside it
    lo, hi = sorted(t['judge_score'] for t in table)[1:3]
    tool.main(args[:-3] + ['--band', str(lo), str(hi), '--out', str(tmp_path / 'b' / 'kept.json')])
    kept = json.loads((tmp_path / 'b' / 'kept.json').read_text())
    assert [k['id'] for k in kept] == [t['id'] for t in table if lo <= t['judge_score'] <= hi] and len(kept) >= 2
    # interrupted after one batch, resumed: the same files
    real_step = J.p_yes_step
    monkeypatch.setattr(J, 'p_yes_step', lambda tokenizer: interrupt_at(real_step(tokenizer), 2))
    cut = tmp_path / 'c' / 'kept.json'
    with pytest.raises(KeyboardInterrupt):
        tool.main(args + ['--out', str(cut)])
    assert not cut.exists()
    monkeypatch.setattr(J, 'p_yes_step', real_step)
    tool.main(args + ['--out', str(cut)])
    assert cut.read_bytes() == out.read_bytes()
    assert (tmp_path / 'c' / 'kept.scores.jsonl').read_bytes() == (tmp_path / 'a' / 'kept.scores.jsonl').read_bytes()


def test_judge_reference_mode_runs(tool, random_export, generated, tiny_world, tmp_path):
    path, samples = generated
    out = tmp_path / 'kept.json'
    tool.main(['judge', random_export, '--data', path, '--image-folder', tiny_world['images'], '--no-progress',
                  '--score', 'reference_geomean', '--band', '0', '1', '--out', str(out)])
    table = [json.loads(line) for line in open(tmp_path / 'kept.scores.jsonl')]
    assert len(table) == len(samples)
    for t in table:
        score = t['judge_score']
        assert set(score) == {'score', 'said'} and (score['score'] is None or 0 <= score['score'] <= 1)


def test_clip_filter_scores_are_clip_cosines(tool, tiny_world, tmp_path):
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from mg_llava.detection.tiny import build_tiny_clip
    clip_dir = str(tmp_path / 'clip')
    build_tiny_clip(clip_dir)
    img = Image.new('RGB', (200, 120), (200, 30, 30))
    img.paste((30, 30, 200), (100, 0, 200, 120))
    img.save(tmp_path / 'a.png')
    samples = [{'id': 'r0', 'image': 'a.png', 'question': 'What are the coordinates of the red half?',
                'answer': '[0.000,0.000,0.500,1.000]'},
               {'id': 'r1', 'image': 'a.png', 'question': 'Locate the blue half and give its bounding box.',
                'answer': '[0.500,0.000,1.000,1.000]'},
               {'id': 'r2', 'image': 'a.png', 'question': 'What are the coordinates of a dot?',
                'answer': '[0.500,0.500,0.520,0.530]'},                              # 4x4 px: too small
               {'id': 'r3', 'image': 'a.png', 'question': 'Where is it?', 'answer': 'nowhere'}]
    data = tmp_path / 'rec.json'
    data.write_text(json.dumps(samples))
    out = tmp_path / 'kept.json'
    tool.main(['clip', clip_dir, '--data', str(data), '--image-folder', str(tmp_path), '--out', str(out),
                  '--threshold', '-100'])
    table = {t['id']: t for t in map(json.loads, open(tmp_path / 'kept.scores.jsonl'))}
    assert 'under 50 px' in table['r2']['reason'] and 'no [' in table['r3']['reason']
    model, proc = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    crop = img.crop((100, 0, 200, 120))
    inputs = proc(text=['the blue half'], images=[crop], return_tensors='pt', padding=True)
    with torch.no_grad():
        a = model.get_image_features(pixel_values=inputs['pixel_values'])
        b = model.get_text_features(input_ids=inputs['input_ids'], attention_mask=inputs['attention_mask'])
    expect = 100 * torch.nn.functional.cosine_similarity(a, b).item()
    assert table['r1']['clip_score'] == pytest.approx(expect, rel=1e-4, abs=1e-4)
    assert [k['id'] for k in json.loads(out.read_text())] == ['r0', 'r1']
    cut = table['r0']['clip_score'] + 1e-6
    tool.main(['clip', clip_dir, '--data', str(data), '--image-folder', str(tmp_path), '--out', str(out),
                  '--threshold', str(cut)])
    assert [k['id'] for k in json.loads(out.read_text())] == (['r1'] if table['r1']['clip_score'] >= cut else [])


def test_filter_bad_input_is_named(tool, random_export, tiny_world, tmp_path):
    data = tmp_path / 'g.json'
    data.write_text(json.dumps([{'id': 'x', 'image': 'missing.png', 'question': 'q', 'answer': 'a'}]))
    with pytest.raises(SystemExit, match='not a judge'):
        tool.main(['judge', str(tmp_path), '--data', str(data), '--image-folder', '.',
                   '--out', str(tmp_path / 'o.json')])
    with pytest.raises(SystemExit, match='missing.png.*question x, judged sample.*image file not found'):
        tool.main(['judge', random_export, '--data', str(data), '--image-folder', tiny_world['images'],
                   '--no-progress', '--out', str(tmp_path / 'o.json')])
    data.write_text(json.dumps([{'id': 'x', 'image': 'a.png', 'question': 'q'}]))
    with pytest.raises(SystemExit, match=r"g.json \[id 'x'\]"):
        tool.main(['judge', random_export, '--data', str(data), '--image-folder', '.',
                   '--out', str(tmp_path / 'o.json')])


def test_clip_filter_resumes_after_an_interruption(tool, tmp_path, monkeypatch, interrupt_at):
    from PIL import Image

    from mg_llava.datagen import clip_filter
    from mg_llava.detection.tiny import build_tiny_clip
    clip_dir = str(tmp_path / 'clip')
    build_tiny_clip(clip_dir)
    Image.new('RGB', (200, 120), (200, 30, 30)).save(tmp_path / 'a.png')
    samples = [{'id': f'r{i}', 'image': 'a.png', 'question': f'What are the coordinates of thing {i}?',
                'answer': f'[0.{i}00,0.000,0.900,1.000]'} for i in range(6)]
    (tmp_path / 'rec.json').write_text(json.dumps(samples))
    args = ['clip', clip_dir, '--data', str(tmp_path / 'rec.json'), '--image-folder', str(tmp_path),
            '--batch-size', '2', '--threshold', '-100']
    tool.main(args + ['--out', str(tmp_path / 'a' / 'kept.json')])
    real = clip_filter.clip_scores
    monkeypatch.setattr(clip_filter, 'clip_scores', interrupt_at(real, 2))
    with pytest.raises(KeyboardInterrupt):
        tool.main(args + ['--out', str(tmp_path / 'b' / 'kept.json')])
    partial = tmp_path / 'b' / 'kept.json.parts' / 'clip_predictions.partial.rank0.jsonl'
    assert len(partial.read_text().splitlines()) == 2     # the first batch of 2 is kept
    resumed = {'n': 0}

    def counts(*a, **k):
        resumed['n'] += 1
        return real(*a, **k)
    monkeypatch.setattr(clip_filter, 'clip_scores', counts)
    tool.main(args + ['--out', str(tmp_path / 'b' / 'kept.json')])
    assert resumed['n'] == 2   # batches 2 and 3 only: the finished first batch is read back, not scored again
    for name in ('kept.json', 'kept.scores.jsonl'):
        assert (tmp_path / 'b' / name).read_bytes() == (tmp_path / 'a' / name).read_bytes()


def _varied(samples):
    """The same samples with questions of different lengths: batches get left padding."""
    qs = ['What colour is the star?', 'Is there a red star?', 'How many shapes are there in this picture?', 'Why?']
    return [{**s, 'question': qs[i % len(qs)]} for i, s in enumerate(samples)]


def test_judge_scores_do_not_depend_on_the_batch_padding(tool, random_export, generated, tiny_world, tmp_path):
    path = tmp_path / 'varied.json'
    path.write_text(json.dumps(_varied(generated[1])))
    scores = {}
    for bs in (1, 5):
        out = tmp_path / f'b{bs}' / 'kept.json'
        tool.main(['judge', random_export, '--data', str(path), '--image-folder', tiny_world['images'],
                   '--no-progress', '--batch-size', str(bs), '--band', '0', '1', '--out', str(out)])
        scores[bs] = [json.loads(line)['judge_score'] for line in open(out.parent / 'kept.scores.jsonl')]
    assert scores[5] == pytest.approx(scores[1], abs=1e-5)


@pytest.fixture(scope='module')
def hf_vlm(tiny_assets, tmp_path_factory):
    """A tiny random LlavaForConditionalGeneration + LlavaProcessor saved as llava-hf folders are."""
    from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)
    tok = AutoTokenizer.from_pretrained(tiny_assets['tokenizer'])
    tok.add_special_tokens({'additional_special_tokens': ['<image>']})
    torch.manual_seed(0)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=28, patch_size=14, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=2),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids('<image>'), vision_feature_layer=-1,
        vision_feature_select_strategy='default')
    out = tmp_path_factory.mktemp('llava_hf')
    LlavaForConditionalGeneration(cfg).save_pretrained(out)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={'shortest_edge': 28}, crop_size=28), tokenizer=tok,
                   patch_size=14, vision_feature_select_strategy='default', image_token='<image>',
                   num_additional_image_tokens=1).save_pretrained(out)
    return str(out)


def test_transformers_native_judge(tool, hf_vlm, generated, tiny_world, tmp_path):
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    path = tmp_path / 'varied.json'
    samples = _varied(generated[1])
    path.write_text(json.dumps(samples))
    args = ['judge', hf_vlm, '--data', str(path), '--image-folder', tiny_world['images'], '--no-progress',
            '--batch-size', '4', '--band', '0', '1']
    assert tool.main(args + ['--out', str(tmp_path / 'a' / 'kept.json')]) == 0
    table = [json.loads(line) for line in open(tmp_path / 'a' / 'kept.scores.jsonl')]
    assert [t['id'] for t in table] == [s['id'] for s in samples]
    # by hand, one sample alone: the processor's LLaVA-1.5 prompt, a plain forward, softmax over the vocabulary
    processor = AutoProcessor.from_pretrained(hf_vlm)
    model = LlavaForConditionalGeneration.from_pretrained(hf_vlm).eval()
    yes, no = J.yes_no_ids(processor.tokenizer)
    for i in (0, 2):
        s = samples[i]
        text = f"USER: <image>\n{J.judge_prompt(s['question'], s['answer'])} ASSISTANT:"
        image = Image.open(os.path.join(tiny_world['images'], s['image'])).convert('RGB')
        with torch.no_grad():
            inputs = processor(images=[image], text=[text], return_tensors='pt')
            logits = model(input_ids=inputs['input_ids'], attention_mask=inputs['attention_mask'],
                           pixel_values=inputs['pixel_values']).logits[0, -1]
        probs = torch.softmax(logits, -1)
        expect = (probs[yes].sum() / (probs[yes].sum() + probs[no].sum())).item()
        assert table[i]['judge_score'] == pytest.approx(expect, abs=1e-5)
    # the reference's sampled score needs a framework export
    with pytest.raises(SystemExit, match='framework export'):
        tool.main(args + ['--score', 'reference_geomean', '--out', str(tmp_path / 'b' / 'kept.json')])


def test_answer_score_is_the_teacher_forced_answer_probability(tool, random_export, generated, tiny_world, tmp_path):
    """--score answer (round-trip consistency): each sample alone, by hand: the question as the prompt, the answer's
    tokens appended, exp(mean log p(answer token)). Batched with left padding and multi-token answers: the same."""
    from mg_llava.evaluation.loop import SampleBuilder
    from mg_llava.inference.prompt import collate_prompts
    from mg_llava.models import MGLLaVAModel
    samples = [dict(s, answer=['red', 'a blue star', 'two'][i % 3]) for i, s in enumerate(_varied(generated[1]))]
    path = tmp_path / 'answers.json'
    path.write_text(json.dumps(samples))
    out = tmp_path / 'a' / 'kept.json'
    assert tool.main(['judge', random_export, '--data', str(path), '--image-folder', tiny_world['images'],
                      '--no-progress', '--batch-size', '5', '--band', '0', '1', '--score', 'answer',
                      '--out', str(out)]) == 0
    table = {json.loads(line)['id']: json.loads(line)['judge_score'] for line in open(out.parent / 'kept.scores.jsonl')}
    model = MGLLaVAModel.from_pretrained(random_export).eval()
    for s in samples[:3]:
        q = FL.answer_questions([s], tiny_world['images'])[0]
        prompt = SampleBuilder(model, model.vision_spec)(q)
        answer = model.tokenizer.encode(s['answer'], add_special_tokens=False)
        full = dict(prompt, input_ids=list(prompt['input_ids']) + answer)
        data = collate_prompts([full], model.tokenizer)
        with torch.no_grad():
            logits = model.llm(inputs_embeds=model.embed_inputs(data), attention_mask=data['attention_mask']).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        n, L = len(answer), logits.shape[0]
        expect = torch.exp(torch.stack([logp[L - n + k - 1, answer[k]] for k in range(n)]).mean()).item()
        assert table[s['id']] == pytest.approx(expect, rel=1e-4), s
