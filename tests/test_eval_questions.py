"""Tests of mg_llava.evaluation.questions (benchmark files -> prompts, ids, images, box keys) and
mg_llava.evaluation.submission (official submission files), on the fixtures in tests/fixtures/eval/.

Every expected prompt is written out in full (spec 4.2); ids are checked against the scorer's ids for the
same files.  Images are generated into tmp_path with PIL; the TSV fixtures carry tiny base64 PNGs: B1 = the 1x1
(0, 255, 0, alpha) PNG of the scorer fixtures, B2 = a 2x1 RGB (0, 128, 255) PNG.
"""
import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / 'tests' / 'fixtures' / 'eval'
B1 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='
B2 = 'iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAIAAAB7QOjdAAAAD0lEQVR4nGNkaPjPwMAAAAaKAYHSRmyPAAAAAElFTkSuQmCC'
MC = "Answer with the option's letter from the given choices directly."
MC_CN = '请直接回答选项字母。'
SHORT = '\nAnswer the question using a single word or phrase.'
YES_NO = '\nPlease answer the question with yes or no.'


def _import_eval(*names):
    """mg_llava.evaluation.<names> in ONE import session (so they share loaders.ScoreError), without running
    mg_llava/__init__.py (torch) unless something already imported the real package."""
    if 'mg_llava' in sys.modules:
        return [importlib.import_module(f'mg_llava.evaluation.{n}') for n in names]
    sys.modules['mg_llava'] = stub = types.ModuleType('mg_llava')
    stub.__path__ = [str(REPO / 'mg_llava')]
    try:
        return [importlib.import_module(f'mg_llava.evaluation.{n}') for n in names]
    finally:
        for key in [k for k in sys.modules if k == 'mg_llava' or k.startswith('mg_llava.evaluation')]:
            del sys.modules[key]


Q, SUB, LD, SC = _import_eval('questions', 'submission', 'loaders', 'score')
ScoreError = LD.ScoreError


def load(benchmark, data, image_folder=None, annotations=None):
    return Q.load_questions(benchmark, str(FIX / data) if not os.path.isabs(str(data)) else str(data),
                            image_folder and str(image_folder), annotations and str(FIX / annotations))


def by_id(questions):
    return {q['id']: q for q in questions}


def write_tsv(path, header, rows):
    path.write_text('\n'.join('\t'.join(r) for r in [header] + rows) + '\n', encoding='utf-8')
    return path


def test_modules_import_no_heavy_packages():
    code = ("import sys, types; p = types.ModuleType('mg_llava'); p.__path__ = [sys.argv[1]]; "
            "sys.modules['mg_llava'] = p; import mg_llava.evaluation.questions, mg_llava.evaluation.submission; "
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'numpy', 'mmengine') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code, str(REPO / 'mg_llava')], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'


# ---------------------------------------------------------------------------------------------------------------
# prompts (exact text) and ids against the scorer
def test_benchmark_list():
    assert set(Q.QUESTION_BENCHMARKS) == set(SC.BENCHMARKS) | {'vqav2', 'vizwiz', 'llava_bench', 'mmvet'}
    assert 'ocrvqa' in SC.BENCHMARKS and len(set(Q.QUESTION_BENCHMARKS)) == len(Q.QUESTION_BENCHMARKS)
    with pytest.raises(ValueError, match='unknown benchmark'):
        Q.load_questions('nope', str(FIX / 'mc_plain.tsv'))


