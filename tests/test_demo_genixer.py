"""The Genixer demo's helpers (mg_llava.demo.genixer): the ground-truth checker agrees with every question the
world wrote, the labelled / unlabelled split and the generator + verifier data, box entries for new samples."""
import json

import pytest

from mg_llava.datagen import formats as F
from mg_llava.demo import genixer as G


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


def test_split_generator_and_verifier_data(tiny_world, tmp_path):
    n = G.write_data(tiny_world['root'], tmp_path, labelled=4, unlabelled=5, seed=0)
    sft = json.loads(open(tiny_world['sft']).read())
    lab = json.loads((tmp_path / 'labelled.json').read_text())
    assert lab == sft[:len(lab)] and sum(1 for r in lab if r.get('image')) == 4 == n['labelled_images']
    unl = [json.loads(line) for line in open(tmp_path / 'unlabelled.jsonl')]
    lab_images = {r['image'] for r in lab if r.get('image')}
    assert len(unl) == 5 and not lab_images & {u['image'] for u in unl} and set(unl[0]) == {'id', 'image'}
    gen = json.loads((tmp_path / 'generator.json').read_text())
    qa = [g for g in gen if g.get('task') == 'common']
    verify = [g for g in gen if g.get('task') == 'verify']
    assert len(qa) == n['generator'] == len(verify) == n['verify'] > 0
    scenes = G.Scenes(tiny_world['root'])
    for g in qa:
        assert g['image'] in lab_images
        (q, a), = F.parse_qa(g['conversations'][1]['value'])
        assert G.truth(scenes(g['image']), q, a) and 'Please answer' not in q
    said = {g['conversations'][1]['value'] for g in verify}
    assert said == {'Yes', 'No'}
    for g in verify:   # Yes exactly when the shown answer is true
        text = g['conversations'][0]['value']
        (q, a), = F.parse_qa(text[text.index("'") + 1:text.rindex("'")])
        assert G.truth(scenes(g['image']), q, a) == (g['conversations'][1]['value'] == 'Yes')
    with pytest.raises(ValueError, match='labelled'):
        G.write_data(tiny_world['root'], tmp_path, labelled=10, unlabelled=10)


def test_box_entries_for_new_samples_copy_their_image(tiny_world, tmp_path):
    recs = [{'id': 'gen_x', 'image': '000001.png'}, {'id': 'sft_000001', 'image': '000001.png'}]
    assert G.extend_boxes(tiny_world['root'], recs, tmp_path / 'b.json') == 1
    entries = {e['id']: e for e in json.loads((tmp_path / 'b.json').read_text())}
    assert {k: v for k, v in entries['gen_x'].items() if k != 'id'} == \
        {k: v for k, v in entries['sft_000001'].items() if k != 'id'}
    with pytest.raises(ValueError, match='no box entry'):
        G.extend_boxes(tiny_world['root'], [{'id': 'g', 'image': 'nope.png'}], tmp_path / 'c.json')


def test_precision_counts_true_samples(tiny_world):
    rec = next(r for r in json.loads(open(tiny_world['sft']).read()) if r.get('image'))
    (q, a), *_ = G.short_answer_turns(rec)
    wrong = next(c for c in G.ANSWER_TYPES[a][1] if c != a)
    samples = [{'image': rec['image'], 'question': q, 'answer': a},
               {'image': rec['image'], 'question': q, 'answer': wrong},
               {'image': rec['image'], 'question': 'What is this?', 'answer': a}]
    p, by_type = G.precision(tiny_world['root'], samples)
    assert p == pytest.approx(100 / 3) and by_type['other'] == (0, 1)
