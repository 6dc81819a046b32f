"""Bad input to MGLLaVADataset: a clear DataError naming the file and the sample, or (on_bad_sample='skip')
a counted skip. Each case starts from good samples of the tiny world and breaks one thing."""
import copy
import json
import shutil

import pytest
from xtuner.utils import IGNORE_INDEX, PROMPT_TEMPLATE

from mg_llava.data import DataError, MGLLaVADataset, load_box_index
from mg_llava.data.dataset import tokenize_conversation

TEMPLATE = PROMPT_TEMPLATE.vicuna
SPEC = dict(image_size=112, image_size_aux=256)


@pytest.fixture(scope='module')
def tokenizer(tiny_assets):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_assets['tokenizer'])


@pytest.fixture(scope='module')
def good(tiny_world):
    """First 4 pretrain records of the tiny world and their box entries (fresh copies per use)."""
    records = json.load(open(tiny_world['pretrain']))[:4]
    boxes = {b['id']: b for b in json.load(open(tiny_world['boxes']))}
    return records, [boxes[r['id']] for r in records]


@pytest.fixture
def data(tmp_path, tiny_world, good, tokenizer):
    """data(records=None, boxes=None, name='data.json', raw=None, **dataset_kw) -> (dataset, data_path, box_path).
    Files go to tmp_path; images/ holds copies of the records' world images."""
    images = tmp_path / 'images'
    images.mkdir()
    for r in good[0]:
        shutil.copy(f'{tiny_world["images"]}/{r["image"]}', images / r['image'])

    def make(records=None, boxes=None, name='data.json', raw=None, **kw):
        data_path, box_path = tmp_path / name, tmp_path / 'boxes.json'
        records = copy.deepcopy(good[0]) if records is None else records
        data_path.write_text(raw if raw is not None else json.dumps(records))
        box_path.write_text(json.dumps(copy.deepcopy(good[1]) if boxes is None else boxes))
        kw = dict(dict(max_length=256, vision_spec=SPEC, num_image_tokens=64), **kw)
        ds = MGLLaVADataset(str(data_path), str(images), tokenizer, TEMPLATE, box_json_path=str(box_path), **kw)
        return ds, str(data_path), str(box_path)
    return make


def expect(exc_info, *parts):
    msg = str(exc_info.value)
    for p in parts:
        assert p in msg, f'{p!r} not in {msg!r}'
    return msg


# ------------------------------------------------------------------------------------------ data files

def test_malformed_jsonl_line_names_line(data, good):
    lines = [json.dumps(r) for r in good[0]]
    lines[2] = lines[2][:-5]   # truncated object
    with pytest.raises(DataError) as e:
        data(name='data.jsonl', raw='\n'.join(lines) + '\n')
    expect(e, 'data.jsonl', 'line 3', 'malformed JSON')


def test_json_not_a_list(data, good):
    with pytest.raises(DataError) as e:
        data(raw=json.dumps(good[0][0]))
    expect(e, 'data.json', 'expected a JSON list')


def test_sample_without_id(data, good):
    records = copy.deepcopy(good[0])
    del records[1]['id']
    with pytest.raises(DataError) as e:
        data(records)
    expect(e, 'data.json', "'#1'", 'needs "id"')


def test_box_json_lengths_differ(data, good):
    boxes = copy.deepcopy(good[1])
    boxes[2]['scores'].append(0.5)
    with pytest.raises(DataError) as e:
        data(boxes=boxes)
    expect(e, 'boxes.json', repr(boxes[2]['id']), 'differ in length')


def test_duplicate_box_id_names_both_entries(data, good):
    boxes = copy.deepcopy(good[1])
    boxes.append(dict(copy.deepcopy(boxes[1]), boxes=[], scores=[], labels=[]))   # would silently replace #1
    with pytest.raises(DataError) as e:
        data(boxes=boxes)
    expect(e, 'boxes.json', repr(boxes[1]['id']), 'duplicated box id', 'entries #1 and #4', "on_bad_sample='skip'")
    # skip mode: the sample whose boxes are ambiguous is skipped (counted), the others load
    ds, _, _ = data(boxes=boxes, on_bad_sample='skip')
    assert ds.box_duplicates == {str(boxes[1]['id']): [1, 4]}
    assert ds[1]['id'] == good[0][2]['id'] and ds.skipped == {'duplicated box id': 1}


def test_duplicate_box_id_in_jsonl_and_across_int_and_str(tmp_path, good):
    entries = copy.deepcopy(good[1][:3])
    entries[2]['id'] = entries[0]['id']
    path = tmp_path / 'boxes.jsonl'
    path.write_text('\n\n'.join(json.dumps(x) for x in entries) + '\n')   # blank lines do not count as entries
    with pytest.raises(DataError) as e:
        load_box_index(str(path))
    expect(e, 'boxes.jsonl', repr(str(entries[0]['id'])), 'entries #0 and #2')
    ints = [dict(entries[0], id=7), dict(entries[1], id='7')]     # ids are matched as str(id)
    (tmp_path / 'boxes.json').write_text(json.dumps(ints))
    with pytest.raises(DataError, match='entries #0 and #1'):
        load_box_index(str(tmp_path / 'boxes.json'))


# ------------------------------------------------------------------------------------------ text

def test_image_token_cut_by_max_length(data, good):
    with pytest.raises(DataError) as e:
        data(max_length=2)
    expect(e, 'data.json', repr(good[0][0]['id']), '<image> token was cut by max_length', '4 bad samples')