def test_mmbench_prompts_ids_images_box_keys():
    qs = load('mmbench', 'mmbench_dev.tsv')
    assert [q['id'] for q in qs] == ['0', '1', '2', '3', '1000000', '1000001', '1000003', '2000003']  # file order
    assert [q['box_key'] for q in qs] == [q['id'] for q in qs]
    q = by_id(qs)
    assert q['0']['text'] == 'What animal is this?\nA. cat\nB. dog\nC. bird\nD. fish\n' + MC
    assert q['2']['text'] == 'A street scene.\nWhat colour is the car?\nA. red\nB. blue\nC. green\nD. white\n' + MC
    assert q['1000000']['text'] == 'What animal is this?\nA. dog\nB. bird\nC. fish\nD. cat\n' + MC
    assert q['0']['image'] == {'b64': B1}
    assert q['1000000']['image'] == {'b64': B1} and q['2000003']['image'] == q['3']['image']  # short cell -> row
    assert q['0']['where'] == f'{FIX / "mmbench_dev.tsv"} row 2'
    assert {x['id'] for x in qs} == {it['id'] for it in Q.score_data('mmbench', str(FIX / 'mmbench_dev.tsv'))}


@pytest.mark.parametrize('benchmark', ['seed', 'ai2d', 'mmstar'])
def test_plain_multiple_choice(benchmark):
    qs = load(benchmark, 'mc_plain.tsv')
    assert qs[1]['text'] == 'Which object is largest?\nA. cup\nB. table\nC. pen\nD. book\n' + MC
    assert [q['id'] for q in qs] == [it['id'] for it in Q.score_data(benchmark, str(FIX / 'mc_plain.tsv'))]


def test_sqa_hint_and_option_count():
    qs = by_id(load('sqa', 'sqa.tsv'))
    assert qs['10']['text'] == 'Which is a mammal?\nA. frog\nB. shark\nC. eagle\nD. snake\nE. whale\n' + MC
    assert qs['11']['text'] == 'Read the passage.\nIs the statement true?\nA. yes\nB. no\n' + MC
    assert qs['12']['text'] == 'Which is heavier?\nA. iron\nB. feather\n' + MC
    assert set(qs) == {it['id'] for it in Q.score_data('sqa', str(FIX / 'sqa.tsv'))}


def test_mmmu_open_questions_become_two_options():
    qs = by_id(load('mmmu', 'mmmu.tsv'))
    assert qs['101']['text'] == 'What is 6 times 7?\nA. 42\nB. Other Answers\n' + MC  # MMMU_preproc
    assert qs['103']['text'] == ('Which is the ninth letter?\nA. a\nB. b\nC. c\nD. d\nE. e\nF. f\nG. g\nH. h\n'
                                 'I. i\n' + MC)
    # the same TSV read as a plain benchmark keeps the open question option-less
    assert by_id(load('seed', 'mmmu.tsv'))['101']['text'] == 'What is 6 times 7?\n' + MC


def test_cjk_suffix_and_reference_to_another_row():
    qs = load('mmbench', 'mc_cjk.tsv')
    assert qs[0]['text'] == '图中是什么动物？\nA. 猫\nB. 狗\n' + MC_CN
    assert qs[1]['text'] == 'Vocabulary.\nWhich word means cat?\nA. dog\nB. 猫\nC. bird\n' + MC_CN  # CJK option
    assert qs[1]['image'] == qs[0]['image'] == {'b64': B2}
    image = Q.open_image(qs[1])
    assert image.mode == 'RGB' and image.size == (2, 1) and image.getpixel((1, 0)) == (0, 128, 255)


def test_text_is_taken_unstripped_and_chained_references(tmp_path):
    path = write_tsv(tmp_path / 'mc.tsv', ['index', 'question', 'A', 'B', 'answer', 'image'], [
        ['5', ' Why? ', 'x ', ' y', 'A', B2], ['6', 'Q6', 'a', 'b', 'B', '1000007'],
        ['1000007', 'Q7', 'a', 'b', 'B', '5']])
    qs = Q.load_questions('ai2d', str(path))
    assert qs[0]['text'] == ' Why? \nA. x \nB.  y\n' + MC  # pandas keeps the whitespace the reference prompts with
    assert qs[1]['image'] == qs[2]['image'] == {'b64': B2}  # 6 -> 1000007 -> 5 (any cell < 16 chars is a ref)


