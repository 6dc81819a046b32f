"""Genixer data engine, the pure parts: box / QA formats, the two-level instructions, generator training data
for the 9 tasks, the judge's P(Yes) and band, the CLIP filter's crop and score (hand-computed cases)."""
import json
import math

import pytest

from mg_llava.datagen import formats as F
from mg_llava.datagen import judge as J
from mg_llava.datagen import templates as T
from mg_llava.datagen.tasks import generator_samples
from mg_llava.errors import DataError


def test_box_printing_is_normalised_clamped_and_3_decimals():
    assert F.format_box([10, 20, 50, 80], 100, 100) == '[0.100,0.200,0.500,0.800]'
    assert F.format_box([-5, 0, 640, 500], 640, 480) == '[0.000,0.000,1.000,1.000]'   # clamped
    assert F.format_box([1, 1, 2, 2], 3, 3) == '[0.333,0.333,0.667,0.667]'
    assert F.format_point([32, 24], 64, 48) == '[0.500,0.500]'
    assert F.format_boxes([[0, 0, 5, 5], [5, 5, 10, 10]], 10, 10) == '[0.000,0.000,0.500,0.500];[0.500,0.500,1.000,1.000]'
    with pytest.raises(F.FormatError, match='degenerate'):
        F.format_box([50, 10, 40, 20], 100, 100)
    with pytest.raises(F.FormatError, match='4 numbers'):
        F.format_box([1, 2, 3], 100, 100)


@pytest.mark.parametrize('text,groups', [
    ('[0.100,0.200,0.500,0.800]', [[[0.1, 0.2, 0.5, 0.8]]]),                                        # REC answer
    ('What is in [0.1,0.2,0.3,0.4];[0.5,0.5,0.6,0.7]?', [[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.7]]]),
    ('Is it here[0.250,0.500]', [[[0.25, 0.5]]]),                                                   # point
    ('q Candidates: [0.1,0.1,0.2,0.2] [0.3,0.3,0.4,0.4]', [[[0.1, 0.1, 0.2, 0.2]], [[0.3, 0.3, 0.4, 0.4]]]),
    ('[ 0.1 , 0.2 , 0.3 , 0.4 ] and [.5,.5]', [[[0.1, 0.2, 0.3, 0.4]], [[0.5, 0.5]]]),
    ('no boxes, [1, 2] is a list? [a,b]', [[[1.0, 2.0]]]),
])
def test_box_groups_parse(text, groups):
    assert F.parse_box_groups(text) == groups


def test_box_round_trip_for_every_grounding_format():
    w, h = 640, 427
    boxes = [[12, 30, 200, 300], [100, 50, 639, 426]]
    one = F.format_box(boxes[0], w, h)
    many = F.format_boxes(boxes, w, h)
    point = F.format_point([320, 213], w, h)
    for text, expect in [(one, [F.normalise_box(boxes[0], w, h)]),
                         (many, [F.normalise_box(b, w, h) for b in boxes])]:
        assert F.parse_boxes(text) == expect
        assert F.format_boxes([F.denormalise_box(b, w, h) for b in F.parse_boxes(text)], w, h) == text
    assert F.parse_points(point) == [F.normalise_point([320, 213], w, h)] and F.parse_boxes(point) == []
    assert F.format_coords(F.parse_points(point)[0]) == point


def test_qa_parse_and_its_errors():
    assert F.parse_qa('Question: What colour is the star? Answer: red') == [('What colour is the star?', 'red')]
    dialogue = F.format_dialogue([('How many?', 'two'), ('Which is left?', 'the circle')])
    assert F.parse_qa(dialogue) == [('How many?', 'two'), ('Which is left?', 'the circle')]
    mc = 'Question: Colour? A. red B. blue Answer: A'
    assert F.parse_qa(mc) == [('Colour? A. red B. blue', 'A')]
    box = F.parse_qa('Question: Where is the cat? Answer: [0.1,0.2,0.3,0.4]')[0][1]
    assert F.parse_boxes(box) == [[0.1, 0.2, 0.3, 0.4]]
    for bad, why in [('The star is red.', 'does not start'), ('Question: What? ', 'no "Answer:"'),
                     ('Question: Answer: red', 'empty question'), ('Question: What? Answer:', 'empty answer'),
                     ('', 'does not start')]:
        with pytest.raises(F.FormatError, match=why):
            F.parse_qa(bad)


