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


def write_config(path, assets_root, world_root):
    """The demo pretrain config with its `assets` / `data_root` lines pointed at the given dirs."""
    text, n = re.subn(r"^assets = .*$", f"assets = {str(assets_root) + '/'!r}", DEMO_CONFIG.read_text(), flags=re.M)
    text, m = re.subn(r"^data_root = .*$", f"data_root = {str(world_root) + '/'!r}", text, flags=re.M)
    assert n == m == 1, 'the demo config no longer has one `assets =` and one `data_root =` line'
    path.write_text(text)
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
    assert re.search(r'max total sequence length \(text \+ 16 image \+ object tokens\): \d+', out)


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