def test_test_split_has_questions_but_no_score_data(tmp_path):
    path = write_tsv(tmp_path / 'MMBench_TEST.tsv', ['index', 'question', 'A', 'B', 'image'],
                     [['1', 'Q?', 'a', 'b', B2]])
    assert [q['text'] for q in Q.load_questions('mmbench', str(path))] == ['Q?\nA. a\nB. b\n' + MC]
    assert Q.score_data('mmbench', str(path)) is None


def test_mme_replacement_folder_image_and_ids(tmp_path):
    Image.new('RGB', (3, 2), (9, 8, 7)).save(tmp_path / 'e1.png')
    os.makedirs(tmp_path / 'existence')
    Image.new('L', (4, 4), 200).save(tmp_path / 'existence' / 'e1.jpg')
    qs = load('mme', 'mme.tsv', image_folder=tmp_path)
    assert qs[0]['text'] == 'Is there a dog? Please answer the question only a single word yes or no.'
    assert qs[0]['image'] == {'path': str(tmp_path / 'existence' / 'e1.jpg')}
    assert qs[0]['box_key'] == '0'
    image = Q.open_image(qs[0])
    assert image.mode == 'RGB' and image.size == (4, 4) and image.getpixel((0, 0)) == (200, 200, 200)
    with pytest.raises(ScoreError) as e:  # existence/e2.jpg was never written
        Q.open_image(qs[2])
    assert str(tmp_path / 'existence' / 'e2.jpg') in str(e.value) and 'question 2' in str(e.value)
    assert 'mme.tsv row 4' in str(e.value) and 'not found' in str(e.value)
    assert [q['id'] for q in qs] == [it['id'] for it in Q.score_data('mme', str(FIX / 'mme.tsv'))]


def test_mme_without_image_folder_needs_the_image_column():
    with pytest.raises(ScoreError, match=r"mme.tsv \[row 1\]: no 'image' column"):
        load('mme', 'mme.tsv')


def test_gvqa_tsv_prompts(tmp_path):
    doc = load('docvqa', 'docvqa_val.tsv')
    assert [(q['id'], q['text'], q['box_key']) for q in doc] == [('1', 'greeting?' + SHORT, '1'),
                                                                  ('2', 'code?' + SHORT, '2')]
    assert doc[1]['image'] == {'b64': B2}
    ocr = load('ocrvqa', 'ocrvqa_test.tsv')
    assert ocr[0]['text'] == 'Who wrote this book?\nAnswer the question using a single word or phrase.'
    for bench, data, qs in (('docvqa', 'docvqa_val.tsv', doc), ('ocrvqa', 'ocrvqa_test.tsv', ocr)):
        assert [q['id'] for q in qs] == [it['id'] for it in Q.score_data(bench, str(FIX / data))]


def test_docvqa_and_chartqa_json(tmp_path):
    doc = load('docvqa', 'docvqa_val.json', image_folder=tmp_path)
    assert doc[2]['text'] == 'zip?' + SHORT and doc[2]['image'] == {'path': str(tmp_path / 'documents/doc2.png')}
    assert [q['id'] for q in doc] == [it['id'] for it in Q.score_data('docvqa', str(FIX / 'docvqa_val.json'))]
    chart = load('chartqa', 'chartqa_test.json', image_folder=tmp_path)
    assert [q['id'] for q in chart] == ['0', '1', '2', '3', '4', '5'] == [q['box_key'] for q in chart]
    assert chart[1]['text'] == 'What share is blue?' + SHORT
    assert chart[1]['image'] == {'path': str(tmp_path / '1.png')}
    assert [q['id'] for q in chart] == [it['id'] for it in Q.score_data('chartqa', str(FIX / 'chartqa_test.json'))]
    with pytest.raises(ScoreError, match=r'chartqa_test.json \[\[0\]\]: .*image_folder is required'):
        load('chartqa', 'chartqa_test.json')