def test_templates_are_package_data_and_draws_are_seeded_per_sample():
    pool = T.generic_instructions()
    assert len(pool) >= 30 and len(set(pool)) == len(pool) and not any('<image>' in p for p in pool)
    for task in T.TASKS:
        prompt, index = T.instruction(task, T.sample_rng(0, 'a'), task_specific=True)
        if task == 'md':
            assert index == -1
        else:
            assert prompt == pool[index] + T.task_suffix(task)
            assert T.instruction(task, T.sample_rng(0, 'a'), task_specific=False) == (pool[index], index)
    assert T.task_suffix('mc') == '\nThis is a Multi-choice VQA task.'
    assert T.task_suffix('rec').startswith(' This is a Referring Expression Comprehension (REC) task.')
    draws = [T.sample_rng(7, f'k{i}').integers(1000) for i in range(20)]
    assert draws == [T.sample_rng(7, f'k{i}').integers(1000) for i in range(20)]
    assert draws != [T.sample_rng(8, f'k{i}').integers(1000) for i in range(20)]
    with pytest.raises(ValueError, match='unknown Genixer task'):
        T.task_suffix('vqa')


def _conv(*turns):
    return [{'from': 'human' if i % 2 == 0 else 'gpt', 'value': v} for i, v in enumerate(turns)]


ANNOTATED = {
    'common': {'id': 1, 'image': 'a.png', 'conversations': _conv('<image>\nWhat colour?', 'red', 'How many?', 'two')},
    'adv': {'id': 2, 'image': 'a.png', 'conversations': _conv('Is there a dog in the image?', 'no')},
    'mc': {'id': 3, 'image': 'a.png', 'conversations': _conv('Colour? A. red B. blue', 'A')},
    'longqa': {'id': 4, 'image': 'a.png', 'conversations': _conv('Why?', 'Because it rains.')},
    'md': {'id': 5, 'image': 'a.png', 'conversations': _conv('<image>\nHi, what is it?', 'A cat.', 'Colour?', 'Black.')},
    'rec': {'id': 6, 'image': 'a.png', 'width': 200, 'height': 100, 'expression': 'the red star.',
            'box': [20, 10, 100, 50]},
    'reg': {'id': 7, 'image': 'a.png', 'width': 200, 'height': 100, 'expression': 'the red star',
            'box': [20, 10, 100, 50]},
    'pointqa': {'id': 8, 'image': 'a.png', 'width': 200, 'height': 100, 'question': 'What colour is this?',
                'answer': 'red', 'point': [100, 50]},
    'qca': {'id': 9, 'image': 'a.png', 'width': 200, 'height': 100, 'boxes': [[0, 0, 100, 100], [100, 0, 200, 50]],
            'boxes_seq': [[0], [0, 1]],
            'conversations': _conv('What is left of the star<boxes>?', 'The circle<boxes>, so a circle.')},
    'rd': {'id': 10, 'image': 'a.png', 'width': 200, 'height': 100, 'boxes': [[0, 0, 100, 100]],
           'boxes_seq': [[0]], 'conversations': _conv('What is this<boxes>?', 'A circle.', 'Colour?', 'Blue.')},
}
TARGETS = {
    'common': ['Question: What colour? Answer: red', 'Question: How many? Answer: two'],
    'adv': ['Question: Is there a dog in the image? Answer: no'],
    'mc': ['Question: Colour? A. red B. blue Answer: A'],
    'longqa': ['Question: Why? Answer: Because it rains.'],
    'md': ['Question: Hi, what is it? Answer: A cat.\nQuestion: Colour? Answer: Black.'],
    'pointqa': ['Question: What colour is this?[0.500,0.500] Answer: red'],
    'qca': ['Question: What is left of the star[0.000,0.000,0.500,1.000]? Answer: The circle'
            '[0.000,0.000,0.500,1.000];[0.500,0.000,1.000,0.500], so a circle.'],
    'rd': ['Question: What is this[0.000,0.000,0.500,1.000]? Answer: A circle.\nQuestion: Colour? Answer: Blue.'],
}


