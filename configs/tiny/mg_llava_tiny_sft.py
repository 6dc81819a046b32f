# Tiny CPU config for the test-suite: the demo's SFT stage on a few dozen samples, checkpoints every
# 5 iterations (all kept), a log line per iteration, no pretrained stage.
from mmengine.config import read_base

with read_base():
    from ..demo.mg_llava_demo_sft import *  # noqa: F401,F403

batch_size = 4
max_epochs = 2
warmup_ratio = 0.25
save_steps = 5

model.update(pretrained_pth=None)
train_dataloader.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
param_scheduler[0].update(end=warmup_ratio * max_epochs)
param_scheduler[1].update(begin=warmup_ratio * max_epochs, end=max_epochs)
train_cfg.update(max_epochs=max_epochs)
default_hooks.checkpoint.update(interval=save_steps, max_keep_ckpts=-1)
default_hooks.logger.update(interval=1)
