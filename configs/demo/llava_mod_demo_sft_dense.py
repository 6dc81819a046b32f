# LLaVA-MoD demo, the SFT ablation (the paper's): the same student from the same adaptor checkpoint, trained by
# plain next-token CE on the same data (the 200-sample budget) for the same steps as D2D (llava_mod_demo_d2d.py),
# no teacher.
from mmengine.config import read_base

with read_base():
    from .._base_.benchmarks.demo_shapes import *  # noqa: F401,F403  (evaluation: tools/test.py)
    from .llava_mod_demo_adaptor import *  # noqa: F401,F403

model.update(freeze_llm=False, pretrained_pth='.demo/distill/work/adaptor')
train_dataloader.dataset.update(data_path='.demo/distill/sft.json')
train_cfg.update(max_epochs=15)
