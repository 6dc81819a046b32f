# Genixer demo (`make demo-genixer`), the labelled-only model: the demo's stage-1 checkpoint instruction-tuned on
# the few labelled images (the first 600 of the world's 6000; mg_llava.demo.genixer data), the demo's SFT recipe
# with more epochs for the smaller set. It is the baseline of the comparison and the model the generator starts
# from. .demo/genixer/images holds the labelled images (links) and the fresh unlabelled ones. Paths are relative to
# the repository root.
from mmengine.config import read_base

with read_base():
    from .mg_llava_demo_sft import *  # noqa: F401,F403

model.update(pretrained_pth='.demo/work/pretrain')
train_dataloader.dataset.update(data_path='.demo/genixer/labelled.json', image_folder='.demo/genixer/images',
                                box_json_path='.demo/genixer/boxes.json')
train_cfg.update(max_epochs=10)
