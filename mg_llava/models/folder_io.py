"""Write a model folder atomically: everything goes to a temporary sibling, which is moved in only when
complete, so a failure leaves no partial export (used by both export formats)."""
import os
import os.path as osp
import shutil
import tempfile


def move_into(tmp_dir, save_dir, stale=lambda name: False):
    """Move `tmp_dir`'s entries into `save_dir` (same-named old entries are replaced; old entries for which
    `stale(name)` holds are removed first, e.g. weight shards of an earlier export with another shard count)."""
    os.makedirs(save_dir, exist_ok=True)
    for name in os.listdir(save_dir):
        if stale(name):
            os.remove(osp.join(save_dir, name))
    for name in os.listdir(tmp_dir):
        dst = osp.join(save_dir, name)
        if osp.isdir(dst) and not osp.islink(dst):
            shutil.rmtree(dst)
        elif osp.lexists(dst):
            os.remove(dst)
        os.replace(osp.join(tmp_dir, name), dst)
    os.rmdir(tmp_dir)


def write_atomically(write, save_dir, stale=lambda name: False):
    """write(tmp_dir) fills a temporary sibling of `save_dir`, then it is moved in (see move_into)."""
    parent = osp.dirname(osp.abspath(save_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(osp.abspath(save_dir))}.tmp-', dir=parent)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    move_into(tmp, save_dir, stale)