def test_hallusion_json_text_only_question(tmp_path):
    qs = load('hallusion', 'hallusion.json', image_folder=tmp_path)
    q = by_id(qs)
    assert q['VD_illusion_1_0_0_1']['text'] == 'Is the right circle larger?' + YES_NO
    assert q['VD_illusion_1_0_0_1']['image'] == {'path': str(tmp_path / 'hallusion_bench/VD/illusion/0_0.png')}
    assert q['VS_chart_0_0_0_0']['image'] is None and Q.open_image(q['VS_chart_0_0_0_0']) is None
    assert q['VS_chart_0_0_0_0']['box_key'] == 'VS_chart_0_0_0_0'
    assert [x['id'] for x in qs] == [it['id'] for it in Q.score_data('hallusion', str(FIX / 'hallusion.json'))]


def test_hallusion_tsv_empty_image_is_text_only():
    qs = load('hallusion', 'hallusion.tsv')
    assert [q['image'] for q in qs] == [{'b64': B2}, {'b64': B2}, None]
    assert qs[2]['text'] == 'Was GDP higher in 2020 than in 2019?\nPlease answer the question with yes or no.'
    assert [q['id'] for q in qs] == [it['id'] for it in Q.score_data('hallusion', str(FIX / 'hallusion.tsv'))]


def test_pope_directory_and_single_file(tmp_path):
    qs = load('pope', 'pope', image_folder=tmp_path)
    assert [q['id'] for q in qs][3:5] == ['adversarial/3', 'popular/0']
    assert qs[4]['box_key'] == '0'  # one box file for the three splits, keyed by question_id
    assert qs[0]['text'] == 'Is there a dog in the image?\nPlease answer the question with yes or no.'
    assert qs[1]['image'] == {'path': str(tmp_path / 'COCO_val2014_000000000001.jpg')}
    assert [q['id'] for q in qs] == [it['id'] for it in Q.score_data('pope', str(FIX / 'pope'))]
    single = load('pope', 'pope/coco_pope_random.json', image_folder=tmp_path)
    assert [q['id'] for q in single] == ['0', '1', '2', '3']


def test_gqa_llava_jsonl(tmp_path):
    qs = load('gqa', 'llava_gqa_testdev_balanced.jsonl', image_folder=tmp_path,
              annotations='gqa_testdev_balanced_questions.json')
    assert [(q['id'], q['box_key']) for q in qs] == [('201307251', '201307251'), ('202225914', '202225914')]
    assert qs[0]['text'] == 'Is there a dog?\nAnswer the question using a single word or phrase.'  # verbatim
    assert qs[0]['where'] == f'{FIX / "llava_gqa_testdev_balanced.jsonl"} line 1'
    items = Q.score_data('gqa', str(FIX / 'llava_gqa_testdev_balanced.jsonl'),
                         str(FIX / 'gqa_testdev_balanced_questions.json'))
    assert [q['id'] for q in qs] == [it['id'] for it in items]
    with pytest.raises(ScoreError, match='annotations'):
        Q.score_data('gqa', str(FIX / 'llava_gqa_testdev_balanced.jsonl'))


def test_textvqa_maps_prompts_to_official_question_ids(tmp_path):
    qs = load('textvqa', 'llava_textvqa_val.jsonl', image_folder=tmp_path, annotations='textvqa_val.json')
    assert [q['id'] for q in qs] == ['34602', '34603', '34604', '34605']
    assert [q['box_key'] for q in qs] == ['003a8ae2ef43b901'] * 2 + ['00685bc495504d61'] * 2  # jsonl image id
    assert qs[0]['text'] == ('How many?\nReference OCR token: 2, TWO\n'
                             'Answer the question using a single word or phrase.')  # verbatim
    assert qs[0]['image'] == {'path': str(tmp_path / '003a8ae2ef43b901.jpg')}
    items = Q.score_data('textvqa', str(FIX / 'llava_textvqa_val.jsonl'), str(FIX / 'textvqa_val.json'))
    assert {q['id'] for q in qs} == {it['id'] for it in items}


