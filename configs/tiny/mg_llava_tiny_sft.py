# Tiny CPU config for the test-suite: the demo's SFT stage on a few dozen samples, checkpoints every
# 5 iterations (all kept), a log line per iteration, no pretrained stage; warm-up a quarter of the run.
from mmengine.config import read_base

with read_base():
    from ..demo.mg_llava_demo_sft import *  # noqa: F401,F403

model.update(pretrained_pth=None)
train_dataloader.update(batch_size=4)
param_scheduler[0].update(warmup_ratio=0.25)
train_cfg.update(max_epochs=2)
default_hooks.checkpoint.update(interval=5, max_keep_ckpts=-1)
default_hooks.logger.update(interval=1)
