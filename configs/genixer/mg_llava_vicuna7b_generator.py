# Genixer on MG-LLaVA: a trained MG-LLaVA (Vicuna-7B, configs/mg_llava/vicuna7b_sft.py) fine-tuned into a data
# generator on the Genixer data (tools/build_generator_data.py), as Genixer_L (1 epoch, lr 1e-5). Its samples'
# box entries: data/genixer/generator_boxes.json (tools/detect_boxes.py on the generator data's images).
from mmengine.config import read_base

with read_base():
    from ..mg_llava.vicuna7b_sft import *  # noqa: F401,F403

work_dir = 'work_dirs/genixer_mg_llava_vicuna7b_generator'
model.update(pretrained_pth='work_dirs/vicuna7b_sft')   # the work dir of configs/mg_llava/vicuna7b_sft.py
train_dataloader.dataset.update(data_path='data/genixer/generator.json',
                                box_json_path='data/genixer/generator_boxes.json')
optim_wrapper.optimizer.update(lr=1e-5)
