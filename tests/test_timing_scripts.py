"""timing/train_step.py: the tiny CPU run goes through the same code path as workloads A/B."""
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / 'timing' / 'train_step.py'


def run_bench(*extra, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
    proc = subprocess.run([sys.executable, str(SCRIPT), *extra], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=SCRIPT.parents[1])
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines], proc.stderr


def check_result(r, workload):
    assert r['workload'] == workload
    assert r['ms_per_step'] > 0 and len(r['step_ms']) >= 1 and all(t > 0 for t in r['step_ms'])
    assert r['ms_per_step'] == pytest.approx(statistics.median(r['step_ms']), abs=0.02)
    assert math.isfinite(r['loss_first']) and math.isfinite(r['loss_last'])
    assert r['seq_len'] == r['text_tokens'] + r['image_tokens'] + r['boxes_per_sample']
    assert r['samples_per_s'] == pytest.approx(r['batch_size'] / (r['ms_per_step'] / 1e3), rel=1e-2)
    assert r['tokens_per_s'] == pytest.approx(r['samples_per_s'] * r['seq_len'], rel=1e-2)
    assert r['supervised_tokens_per_s'] == pytest.approx(r['samples_per_s'] * r['supervised_per_sample'], rel=1e-2)
    assert r['peak_mem_gib'] > 0
    assert all(v > 0 for v in r['model_tflop_per_step'].values())


def test_tiny_train_step_emits_one_sane_json_line():
    results, _ = run_bench('--tiny')
    assert len(results) == 1, 'stdout must hold exactly one JSON line'
    r = results[0]
    check_result(r, 'tiny')
    assert (r['batch_size'], r['text_tokens'], r['image_tokens'], r['boxes_per_sample']) == (2, 40, 16, 3)
    assert r['seq_len'] == 59 and len(r['step_ms']) == 2
    assert r['upstream_samples_per_s'] is None and r['speedup_vs_upstream'] is None
    assert r['device'] == 'cpu' and r['mfu'] is None and r['liger'] is False
    assert r['llm_trained'] is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_workload_b_short_run_on_gpu():
    results, _ = run_bench('--workload', 'B', '--batch-size', '2', '--warmup', '1', '--steps', '2', timeout=600)
    r = results[0]
    check_result(r, 'B')
    assert r['seq_len'] == 1206 and r['image_tokens'] == 576 and r['batch_size'] == 2
    assert 0 < r['mfu'] < 1 and r['peak_tflops'] == 989.0


def test_length_mix_tiny_packs_the_same_samples_with_little_padding():
    """timing/length_mix.py --tiny: padded, grouped and packed train on the same samples; packing's useful-token
    fraction is near 1 and far above padded random batches (speed ratios are for docs/performance.md)."""
    script = SCRIPT.parent / 'length_mix.py'
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
    proc = subprocess.run([sys.executable, str(script), '--tiny', '--samples', '64', '--threads', '1'],
                          capture_output=True, text=True, env=env, timeout=300, cwd=SCRIPT.parents[1])
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = {r['mode']: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(rows) == {'padded', 'grouped', 'packed'}
    assert all(r['samples'] == 64 and r['tokens_per_s'] > 0 and r['device'] == 'cpu' for r in rows.values())
    assert rows['packed']['steps'] < rows['padded']['steps']
    assert rows['packed']['useful_token_fraction'] > 0.9 > rows['padded']['useful_token_fraction']
    assert rows['packed']['useful_fraction_vs_padded'] > 1.5


def test_gpu_check_script_plumbing_in_smoke_mode(tmp_path):
    """timing/gpu_check.sh with SMOKE=1 (tiny sizes, CPU): every check writes its JSON line, none an error."""
    env = dict(os.environ, SMOKE='1', OUT=str(tmp_path), PYTHON=sys.executable,
               PATH=f'{Path(sys.executable).parent}:{os.environ["PATH"]}')
    proc = subprocess.run(['bash', str(SCRIPT.parent / 'gpu_check.sh')], capture_output=True, text=True, env=env,
                          timeout=600, cwd=SCRIPT.parents[1])
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(ln) for ln in (tmp_path / 'gpu_check.jsonl').read_text().splitlines()]
    assert {r['check'] for r in lines} == {'train_step', 'length_mix', 'eval_generate'}
    assert not [r for r in lines if 'error' in r], lines


def test_dataloader_timing_tiny_runs_the_real_preprocessing():
    """timing/dataloader.py --tiny: real vision sizes (336 + 768 px, 30 boxes, 576 image tokens) through
    MGLLaVADataset and the collate; one JSON line."""
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
    proc = subprocess.run([sys.executable, str(SCRIPT.parent / 'dataloader.py'), '--tiny'], capture_output=True,
                          text=True, env=env, timeout=300, cwd=SCRIPT.parents[1])
    assert proc.returncode == 0, proc.stderr[-4000:]
    (r,) = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert r['images'] == 8 and r['samples_per_s_per_process'] > 0 and r['seq_len'] > 576
