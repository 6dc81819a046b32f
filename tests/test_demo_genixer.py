"""The Genixer demo's helpers (mg_llava.demo.genixer): the ground-truth checker agrees with every question the
world wrote, the labelled split, fresh unlabelled images, the generator's data, box entries for new samples."""
import json
from pathlib import Path

import pytest

from mg_llava.datagen import formats as F
from mg_llava.demo import genixer as G
from mg_llava.demo.world import generate_world


def test_truth_agrees_with_the_world_and_rejects_wrong_answers(tiny_world):
    scenes = G.Scenes(tiny_world['root'])
    checked = 0
    for rec in json.loads(open(tiny_world['sft']).read()):
        if not rec.get('image'):
            continue
        scene = scenes(rec['image'])
        for q, a in G.short_answer_turns(rec):
            assert G.truth(scene, q, a), (rec['id'], q, a)
            for wrong in G.ANSWER_TYPES[a][1]:
                if wrong != a:
                    assert not G.truth(scene, q, wrong), (rec['id'], q, wrong)
            checked += 1
    for line in open(tiny_world['heldout']):
        h = json.loads(line)
        assert G.truth(scenes(h['image']), h['question'], h['answer'] + '.')
        checked += 1
    assert checked > 40
    scene = {'objects': [{'colour': 'red', 'shape': 'star', 'cx': 10}, {'colour': 'blue', 'shape': 'circle', 'cx': 50}]}
    assert not G.truth(scene, 'What color is the square?', 'red')        # no such object: not true
    assert not G.truth(scene, 'Describe the image.', 'a red star')       # not a world question
    assert G.truth(scene, 'Is the blue circle left or right of the red star?', 'right')
    assert G.question_type('Is there a red star?\nPlease answer the question with yes or no.') == 'presence'


def test_split_generator_data_and_fresh_images(tiny_world, tmp_path):
    out = tmp_path / 'g'
    n = G.write_data(tiny_world['root'], out, labelled=4, unlabelled=5, seed=0)
    sft = json.loads(open(tiny_world['sft']).read())
    lab = json.loads((out / 'labelled.json').read_text())
    assert lab == sft[:len(lab)] and sum(1 for r in lab if r.get('image')) == 4 == n['labelled_images']
    lab_images = {r['image'] for r in lab if r.get('image')}
    for name in lab_images:   # linked into the learner's image folder
        assert (out / 'images' / name).read_bytes() == (Path(tiny_world['images']) / name).read_bytes()
    # the unlabelled images are fresh ones of the same world (index 12.. of a 12-image world), with box entries
    unl = [json.loads(line) for line in open(out / 'unlabelled.jsonl')]
    assert [u['image'] for u in unl] == [f'{i:06d}.png' for i in range(12, 17)] and n['unlabelled'] == 5
    assert [u['id'] for u in unl] == [f'unl_{i:06d}' for i in range(12, 17)]
    bigger = generate_world(tmp_path / 'w', num_train=17, num_heldout=1)
    boxes = {e['id']: e for e in json.loads((out / 'boxes.json').read_text())}
    big_boxes = {e['id']: e for e in json.loads(open(bigger['boxes']).read())}
    for u in unl:
        assert (out / 'images' / u['image']).read_bytes() == (Path(bigger['images']) / u['image']).read_bytes()
        assert {k: v for k, v in boxes[u['id']].items() if k != 'id'} == \
            {k: v for k, v in big_boxes['sft_' + u['id'][4:]].items() if k != 'id'}
    scenes = G.Scenes(tiny_world['root'])
    gen = json.loads((out / 'generator.json').read_text())
    assert len(gen) == n['generator'] > 0 and {g['task'] for g in gen} == {'common'}
    for g in gen:
        assert g['image'] in lab_images
        (q, a), = F.parse_qa(g['conversations'][1]['value'])
        assert G.truth(scenes(g['image']), q, a) and 'Please answer' not in q
    with pytest.raises(ValueError, match='labelled'):
        G.write_data(tiny_world['root'], tmp_path, labelled=13, unlabelled=1)


def test_box_entries_for_new_samples_copy_their_image(tiny_world, tmp_path):
    base = tmp_path / 'base.json'
    base.write_text(json.dumps(json.loads(open(tiny_world['boxes']).read())
                               + [{'id': 'unl_000020', 'boxes': [[1, 2, 3, 4]], 'scores': [0.5], 'labels': ['star']}]))
    recs = [{'id': 'gen_x', 'image': '000001.png'}, {'id': 'sft_000001', 'image': '000001.png'},
            {'id': 'gen_unl_000020', 'image': '000020.png'}]
    assert G.extend_boxes(base, recs, tmp_path / 'b.json') == 2
    entries = {e['id']: e for e in json.loads((tmp_path / 'b.json').read_text())}
    assert {k: v for k, v in entries['gen_x'].items() if k != 'id'} == \
        {k: v for k, v in entries['sft_000001'].items() if k != 'id'}
    assert entries['gen_unl_000020']['boxes'] == [[1, 2, 3, 4]]
    with pytest.raises(ValueError, match='no box entry'):
        G.extend_boxes(base, [{'id': 'g', 'image': 'nope.png'}], tmp_path / 'c.json')


def test_precision_counts_true_samples(tiny_world):
    rec = next(r for r in json.loads(open(tiny_world['sft']).read()) if r.get('image'))
    (q, a), *_ = G.short_answer_turns(rec)
    wrong = next(c for c in G.ANSWER_TYPES[a][1] if c != a)
    samples = [{'image': rec['image'], 'question': q, 'answer': a},
               {'image': rec['image'], 'question': q, 'answer': wrong},
               {'image': rec['image'], 'question': 'What is this?', 'answer': a}]
    p, by_type = G.precision(tiny_world['root'], samples)
    assert p == pytest.approx(100 / 3) and by_type['other'] == (0, 1)
