"""Mixing generated samples into SFT (tools/mix_data.py, mg_llava.datagen.mix): seeded draw, duplicates by
image + question left out, provenance kept, the manifest, clear errors."""
import json

import pytest

from mg_llava.datagen.mix import mix, sample_key
from mg_llava.errors import DataError


def _rec(i, image, question, **extra):
    return {'id': i, 'image': image, 'conversations': [{'from': 'human', 'value': '<image>\n' + question},
                                                       {'from': 'gpt', 'value': 'x'}], **extra}


SFT = [_rec('s0', 'a.png', 'What colour?'), _rec('s1', 'b.png', 'How many?')]
GEN = [_rec('g0', 'a.png', ' what  COLOUR?', task='common', judge_score=0.6),   # duplicate of s0
       _rec('g1', 'c.png', 'What shape?', task='common', judge_score=0.55),
       _rec('g2', 'd.png', 'What shape?', task='mc', judge_score=0.65),
       _rec('g3', 'c.png', 'What shape?', task='common')]                        # duplicate of g1


def test_duplicates_are_left_out_and_the_draw_is_seeded():
    assert sample_key(GEN[0]) == sample_key(SFT[0])
    records, manifest = mix(SFT, [('gen.json', GEN)], num=2, seed=0)
    assert records[:2] == SFT and [r['id'] for r in records[2:]] == ['g1', 'g2']
    assert records[2]['judge_score'] == 0.55 and records[3]['task'] == 'mc'       # provenance kept
    assert manifest['added'] == [{'path': 'gen.json', 'samples': 4, 'duplicates': 2, 'candidates': 2, 'mixed': 2}]
    assert manifest['mixed_ids'] == ['g1', 'g2'] and manifest['total'] == 4
    many = [_rec(f'g{i}', f'{i}.png', 'q') for i in range(50)]
    a = mix(SFT, [('m.json', many)], num=5, seed=1)[1]['mixed_ids']
    assert a == mix(SFT, [('m.json', many)], num=5, seed=1)[1]['mixed_ids'] != mix(SFT, [('m.json', many)], num=5,
                                                                                    seed=2)[1]['mixed_ids']
    assert a == sorted(a, key=lambda i: int(i[1:]))          # kept in input order
    assert mix(SFT, [('m.json', many)], ratio=2.0)[1]['num'] == 4
    assert mix(SFT, [('gen.json', GEN)], num='all')[1]['mixed_ids'] == ['g1', 'g2']


def test_errors():
    with pytest.raises(ValueError, match='only 2 candidates'):
        mix(SFT, [('gen.json', GEN)], num=3)
    with pytest.raises(DataError, match=r"gen.json \[id 's1'\]: id already used"):
        mix(SFT, [('gen.json', [_rec('s1', 'z.png', 'q')])], num=1)
    with pytest.raises(DataError, match=r'gen.json \[sample 0\]'):
        mix(SFT, [('gen.json', [{'id': 'x'}])], num=0)
    with pytest.raises(ValueError, match='exactly one'):
        mix(SFT, [], num=1, ratio=0.5)


def test_tool_writes_the_mix_and_its_manifest(load_tool, tmp_path):
    (tmp_path / 'sft.json').write_text(json.dumps(SFT))
    (tmp_path / 'gen.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in GEN))
    out = tmp_path / 'mixed.json'
    tool = load_tool('mix_data')
    assert tool.main(['--sft', str(tmp_path / 'sft.json'), '--add', str(tmp_path / 'gen.jsonl'), '--num', '1',
                      '--out', str(out)]) == 0
    mixed = json.loads(out.read_text())
    manifest = json.loads((tmp_path / 'mixed.manifest.json').read_text())
    assert mixed[:2] == SFT and len(mixed) == 3 and manifest['mixed_ids'] == [mixed[2]['id']]
    with pytest.raises(SystemExit, match='only 2 candidates'):
        tool.main(['--sft', str(tmp_path / 'sft.json'), '--add', str(tmp_path / 'gen.jsonl'), '--num', '9',
                   '--out', str(out)])


def test_mixed_samples_get_their_image_boxes(load_tool, tmp_path):
    from mg_llava.datagen.mix import mixed_boxes
    entry = {'boxes': [[1, 2, 30, 40]], 'scores': [0.9], 'labels': ['star']}
    sft_boxes = [{'id': 's0', **entry}]
    gen = [dict(_rec('g1', 'c.png', 'What shape?'), source_id='img_c')]
    out = mixed_boxes(sft_boxes, {'img_c': {'id': 'img_c', **entry}}, gen)
    assert out == [{'id': 's0', **entry}, {'id': 'g1', **entry}]
    with pytest.raises(DataError, match=r"gen_boxes.json \[id 'img_c'\].*g1"):
        mixed_boxes(sft_boxes, {}, gen, generated_path='gen_boxes.json')
    (tmp_path / 'sft.json').write_text(json.dumps(SFT))
    (tmp_path / 'gen.json').write_text(json.dumps(gen))
    (tmp_path / 'sft_boxes.json').write_text(json.dumps([{'id': 's0', **entry}, {'id': 's1', **entry}]))
    (tmp_path / 'gen_boxes.jsonl').write_text(json.dumps({'id': 'img_c', **entry}) + '\n')
    load_tool('mix_data').main(['--sft', str(tmp_path / 'sft.json'), '--add', str(tmp_path / 'gen.json'), '--all',
                                '--out', str(tmp_path / 'mixed.json'), '--box-file', str(tmp_path / 'sft_boxes.json'),
                                '--generated-box-file', str(tmp_path / 'gen_boxes.jsonl')])
    from mg_llava.data import load_box_index
    assert set(load_box_index(str(tmp_path / 'mixed.boxes.json'))) == {'s0', 's1', 'g1'}


def test_build_generator_data_tool(load_tool, tmp_path, capsys):
    src = tmp_path / 'vqa.json'
    src.write_text(json.dumps([_rec('q1', 'a.png', 'What colour?'), _rec('q2', 'b.png', 'How many?')]))
    rec = tmp_path / 'rec.jsonl'
    rec.write_text(json.dumps({'id': 'r1', 'image': 'a.png', 'width': 100, 'height': 50, 'expression': 'the cat',
                               'box': [10, 5, 60, 45]}) + '\n')
    tool = load_tool('build_generator_data')
    out = tmp_path / 'gen.json'
    assert tool.main(['--source', f'common={src}', '--source', f'rec={rec}', '--out', str(out), '--seed', '3']) == 0
    data = json.loads(out.read_text())
    assert [d['id'] for d in data] == ['common_q1_0', 'common_q2_0', 'rec_r1']
    assert data[2]['conversations'][1]['value'].endswith('Answer: [0.100,0.100,0.600,0.900]')
    first = out.read_bytes()
    tool.main(['--source', f'common={src}', '--source', f'rec={rec}', '--out', str(out), '--seed', '3'])
    assert out.read_bytes() == first
    with pytest.raises(SystemExit, match='made twice'):
        tool.main(['--source', f'common={src}', '--source', f'common={src}', '--out', str(out)])
    with pytest.raises(SystemExit):   # argparse: usage error, exit 2
        tool.main(['--source', f'vqa={src}', '--out', str(out)])
    assert 'expected TASK=PATH' in capsys.readouterr().err
    rec.write_text(json.dumps({'id': 'r1', 'image': 'a.png', 'expression': 'the cat', 'box': [1, 1, 5, 5]}) + '\n')
    with pytest.raises(SystemExit, match=r"rec.jsonl \[id r1\].*width and height"):
        tool.main(['--source', f'rec={rec}', '--out', str(out)])