@pytest.mark.parametrize('task', T.TASKS)
def test_generator_samples_for_each_task(task):
    out = generator_samples(task, [ANNOTATED[task]], seed=3, task_specific=1.0, source='ann.json')
    assert out == generator_samples(task, [ANNOTATED[task]], seed=3, task_specific=1.0)   # seeded
    for s in out:
        human, gpt = s['conversations']
        assert s['task'] == task and s['image'] == 'a.png' and human['value'].startswith('<image>\n')
        assert s['task_specific'] is True and human['value'].endswith(T.task_suffix(task))
        pairs = F.parse_qa(gpt['value'])   # every target parses back
        assert pairs
    targets = [s['conversations'][1]['value'] for s in out]
    if task in TARGETS:
        assert targets == TARGETS[task]
    elif task == 'rec':
        (q, a), = F.parse_qa(targets[0])
        assert a == '[0.100,0.100,0.500,0.500]' and 'the red star' in q and '<expr>' not in q
    else:   # reg
        (q, a), = F.parse_qa(targets[0])
        assert '[0.100,0.100,0.500,0.500]' in q and a == 'the red star.'
    key = f'{task}_{ANNOTATED[task]["id"]}'
    per_turn = task in ('common', 'adv', 'mc', 'longqa')   # a sample per (question, answer) turn
    assert [s['id'] for s in out] == ([f'{key}_{n}' for n in range(len(out))] if per_turn else [key])


def test_text_only_records_are_skipped_and_counted():
    stats = {}
    out = generator_samples('common', [{'id': 't', 'conversations': _conv('Hi', 'Hello')}, ANNOTATED['common']],
                            stats=stats)
    assert stats == {'text_only': 1} and [s['id'] for s in out] == ['common_1_0', 'common_1_1']


def test_task_agnostic_share_and_visual7w_pointqa():
    recs = [dict(ANNOTATED['adv'], id=i) for i in range(200)]
    out = generator_samples('adv', recs, seed=0, task_specific=0.5)
    share = sum(s['task_specific'] for s in out) / len(out)
    assert 0.35 < share < 0.65
    plain = [s for s in out if not s['task_specific']][0]
    assert plain['conversations'][0]['value'] == '<image>\n' + T.generic_instructions()[plain['template']]
    v7w = {'id': 'v', 'image': 'b.png', 'width': 100, 'height': 100, 'question': 'Which is the cup?',
           'candidates': [[0, 0, 10, 10], [50, 50, 60, 60]], 'answer_box': [50, 50, 60, 60]}
    (s,) = generator_samples('pointqa', [v7w])
    assert s['conversations'][1]['value'] == ('Question: Which is the cup? Candidates: [0.000,0.000,0.100,0.100] '
                                              '[0.500,0.500,0.600,0.600] Answer: [0.500,0.500,0.600,0.600]')


@pytest.mark.parametrize('task,bad,why', [
    ('rec', {'id': 1, 'image': 'a.png', 'expression': 'x', 'box': [0, 0, 1, 1]}, 'width and height'),
    ('rec', {'id': 1, 'image': 'a.png', 'width': 10, 'height': 10, 'expression': 'x', 'box': [5, 5, 2, 2]}, 'degenerate'),
    ('common', {'id': 1, 'image': 'a.png', 'conversations': _conv('q')}, 'turn pairs'),
    ('common', {'id': 1, 'image': '', 'conversations': []}, 'needs an id and an image'),
    ('qca', {'id': 1, 'image': 'a.png', 'width': 9, 'height': 9, 'boxes': [[0, 0, 4, 4]], 'boxes_seq': [[3]],
             'conversations': _conv('q<boxes>', 'a')}, 'not in boxes'),
    ('vqa', {'id': 1, 'image': 'a.png'}, 'unknown Genixer task'),
])
def test_bad_annotations_name_the_file_and_sample(task, bad, why):
    with pytest.raises((DataError, ValueError), match=why) as err:
        generator_samples(task, [bad], source='ann.json')
    if task != 'vqa':
        assert isinstance(err.value, DataError) and 'ann.json' in str(err.value) and 'id 1' in str(err.value)


