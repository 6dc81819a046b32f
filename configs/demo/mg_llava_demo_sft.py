# Embedded demo, stage 2: instruction tuning on the synthetic world's questions, starting from stage 1
# (`pretrained_pth`, wired in by script/pipeline.sh). Same recipe as stage 1, 5 epochs.
from mmengine.config import read_base

with read_base():
    from .._base_.benchmarks.demo_shapes import *  # noqa: F401,F403  (evaluation: tools/test.py)
    from .mg_llava_demo_pretrain import *  # noqa: F401,F403

model.update(pretrained_pth='.demo/work/pretrain')  # a checkpoint, or a work dir (its last_checkpoint)
train_dataloader.dataset.update(data_path='.demo/world/sft.json')
train_cfg.update(max_epochs=5)