def test_textvqa_prompt_processor():
    assert Q.textvqa_question('What BRAND?\nReference OCR token: A\nAnswer briefly.') == 'what brand?'
    assert Q.textvqa_question('Reference OCR token: A\nWhat BRAND?\nAnswer briefly.') == 'what brand?'
    assert Q.textvqa_question('What?\nAnswer briefly.') == 'what?'
    assert Q.textvqa_question('OCR tokens: a b Question: Which ONE? Short answer:') == 'which one?'
    assert Q.textvqa_question('one line') is None


def test_textvqa_repeated_question_takes_the_next_official_id(tmp_path):
    ann = {'data': [{'question_id': 7, 'image_id': 'im', 'question': 'what?', 'answers': ['a'] * 10},
                    {'question_id': 9, 'image_id': 'im', 'question': 'What?', 'answers': ['b'] * 10}]}
    (tmp_path / 'ann.json').write_text(json.dumps(ann))
    line = json.dumps({'question_id': 'im', 'image': 'im.jpg', 'text': 'What?' + SHORT})
    (tmp_path / 'q.jsonl').write_text(line + '\n' + line + '\n')
    qs = Q.load_questions('textvqa', str(tmp_path / 'q.jsonl'), str(tmp_path), str(tmp_path / 'ann.json'))
    assert [q['id'] for q in qs] == ['7', '9']
    (tmp_path / 'q.jsonl').write_text((line + '\n') * 3)
    with pytest.raises(ScoreError, match=r'q.jsonl line 3: no further question of image .im. .* matches .what\?.'):
        Q.load_questions('textvqa', str(tmp_path / 'q.jsonl'), str(tmp_path), str(tmp_path / 'ann.json'))


@pytest.mark.parametrize('benchmark', ['vqav2', 'vizwiz', 'llava_bench', 'mmvet'])
def test_llava_jsonl_benchmarks_are_prediction_only(benchmark, tmp_path):
    qs = load(benchmark, 'llava_questions.jsonl', image_folder=tmp_path)
    assert [q['id'] for q in qs] == ['262148000', '262148001', '393225000'] == [q['box_key'] for q in qs]
    assert qs[2]['text'] == 'Describe the image in detail.'
    assert qs[0]['image'] == {'path': str(tmp_path / 'COCO_test2015_000000262148.jpg')}
    assert Q.score_data(benchmark, str(FIX / 'llava_questions.jsonl')) is None


# ---------------------------------------------------------------------------------------------------------------
# errors name the file and the row / line
def test_missing_column_and_cell(tmp_path):
    path = write_tsv(tmp_path / 'a.tsv', ['index', 'A', 'image'], [['1', 'x', B2]])
    with pytest.raises(ScoreError, match=r"a.tsv \[row 1\]: no 'question' column"):
        Q.load_questions('seed', str(path))
    path = write_tsv(tmp_path / 'b.tsv', ['index', 'question', 'A', 'image'], [['1', 'ok', 'x', B2],
                                                                               ['2', '', 'x', B2]])
    with pytest.raises(ScoreError, match=r"b.tsv \[row 3\]: missing 'question'"):
        Q.load_questions('seed', str(path))


def test_bad_image_references(tmp_path):
    path = write_tsv(tmp_path / 'c.tsv', ['index', 'question', 'A', 'image'], [['1', 'q', 'x', B2],
                                                                               ['2', 'q', 'x', '9']])
    with pytest.raises(ScoreError, match=r"c.tsv \[row 3\]: image cell refers to index '9'"):
        Q.load_questions('seed', str(path))
    path = write_tsv(tmp_path / 'd.tsv', ['index', 'question', 'A', 'image'], [['1', 'q', 'x', '2'],
                                                                               ['2', 'q', 'x', '1']])
    with pytest.raises(ScoreError, match=r'd.tsv \[row 2\]: image cell refers to index'):  # a cycle
        Q.load_questions('seed', str(path))
    path = write_tsv(tmp_path / 'e.tsv', ['index', 'question', 'A', 'image'], [['1', 'q', 'x', '']])
    with pytest.raises(ScoreError, match=r'e.tsv \[row 2\]: empty image cell'):
        Q.load_questions('docvqa', str(path))


