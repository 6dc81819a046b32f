# LLaVA-MoD demo, SFT ablation, the twin of preference distillation (llava_mod_demo_pd.py): the same questions,
# images and steps, SFT on the chosen answers only (mg_llava.demo.distill data writes chosen.json).
from mmengine.config import read_base

with read_base():
    from .llava_mod_demo_sft_sparse import *  # noqa: F401,F403

model.update(pretrained_pth='.demo/distill/work/sft_sparse')
train_dataloader.dataset.update(data_path='.demo/distill/chosen.json')
optim_wrapper.optimizer.update(lr=1e-4)
train_cfg.update(max_epochs=4)
default_hooks.logger.update(interval=10)
