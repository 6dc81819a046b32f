# Genixer demo, the judge: `make demo`'s instruction-tuned model (it learnt the world from all 6000 labelled
# training images: the demo's stand-in for the paper's stronger off-the-shelf judge, Fuyu-8B) fine-tuned to answer
# Genixer's judge prompt "Is 'Question: … Answer: …' true for this image?" with Yes / No about its own training
# images (mg_llava.demo.genixer data writes judge.json). The learner's unlabelled images are fresh ones it never saw.
from mmengine.config import read_base

with read_base():
    from .mg_llava_demo_sft import *  # noqa: F401,F403

model.update(pretrained_pth='.demo/work/sft')
train_dataloader.dataset.update(data_path='.demo/genixer/judge.json', box_json_path='.demo/genixer/boxes.json')
train_cfg.update(max_epochs=2)
