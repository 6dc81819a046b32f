"""Which share of the work this process does, and the few collectives that bring the shares together.

Work is dealt round robin (`shard`): balanced, and a prefix finished by an interrupted run is spread over all
ranks. Without an initialised process group every helper is the one-process case (no torch.distributed call).
torch is imported only when a helper runs, so the stdlib-only box-file layer can import `shard`.
"""


def _dist():
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() else None


def init_distributed(launcher):
    """torchrun (`pytorch`) or SLURM (`slurm`) process group, nccl on GPUs, gloo on CPU; `none`: nothing."""
    import os
    import subprocess

    import torch
    if launcher == 'none':
        return
    if launcher == 'slurm':
        os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
        os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
        os.environ.setdefault('LOCAL_RANK', os.environ['SLURM_LOCALID'])
        if 'MASTER_ADDR' not in os.environ:
            nodes = os.environ['SLURM_NODELIST']
            os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {nodes} | head -n1')
        os.environ.setdefault('MASTER_PORT', '29500')
    backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    torch.distributed.init_process_group(backend=backend)


def rank_and_world():
    """(rank, world size) of the initialised process group, else (0, 1)."""
    dist = _dist()
    return (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)


def shard(items, rank, world_size):
    """Rank `rank`'s items: items[rank::world_size]."""
    return items[rank::world_size]


def gather(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] on one process)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [obj]
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def barrier():
    """Wait for every rank (no-op on one process)."""
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()
