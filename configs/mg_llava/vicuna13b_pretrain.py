# MG-LLaVA Vicuna-13B v1.5, stage 1 (pre-training) (spec §5.1).
# Recipe: batch 16/GPU, lr 1e-3.
# Sized for 16 GPUs: global batch 256 (PT) / 128 (SFT) (the fork's script default is 8 GPUs).
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

model.update(llm='model_zoo/lmsys/vicuna-13b-v1.5', template='vicuna')
train_dataloader.update(batch_size=16)
optim_wrapper.optimizer.update(lr=1e-3)
