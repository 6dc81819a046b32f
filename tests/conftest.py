"""Shared session fixtures: a tiny generated shapes world and tiny offline assets (tokenizer + models).

Both are built once per test session under pytest's tmp dir. Treat them as read-only: a test that needs
to break or edit data copies what it changes into its own tmp_path.
"""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # before anything imports transformers
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

import pytest  # noqa: E402


@pytest.fixture(scope='session')
def tiny_world(tmp_path_factory):
    """generate_world(num_train=12, num_heldout=2) -> {'root', 'images', 'pretrain', 'sft', 'boxes',
    'heldout', 'world'}: paths (str) of the world dir and of each file it holds."""
    from mg_llava.demo.world import generate_world
    root = tmp_path_factory.mktemp('tiny_world')
    return {'root': str(root), **generate_world(root, num_train=12, num_heldout=2)}


@pytest.fixture(scope='session')
def tiny_assets(tmp_path_factory, tiny_world):
    """build_tiny_assets (vocabulary covering tiny_world) -> {'root', 'tokenizer', 'llm', 'clip_vit',
    'convnext'}: paths (str) loadable with from_pretrained / the ConvNeXt tower."""
    from mg_llava.demo.tiny_assets import build_tiny_assets
    root = tmp_path_factory.mktemp('tiny_assets')
    return build_tiny_assets(root, world_dir=tiny_world['root'])


@pytest.fixture(scope='session')
def sigkill_after_checkpoint():
    """kill(proc, work, name) -> waits until `work/name` and `work/last_checkpoint` exist while the background
    training `proc` (started with start_new_session=True) still runs, then SIGKILLs its process group."""
    import signal
    import time

    def kill(proc, work, name, timeout=600):
        deadline = time.time() + timeout
        while not (work / name).exists() or not (work / 'last_checkpoint').exists():
            assert proc.poll() is None and time.time() < deadline, 'training ended before the checkpoint'
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return kill


@pytest.fixture
def single_thread():
    """torch on one thread for the test (one float reduction order), restored after."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='session')
def interrupt_at():
    """interrupt_at(fn, n) -> fn that raises KeyboardInterrupt on its n-th call: a run killed mid-way (resume tests)."""
    def wrap(fn, n):
        calls = {'n': 0}

        def wrapped(*a, **k):
            calls['n'] += 1
            if calls['n'] == n:
                raise KeyboardInterrupt
            return fn(*a, **k)
        return wrapped
    return wrap


@pytest.fixture(scope='module')
def random_model(tiny_assets):
    """build_random_model(tiny_assets) in eval mode, one per test module (tests may patch it: module scope)."""
    from mg_llava.demo.tiny_assets import build_random_model
    return build_random_model(tiny_assets).eval()


@pytest.fixture(scope='session')
def load_tool():
    """load_tool('generate_data') -> the module tools/generate_data.py (the tools folder is not a package)."""
    import importlib.util
    tools = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools')

    def load(name):
        spec = importlib.util.spec_from_file_location(f'{name}_tool', os.path.join(tools, f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope='module')
def random_export(random_model, tmp_path_factory):
    """random_model saved as an export folder (fp32; save_pretrained), one per test module."""
    out = tmp_path_factory.mktemp('random_export') / 'export'
    random_model.save_pretrained(str(out), fp32=True)
    return str(out)
