# Genixer_L: a trained LLaVA-1.5 (Vicuna-7B, configs/llava15/vicuna7b_sft.py) fine-tuned into a data generator on
# the 9-task Genixer data (tools/build_generator_data.py -> data/genixer/generator.json): full LLM, 1 epoch,
# lr 1e-5 (the reference's recipe). Then script/genixer_pipeline.sh generates, filters and mixes with it.
from mmengine.config import read_base

with read_base():
    from ..llava15.vicuna7b_sft import *  # noqa: F401,F403

work_dir = 'work_dirs/genixer_llava15_vicuna7b_generator'
model.update(pretrained_pth='work_dirs/llava15_vicuna7b_sft')
train_dataloader.dataset.update(data_path='data/genixer/generator.json')
optim_wrapper.optimizer.update(lr=1e-5)
