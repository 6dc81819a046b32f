"""tools/check_dataset.py end to end: the demo pretrain config pointed at the tiny world, clean and broken."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools' / 'check_dataset.py'
DEMO_CONFIG = REPO / 'configs' / 'demo' / 'mg_llava_demo_pretrain.py'


def write_config(path, assets_root, world_root, sizes=(112, 14, 256)):
    """A child of the demo pretrain config pointing the model at `assets_root` and the data at `world_root`, with
    the vision spec's sizes from `sizes` = (image_size, patch (the tower's, not a setting), image_size_aux)
    (default: those of the `tiny_assets` towers: CLIP 112 px / patch 14 -> 8x8 tokens, ConvNeXt at 256 px)."""
    a, w = f'{assets_root}/', f'{world_root}/'
    path.write_text(f"""from mmengine.config import read_base
with read_base():
    from mg_llava.configs.demo.mg_llava_demo_pretrain import *  # noqa: F401,F403
model.update(llm={a + 'llm'!r}, tokenizer={a + 'tokenizer'!r}, visual_encoder={a + 'clip_vit'!r},
             visual_encoder_aux={a + 'convnext'!r}, vision_spec=dict(image_size={sizes[0]}, image_size_aux={sizes[2]}))
train_dataloader.dataset.update(data_path={w + 'pretrain.json'!r}, image_folder={w + 'images'!r},
                                box_json_path={w + 'boxes.json'!r})
