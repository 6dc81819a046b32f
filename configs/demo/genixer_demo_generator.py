# Genixer demo, the generator: the labelled-only model fine-tuned on Genixer's format made from the same labelled
# images: a two-level instruction -> `Question: … Answer: …` (mg_llava.demo.genixer data writes generator.json).
from mmengine.config import read_base

with read_base():
    from .genixer_demo_labelled import *  # noqa: F401,F403

model.update(pretrained_pth='.demo/genixer/work/labelled')
train_dataloader.dataset.update(data_path='.demo/genixer/generator.json')
train_cfg.update(max_epochs=2)