def test_bad_base64_is_reported_by_open_image(tmp_path):
    path = write_tsv(tmp_path / 'f.tsv', ['index', 'question', 'A', 'image'], [['1', 'q', 'x', B2],
                                                                               ['4', 'q', 'x', 'not%base64!' * 3]])
    qs = Q.load_questions('seed', str(path))
    assert Q.open_image(qs[0]).size == (2, 1)
    with pytest.raises(ScoreError, match=r'f.tsv row 3 \[id 4\]: bad base64 image'):
        Q.open_image(qs[1])


def test_jsonl_and_json_field_errors(tmp_path):
    (tmp_path / 'q.jsonl').write_text('{"question_id": 1, "image": "a.jpg", "text": "t"}\n{"question_id": 2, '
                                      '"text": "t"}\n')
    with pytest.raises(ScoreError, match=r"q.jsonl \[line 2\]: missing field 'image'"):
        Q.load_questions('vqav2', str(tmp_path / 'q.jsonl'), str(tmp_path))
    with pytest.raises(ScoreError, match=r'q.jsonl \[line 1\]: .*image_folder is required'):
        Q.load_questions('mmvet', str(tmp_path / 'q.jsonl'))
    rec = dict(json.loads((FIX / 'hallusion.json').read_text())[0], filename=None)
    (tmp_path / 'hb.json').write_text(json.dumps([rec]))
    with pytest.raises(ScoreError, match=r"hb.json \[\[0\]\]: missing field 'filename'"):
        Q.load_questions('hallusion', str(tmp_path / 'hb.json'), str(tmp_path))


def test_textvqa_errors(tmp_path):
    with pytest.raises(ScoreError, match='needs annotations'):
        load('textvqa', 'llava_textvqa_val.jsonl', image_folder=tmp_path)
    (tmp_path / 'q.jsonl').write_text(json.dumps({'question_id': '003a8ae2ef43b901', 'image': 'x.jpg',
                                                  'text': 'what colour?' + SHORT}) + '\n')
    with pytest.raises(ScoreError, match=r"q.jsonl line 1: no question of image '003a8ae2ef43b901' .*'what colour\?'"):
        Q.load_questions('textvqa', str(tmp_path / 'q.jsonl'), str(tmp_path), str(FIX / 'textvqa_val.json'))
    (tmp_path / 'q.jsonl').write_text(json.dumps({'question_id': 'a', 'image': 'x.jpg', 'text': 'one'}) + '\n')
    with pytest.raises(ScoreError, match=r'q.jsonl line 1: cannot find the question'):
        Q.load_questions('textvqa', str(tmp_path / 'q.jsonl'), str(tmp_path), str(FIX / 'textvqa_val.json'))


# ---------------------------------------------------------------------------------------------------------------
# submission files
PREDS = {'262148000': 'Two dogs, playing.', '262148001': 'The Skateboard!', '393225000': 'red-and-white'}
# EvalAI: ',' dropped, '.' not before a digit dropped, two -> 2 | '!' -> space, article dropped |
# '-' between letters -> space
NORMALISED = ['2 dogs playing', 'skateboard', 'red and white']


