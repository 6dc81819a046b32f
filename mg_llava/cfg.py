"""List and copy the shipped configs (as `xtuner list-cfg` / `copy-cfg` do for xtuner's own).

    python -m mg_llava.cfg list [-p PATTERN]        names of the shipped configs, e.g. mg_llava/vicuna7b_sft
    python -m mg_llava.cfg copy NAME DEST_DIR       a copy to edit (relative `read_base` imports made absolute)

A config in your own folder can also inherit a shipped one directly (the package ships them as
`mg_llava/configs`, like xtuner's `xtuner/configs`):

    from mmengine.config import read_base
    with read_base():
        from mg_llava.configs.mg_llava.vicuna7b_sft import *
Stdlib only: no torch import.
"""
import argparse
import os
import os.path as osp
import re
import shutil
import sys

CONFIG_ROOT = osp.join(osp.dirname(osp.abspath(__file__)), 'configs')


def list_configs(pattern=None):
    """Shipped config names ('<folder>/<stem>', bases excluded), sorted, optionally filtered by substring."""
    names = []
    for root, _, files in os.walk(CONFIG_ROOT, followlinks=True):
        rel = osp.relpath(root, CONFIG_ROOT)
        if rel.split(os.sep)[0].startswith('_'):
            continue
        names += [osp.join(rel, f[:-3]).replace(os.sep, '/') for f in files if f.endswith('.py')]
    return sorted(n for n in names if not pattern or pattern.lower() in n.lower())


def config_path(name):
    path = osp.join(CONFIG_ROOT, *name.split('/')) + ('' if name.endswith('.py') else '.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'no shipped config {name!r}; see `python -m mg_llava.cfg list`')
    return path


def absolute_imports(text, name):
    """`from ..x.y import *` / `from .y import *` of a shipped config -> `from mg_llava.configs.... import *`,
    so the copy works from any folder."""
    package = ['mg_llava', 'configs'] + name.split('/')[:-1]

    def repl(m):
        level, rest = len(m.group(1)), m.group(2)
        base = package[:len(package) - (level - 1)]
        return f'from {".".join(base + [rest])} import'
    return re.sub(r'from (\.+)([\w.]+) import', repl, text)


def copy_config(name, dest):
    src = config_path(name)
    os.makedirs(dest, exist_ok=True)
    out = osp.join(dest, osp.basename(src))
    if osp.exists(out):
        raise FileExistsError(f'{out} exists; not overwritten')
    with open(src) as f:
        text = absolute_imports(f.read(), name[:-3] if name.endswith('.py') else name)
    with open(out, 'w') as f:
        f.write(text)
    shutil.copymode(src, out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog='python -m mg_llava.cfg', description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    ls = sub.add_parser('list', help='list shipped configs')
    ls.add_argument('-p', '--pattern', help='substring filter')
    cp = sub.add_parser('copy', help='copy a shipped config to a folder')
    cp.add_argument('name')
    cp.add_argument('dest')
    args = ap.parse_args(argv)
    try:
        if args.cmd == 'list':
            print('\n'.join(list_configs(args.pattern)))
        else:
            print(f'copied to {copy_config(args.name, args.dest)}')
    except (FileNotFoundError, FileExistsError) as e:
        sys.exit(f'error: {e}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