def test_p_yes_against_hand_computed_logits():
    import torch
    logits = torch.full((3, 6), -1.0)
    logits[0, 2], logits[0, 4] = 2.0, 0.0          # yes ids 2, 3 (logit -1), no id 4
    logits[1, 2], logits[1, 4] = 0.0, 0.0
    logits[2, 2], logits[2, 3], logits[2, 4] = 1.0, 1.0, math.log(2.0)  # two yes ids: 2e / (2e + 2)
    p = J.p_yes(logits, [2, 3], [4])
    e = math.exp
    assert p[0].item() == pytest.approx((e(2) + e(-1)) / (e(2) + e(-1) + 1), rel=1e-6)
    assert p[1].item() == pytest.approx((1 + e(-1)) / (1 + e(-1) + 1), rel=1e-6)
    logits[0, 3] = -1e9   # the second yes id out of the way: the plain 2-way softmax
    assert J.p_yes(logits, [2, 3], [4])[0].item() == pytest.approx(math.exp(2) / (math.exp(2) + 1), rel=1e-6)
    assert J.p_yes(logits[1:2], [2], [4]).item() == pytest.approx(0.5)
    assert p[2].item() == pytest.approx(2 * math.e / (2 * math.e + 2), rel=1e-6)
    # bf16 logits are scored in fp32
    assert J.p_yes(logits.bfloat16(), [2], [4]).dtype == torch.float32


def test_reference_geomean_keeps_its_exponent_bug():
    lp = [math.log(0.9), math.log(0.8), math.log(0.5)]
    assert J.geomean_score(lp) == pytest.approx((0.9 * 0.8 * 0.5) ** (1 / 2))   # T - 1 = 2, not 3
    with pytest.raises(ValueError, match='divides by zero'):
        J.geomean_score([math.log(0.9)])


def test_band_edges_are_kept():
    assert J.in_band(0.5) and J.in_band(0.7) and J.in_band(0.6)
    assert not J.in_band(0.4999) and not J.in_band(0.7001)
    assert J.in_band(0.9, (0.0, 1.0))
    with pytest.raises(ValueError, match='band'):
        J.in_band(0.5, (0.8, 0.2))


def test_judge_prompt_and_yes_no_ids(tiny_assets):
    from transformers import AutoTokenizer
    assert J.judge_prompt(' Is it red? ', 'yes') == ("Here is a question and answer pair. Is 'Question: Is it red? "
                                                    "Answer: yes' true for this image?\nPlease answer this question "
                                                    "with Yes or No.")
    yes, no = J.yes_no_ids(AutoTokenizer.from_pretrained(tiny_assets['tokenizer']))
    assert yes and no and not set(yes) & set(no)


def test_clip_score_cosine_and_raw_dot_and_crop():
    import torch
    from PIL import Image

    from mg_llava.datagen.clip_filter import clip_scores, crop_box
    img = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    txt = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    assert clip_scores(img, txt).tolist() == pytest.approx([100 * 24 / 25, 0.0])
    assert clip_scores(img, txt, score='raw_dot').tolist() == pytest.approx([24.0, 0.0])
    with pytest.raises(ValueError, match='cosine'):
        clip_scores(img, txt, score='dot')
    image = Image.new('RGB', (200, 100))
    assert crop_box(image, [0.1, 0.0, 0.5, 0.6]).size == (80, 60)
    with pytest.raises(F.FormatError, match='under 50 px'):
        crop_box(image, [0.1, 0.0, 0.5, 0.4])   # 40 px high


def test_templates_ship_with_the_package():
    setup = open('setup.py').read()
    assert 'datagen/templates/*.json' in setup
    for name in ('generic_instructions', 'task_suffixes', 'dialogue_prompt', 'rec_questions', 'reg_questions'):
        json.loads((T.TEMPLATE_DIR / f'{name}.json').read_text())
