"""The package's import layering and the absence of import cycles, read from the source (nothing is imported).

    tools/, timing/  ->  demo  ->  evaluation, datagen  ->  engine, inference, detection, distill  ->  models  ->  data  ->  base
    base = errors, templates, compat, cfg, configs

A module may import its own layer or lower ones, never a higher one. Function-level imports count: a cycle
hidden inside a function is still a cycle.
"""
import ast
import os.path as osp
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / 'mg_llava'
LAYERS = {'errors': 0, 'templates': 0, 'compat': 0, 'cfg': 0, 'configs': 0, '': 0,
          'data': 1, 'models': 2, 'engine': 3, 'inference': 3, 'detection': 3, 'distill': 3, 'evaluation': 4, 'datagen': 4,
          'demo': 5}


def module_name(path):
    rel = path.relative_to(PKG.parent).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def modules():
    return {module_name(p): p for p in PKG.rglob('*.py') if 'configs' not in p.relative_to(PKG).parts}


def imports_of(name, path, known):
    """mg_llava modules imported anywhere in the file (a `from pkg import sub` names the submodule)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == '__init__.py'
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith('mg_llava')}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split('.') if is_pkg else name.split('.')[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = '.'.join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ''
            if not mod.startswith('mg_llava'):
                continue
            subs = [f'{mod}.{a.name}' for a in node.names if f'{mod}.{a.name}' in known]
            out |= set(subs) if subs and len(subs) == len(node.names) else {mod} | set(subs)
    return {m for m in out if m in known and m != name}


def layer(name):
    parts = name.split('.')
    return LAYERS[parts[1] if len(parts) > 1 else '']


def graph():
    mods = modules()
    return {name: imports_of(name, path, mods) for name, path in mods.items()}


def test_every_subpackage_has_a_layer():
    assert {m.split('.')[1] for m in modules() if '.' in m} <= set(LAYERS)


def test_no_module_imports_a_higher_layer():
    bad = [f'{a} (layer {layer(a)}) imports {b} (layer {layer(b)})'
           for a, deps in graph().items() for b in deps if layer(b) > layer(a)]
    assert bad == []


def test_no_import_cycle():
    g = graph()
    # a package's __init__ importing its own submodules is how packages work: drop package -> own child edges
    g = {a: {b for b in deps if not b.startswith(a + '.')} for a, deps in g.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 'open'
        for nxt in sorted(g[node]):
            if state.get(nxt) == 'open':
                cycles.append(' -> '.join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 'done'

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_scorer_and_the_error_family_stay_torch_free():
    """The offline scorer runs without torch: its imports stay in torch-free modules."""
    for name in ('mg_llava.errors',):
        src = (PKG / osp.join(*name.split('.')[1:])).with_suffix('.py').read_text()
        assert 'import torch' not in src
