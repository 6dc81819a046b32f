"""The LLaVA-MoD demo's helpers (mg_llava.demo.distill): the student LLM, the preference pairs from the world
and the report's table and last line. The demo itself (`make demo-distill`) runs the shipped configs, which
test_configs builds and runs on tiny stand-ins."""
import json
import re

import pytest

from mg_llava.demo import distill as D
from mg_llava.demo import world as W


def test_student_data_is_a_prefix_of_the_world_sft_with_pairs_from_it(tiny_world, tmp_path):
    world_sft = json.loads(open(tiny_world['sft']).read())
    num = len(world_sft) - 3
    n, images, pairs_n = D.write_student_data(tiny_world['root'], tmp_path, num_samples=num, seed=0)
    assert json.loads((tmp_path / 'sft.json').read_text()) == world_sft[:num] and n == num
    pairs = json.loads((tmp_path / 'pairs.json').read_text())
    chosen = json.loads((tmp_path / 'chosen.json').read_text())
    sft = {r['id']: r for r in world_sft[:num]}
    assert pairs_n == len(pairs) == len(chosen) == images == sum(1 for r in sft.values() if r.get('image'))
    types = set()
    for p, c in zip(pairs, chosen):
        rec = sft[p['id']]   # the SFT id: the box file's key
        assert p['image'] == rec['image'] == c['image'] and c['conversations'] == p['chosen']
        question, answer = p['chosen'][0]['value'], p['chosen'][1]['value']
        assert p['rejected'][0] == p['chosen'][0] and question.startswith('<image>\n')
        turns = {(rec['conversations'][i]['value'].replace('<image>\n', ''), rec['conversations'][i + 1]['value'])
                 for i in range(0, len(rec['conversations']), 2)}
        assert (question[len('<image>\n'):], answer) in turns          # the true answer of that question
        kind, choices = D.ANSWER_TYPES[answer]
        rejected = p['rejected'][1]['value']
        assert rejected != answer and rejected in choices              # plausible: same type, wrong
        types.add(kind)
    assert len(types) >= 3, types
    assert D.preference_pairs(list(sft.values()), seed=0)[0] == pairs   # seeded
    assert D.preference_pairs(list(sft.values()), seed=1)[0] != pairs
    with pytest.raises(ValueError, match='sft.json holds'):
        D.write_student_data(tiny_world['root'], tmp_path, num_samples=len(world_sft) + 1)


def test_lettered_and_text_only_turns_are_not_made_into_pairs():
    mc = {'id': 'sft_1', 'image': 'a.png', 'conversations': [
        {'from': 'human', 'value': '<image>\nWhat color is the star?\nA. red\nB. green'}, {'from': 'gpt', 'value': 'A'},
        {'from': 'human', 'value': 'Is there a red star?'}, {'from': 'gpt', 'value': 'yes'}]}
    text = {'id': 'txt_1', 'conversations': [{'from': 'human', 'value': 'How many colors are there?'},
                                             {'from': 'gpt', 'value': 'six'}]}
    pairs, _ = D.preference_pairs([mc, text])
    assert [(p['id'], p['chosen'][1]['value'], p['rejected'][1]['value']) for p in pairs] == [('sft_1', 'yes', 'no')]


def test_student_llm_is_the_teacher_llm_with_half_its_layers(random_model, tiny_assets, tmp_path):
    """Depth pruning: the kept layers are the teacher's, renumbered; greedy generation (KV cache) runs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    random_model.save_pretrained(str(tmp_path / 'teacher'), fp32=True)
    D.main(['student', str(tmp_path / 'teacher'), str(tmp_path / 'student')])
    llm = AutoModelForCausalLM.from_pretrained(tmp_path / 'student')
    teacher = random_model.llm
    assert llm.config.num_hidden_layers == len(D.STUDENT_LAYERS) == teacher.config.num_hidden_layers // 2
    for new, old in enumerate(D.STUDENT_LAYERS):
        for (k, v), (k2, v2) in zip(llm.model.layers[new].state_dict().items(),
                                    teacher.model.layers[old].state_dict().items()):
            assert k == k2 and torch.equal(v, v2), k
        assert llm.model.layers[new].self_attn.layer_idx == new
    assert torch.equal(llm.lm_head.weight, teacher.lm_head.weight)
    tok = AutoTokenizer.from_pretrained(tiny_assets['tokenizer'])
    enc = tok('What color is the star?', return_tensors='pt')
    out = llm.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 3
    with pytest.raises(ValueError, match='distinct indices'):
        D.build_student_llm(str(tmp_path / 'teacher'), str(tmp_path / 'bad'), keep_layers=(0, 9))


def test_accuracy_by_type():
    qs = [dict(type='colour', answer='red'), dict(type='colour', answer='blue'), dict(type='count', answer='two')]
    per_type, overall = D.accuracy_by_type(qs, ['Red.', 'green', 'two'])
    assert per_type == {'colour': 50.0, 'count': 100.0} and overall == pytest.approx(200 / 3)


def test_report_table_and_last_line(random_model, tiny_world, tmp_path, capsys):
    random_model.save_pretrained(str(tmp_path / 'm'), fp32=True)
    m = str(tmp_path / 'm')
    D.main(['report', tiny_world['root'], f'teacher={m}', f'SFT student={m}', f'final={m}'])
    out = capsys.readouterr().out.splitlines()
    header = next(ln for ln in out if ln.startswith('type'))
    assert header.split()[-4:] == ['teacher', 'SFT', 'student', 'final']
    rows = {ln.split()[0]: ln for ln in out[out.index(header) + 1:-1]}
    assert set(rows) == {q['type'] for q in map(json.loads, open(tiny_world['heldout']))} | {'all'}
    acc = re.fullmatch(r'distilled student held-out accuracy: (\d+\.\d)% \(teacher (\d+\.\d)%, '
                       r'SFT student (\d+\.\d)%\)', out[-1])
    assert acc and acc.group(1) == acc.group(2) == acc.group(3), out[-1]    # one model three times
    assert f'{float(acc.group(1)):.1f}%' == rows['all'].split()[-1]
    with pytest.raises(SystemExit):
        D.main(['report', tiny_world['root'], f'teacher={m}', f'final={m}'])   # no SFT student column


def test_question_types_cover_every_answer():
    assert set(D.ANSWER_TYPES) == {a for _, choices in W.QUESTION_TYPES.values() for a in choices}