def test_answer_cut_by_max_length(data, good, tokenizer):
    records = copy.deepcopy(good[0])
    # the shortest max_length that keeps <image> but cuts every answer token: the first supervised position
    starts = [tokenize_conversation(r, tokenizer, TEMPLATE, 256)['labels'] for r in records]
    cut = min(next(i for i, x in enumerate(lab) if x != IGNORE_INDEX) for lab in starts)
    with pytest.raises(DataError) as e:
        data(max_length=cut)
    expect(e, 'data.json', repr(records[0]['id']), 'no supervised token')


def test_text_only_sample_without_answer(data, good):
    records = copy.deepcopy(good[0])
    records[2] = {'id': 'txt_q', 'conversations': [{'from': 'human', 'value': 'What shapes can appear?'}]}
    with pytest.raises(DataError) as e:
        data(records)
    expect(e, 'data.json', "'txt_q'", 'no supervised token')


def test_image_sample_without_answer_names_the_cause(data, good):
    records = copy.deepcopy(good[0])
    records[2]['conversations'] = records[2]['conversations'][:1]
    with pytest.raises(DataError) as e:
        data(records)
    msg = expect(e, 'data.json', repr(records[2]['id']))
    assert 'max_length' not in msg


# ------------------------------------------------------------------------------------------ images and boxes

def test_missing_image(data, good):
    records = copy.deepcopy(good[0])
    records[1]['image'] = 'nope.png'
    ds, _, _ = data(records)
    with pytest.raises(DataError) as e:
        ds[1]
    expect(e, 'data.json', repr(records[1]['id']), 'nope.png', 'file not found')


def test_corrupt_image(data, good, tmp_path):
    (tmp_path / 'images' / 'garbage.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4)
    records = copy.deepcopy(good[0])
    records[1]['image'] = 'garbage.png'
    ds, _, _ = data(records)
    with pytest.raises(DataError) as e:
        ds[1]
    expect(e, 'data.json', repr(records[1]['id']), 'garbage.png', 'cannot load image')


def test_missing_box_entry(data, good):
    ds, _, _ = data(boxes=[b for b in good[1] if b['id'] != good[0][2]['id']])
    ds[1]
    with pytest.raises(DataError) as e:
        ds[2]
    expect(e, 'boxes.json', repr(good[0][2]['id']), 'no box entry')


@pytest.mark.parametrize('kind', ['degenerate', 'out-of-frame'])
def test_bad_box(data, good, kind):
    boxes = copy.deepcopy(good[1])
    x1, y1, x2, y2 = boxes[0]['boxes'][0]
    boxes[0]['boxes'][0] = [x2, y1, x1, y2] if kind == 'degenerate' else [5000, 5000, 5010, 5010]
    n = len(boxes[0]['boxes'])
    ds, _, _ = data(boxes=boxes)
    with pytest.raises(DataError) as e:
        ds[0]
    expect(e, 'boxes.json', repr(good[0][0]['id']), kind)
    # skip mode: the bad box is dropped (and counted), the sample is kept
    ds, _, _ = data(boxes=boxes, on_bad_sample='skip')
    sample = ds[0]
    assert sample['id'] == good[0][0]['id'] and len(sample['boxes']) == max(1, n - 1)
    assert ds.skipped == {'bad boxes dropped': 1}


# ------------------------------------------------------------------------------------------ skip mode

def test_skip_mode_counts_and_moves_on(data, good):
    records = copy.deepcopy(good[0])
    del records[0]['id']                                   # text-level: dropped at build
    records.append({'id': 'txt_q', 'conversations': [{'from': 'human', 'value': 'Hello!'}]})  # no answer
    records[2]['image'] = 'nope.png'                       # image-level: skipped at load
    ds, _, _ = data(records, on_bad_sample='skip')
    assert len(ds) == 3 and list(ds.text['id']) == [r['id'] for r in records[1:4]]
    assert ds.skipped == {'sample needs "id" and "conversations"': 1,
                          'no supervised token: the conversation has no "gpt" answer turn': 1}
    assert [sid for sid, _ in ds.problems] == ['#0', 'txt_q']
    bad = list(ds.text['id']).index(records[2]['id'])
    sample = ds[bad]
    assert sample['id'] == records[3]['id']                # the next good sample
    assert sum(ds.skipped.values()) == 3
    assert ds[bad + 1]['id'] == records[3]['id'] and sum(ds.skipped.values()) == 3


def test_on_bad_sample_is_validated(data):
    with pytest.raises(ValueError, match='on_bad_sample'):
        data(on_bad_sample='ignore')


# ------------------------------------------------------------------------------------------ messages

def test_bad_sample_errors_name_the_users_switch(data, good):
    """Every bad-sample error says how to skip: the dataset's on_bad_sample, not an internal argument."""
    switch = ("on_bad_sample='skip'", 'train_dataloader.dataset.on_bad_sample=skip')
    boxes = copy.deepcopy(good[1])
    boxes[0]['boxes'][0] = [5000, 5000, 5010, 5010]
    ds, _, _ = data(boxes=boxes)
    with pytest.raises(DataError) as e:
        ds[0]
    assert 'skip_bad' not in expect(e, 'boxes.json', 'out-of-frame', *switch)
    records = copy.deepcopy(good[0])
    records[1]['image'] = 'nope.png'
    ds, _, _ = data(records)
    with pytest.raises(DataError) as e:
        ds[1]
    expect(e, 'nope.png', *switch)
    with pytest.raises(DataError) as e:
        data(max_length=2)
    expect(e, '<image> token was cut', *switch)