""")
    return path


def check(config, *args):
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    proc = subprocess.run([sys.executable, str(TOOL), str(config), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout


def category(out, name):
    """(count, example lines) of a reported category."""
    m = re.search(rf'^  \[(?:error|warning)\] {re.escape(name)}: (\d+) sample\(s\)\n((?:      .*\n)*)', out, re.M)
    assert m, f'category {name!r} not reported in:\n{out}'
    return int(m[1]), m[2]


def test_clean_world_passes(tmp_path, tiny_world, tiny_assets):
    rc, out = check(write_config(tmp_path / 'cfg.py', tiny_assets['root'], tiny_world['root']))
    assert rc == 0, out
    assert out.rstrip().endswith('OK') and '[error]' not in out
    assert 'samples: 12 in' in out and 'image samples: 12, text-only: 0' in out
    assert re.search(r'max total sequence length \(text \+ 64 image \+ object tokens\): \d+', out)


def test_broken_world_fails_with_every_problem(tmp_path, tiny_world, tiny_assets):
    world = Path(shutil.copytree(tiny_world['root'], tmp_path / 'world'))
    records = json.loads((world / 'pretrain.json').read_text())
    boxes = {b['id']: b for b in json.loads((world / 'boxes.json').read_text())}
    ids = [r['id'] for r in records]
    (world / 'images' / records[1]['image']).unlink()                          # missing image
    (world / 'images' / records[2]['image']).write_bytes(b'not a png' * 50)   # corrupt image
    x1, y1, x2, y2 = boxes[ids[3]]['boxes'][0]
    boxes[ids[3]]['boxes'][0] = [x2, y1, x1, y2]                               # degenerate box (x2 < x1)
    b = boxes[ids[4]]
    b['boxes'].append(b['boxes'][0]), b['labels'].append(b['labels'][0]), b['scores'].append(0.01)  # NMS: warning
    del records[5]['id']                                                       # bad sample
    (world / 'pretrain.json').write_text(json.dumps(records))
    (world / 'boxes.json').write_text(json.dumps(list(boxes.values())))

    rc, out = check(write_config(tmp_path / 'cfg.py', tiny_assets['root'], world), '--max-samples', '100')
    assert rc == 1, out
    assert out.rstrip().endswith('FAILED: 4 errors'), out          # the NMS warning does not count
    expected = {'missing image file': (ids[1], records[1]['image']),
                'unreadable image file': (ids[2], records[2]['image']),
                'degenerate boxes (x2<x1, y2<y1 or non-finite)': (ids[3], 'boxes.json'),
                'sample needs "id" and "conversations"': ("'#5'", 'pretrain.json'),
                'boxes suppressed by NMS': (ids[4], 'boxes.json')}
    for name, (example_id, example_file) in expected.items():
        count, examples = category(out, name)
        assert count == 1 and example_id in examples and example_file in examples, (name, examples)
    assert 'samples: 12 in' in out and '1 dropped at build time' in out


def test_duplicate_box_ids_fail_naming_both_entries(tmp_path, tiny_world, tiny_assets):
    world = Path(shutil.copytree(tiny_world['root'], tmp_path / 'world'))
    boxes = json.loads((world / 'boxes.json').read_text())
    dup = json.loads(json.dumps(boxes[3]))
    dup['boxes'], dup['scores'], dup['labels'] = [], [], []   # a later, different entry that would silently win
    boxes.append(dup)
    (world / 'boxes.json').write_text(json.dumps(boxes))

    rc, out = check(write_config(tmp_path / 'cfg.py', tiny_assets['root'], world))
    assert rc == 1, out
    count, examples = category(out, 'duplicated box id')
    assert count == 1 and repr(boxes[3]['id']) in examples and 'boxes.json' in examples, examples
    assert f'entries #3 and #{len(boxes) - 1}' in examples, examples
    assert 'missing box entry' not in out                  # the duplicated id is reported once
    assert out.rstrip().endswith('FAILED: 1 errors'), out


def test_vision_spec_checked_against_the_towers_before_reading_data(tmp_path, tiny_world, tiny_assets):
    # the demo's own sizes (CLIP 56 px) against the tiny_assets CLIP tower (112 px): training would crash at step 1
    world = tmp_path / 'no_world'                         # nothing to read: the check must come first
    rc, out = check(write_config(tmp_path / 'cfg.py', tiny_assets['root'], world, sizes=(56, 14, 128)))
    assert rc == 1, out
    assert f"vision_spec.image_size=56 but the CLIP tower at {tiny_assets['root']}" in out, out
    assert 'takes 112 px images (patch 14 -> 64 tokens)' in out and 'num_image_tokens=64' in out, out
    assert 'cannot build the dataset' not in out and out.rstrip().endswith('FAILED: 1 errors'), out

    # token count alone, and a high-res side that is not a multiple of the ConvNeXt stride
    rc, out = check(write_config(tmp_path / 'cfg.py', tiny_assets['root'], world, sizes=(112, 14, 250)),
                    '--cfg-options', 'train_dataloader.dataset.num_image_tokens=16')
    assert rc == 1, out
    assert 'num_image_tokens=16 but the CLIP tower' in out and 'gives 64 tokens per image' in out, out
    assert 'vision_spec.image_size_aux=250 is not a multiple of the ConvNeXt total stride 32' in out, out
    assert out.rstrip().endswith('FAILED: 2 errors'), out

    # without fusion resampling the last ConvNeXt grid (128 / 32 = 4) must equal the ViT grid (112 / 14 = 8)
    rc, out = check(write_config(tmp_path / 'cfg.py', tiny_assets['root'], world, sizes=(112, 14, 128)),
                    '--cfg-options', 'model.fusion_resample=False')
    assert rc == 1 and 'model.fusion_resample=False' in out and 'image_size_aux=256' in out, out
    # ...which the default (resampling) fusion accepts: the check passes and the (missing) data is read next
    rc, out = check(write_config(tmp_path / 'cfg.py', tiny_assets['root'], world, sizes=(112, 14, 128)))
    assert rc == 1 and 'vision spec vs towers' not in out and 'cannot build the dataset' in out, out


def test_missing_evaluation_file_is_reported(tmp_path, tiny_world, tiny_assets):
    """A config's `evaluation` entries (tools/test.py) are checked too: a missing benchmark file fails the
    validation before any training; the good entry is not reported."""
    cfg = write_config(tmp_path / 'cfg.py', tiny_assets['root'], tiny_world['root'])
    missing = str(tmp_path / 'gone' / 'shapes_short_gt.json')
    benchmarks = [dict(name='shapes_mc', benchmark='mmbench', data=tiny_world['bench_mc']),
                  dict(name='shapes_short', benchmark='gqa', data=tiny_world['bench_short'], annotations=missing,
                       image_folder=tiny_world['images'])]
    cfg.write_text(cfg.read_text() + f'\nevaluation = dict(benchmarks={benchmarks!r})\n')
    rc, out = check(cfg)
    assert rc == 1, out
    assert out.rstrip().endswith('FAILED: 1 errors'), out
    count, examples = category(out, 'evaluation entry: missing or unreadable file')
    assert count == 1 and "id 'shapes_short' in " + missing in examples and '`annotations`: file not found' in examples
    assert 'shapes_mc' not in out