def test_vqav2_submission(tmp_path):
    qs = load('vqav2', 'llava_questions.jsonl', image_folder=tmp_path)
    (path,) = SUB.write_outputs('vqav2', qs, PREDS, str(tmp_path / 'out'), 'vqa')
    assert path == str(tmp_path / 'out' / 'vqa_submission.json')
    assert json.loads(Path(path).read_text()) == [
        {'question_id': 262148000, 'answer': NORMALISED[0]}, {'question_id': 262148001, 'answer': NORMALISED[1]},
        {'question_id': 393225000, 'answer': NORMALISED[2]}]
    # the full test2015 list decides the order, and its questions without a prediction get ''
    (tmp_path / 'test2015.jsonl').write_text(''.join(json.dumps({'question_id': i, 'text': 't'}) + '\n'
                                                     for i in (393225000, 5, 262148000)))
    (path,) = SUB.write_outputs('vqav2', qs, PREDS, str(tmp_path), 'v', test_questions=str(tmp_path /
                                                                                           'test2015.jsonl'))
    assert json.loads(Path(path).read_text()) == [{'question_id': 393225000, 'answer': 'red and white'},
                                                  {'question_id': 5, 'answer': ''},
                                                  {'question_id': 262148000, 'answer': '2 dogs playing'}]


def test_vizwiz_submission(tmp_path):
    qs = load('vizwiz', 'llava_questions.jsonl', image_folder=tmp_path)
    preds = dict(PREDS, **{'393225000': 'Unanswerable.'})
    (path,) = SUB.write_outputs('vizwiz', qs, preds, str(tmp_path), 'vw')
    assert json.loads(Path(path).read_text()) == [
        {'image': 'COCO_test2015_000000262148.jpg', 'answer': '2 dogs playing'},
        {'image': 'COCO_test2015_000000262148.jpg', 'answer': 'skateboard'},
        {'image': 'COCO_test2015_000000393225.jpg', 'answer': 'unanswerable'}]
    with pytest.raises(ScoreError, match=r'llava_questions.jsonl line 3 \[id 393225000\]: no prediction' ):
        SUB.write_outputs('vizwiz', qs, {k: v for k, v in PREDS.items() if k != '393225000'}, str(tmp_path), 'vw')


def test_mmvet_submission_keeps_raw_text(tmp_path):
    qs = load('mmvet', 'llava_questions.jsonl', image_folder=tmp_path)
    (path,) = SUB.write_outputs('mmvet', qs, PREDS, str(tmp_path), 'mmvet')
    text = Path(path).read_text()
    assert json.loads(text) == {'v1_262148000': 'Two dogs, playing.', 'v1_262148001': 'The Skateboard!',
                                'v1_393225000': 'red-and-white'}
    assert text.startswith('{\n  "v1_262148000"')  # indent=2 as convert_mmvet_for_eval.py


def test_llava_bench_answers(tmp_path):
    qs = load('llava_bench', 'llava_questions.jsonl', image_folder=tmp_path)
    (path,) = SUB.write_outputs('llava_bench', qs, PREDS, str(tmp_path), 'llava_w', model_id='mg-llava-7b')
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert path.endswith('llava_w_answers.jsonl') and len(rows) == 3
    assert {k: v for k, v in rows[2].items() if k != 'answer_id'} == {
        'question_id': 393225000, 'prompt': 'Describe the image in detail.', 'text': 'red-and-white',
        'model_id': 'mg-llava-7b', 'metadata': {}}
    assert len({r['answer_id'] for r in rows}) == 3 and all(isinstance(r['answer_id'], str) for r in rows)


def test_gqa_submission(tmp_path):
    qs = load('gqa', 'llava_gqa_testdev_balanced.jsonl', image_folder=tmp_path)
    (path,) = SUB.write_outputs('gqa', qs, {'201307251': ' Yes.', '202225914': 'The Table..'}, str(tmp_path), 'g')
    # strip, rstrip('.') (all trailing periods), lower; questionId stays the string of the official files
    assert json.loads(Path(path).read_text()) == [{'questionId': '201307251', 'prediction': 'yes'},
                                                  {'questionId': '202225914', 'prediction': 'the table'}]


def test_scored_benchmarks_write_nothing_extra(tmp_path):
    qs = load('mmbench', 'mmbench_dev.tsv')
    assert SUB.write_outputs('mmbench', qs, {q['id']: 'A' for q in qs}, str(tmp_path), 'mmb') == []
    assert os.listdir(tmp_path) == []
