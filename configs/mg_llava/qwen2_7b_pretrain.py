# MG-LLaVA Qwen2-7B-Instruct, stage 1 (pre-training) (spec §5.1).
# Recipe: batch 32/GPU, lr 1e-3.
# Sized for 8 GPUs: global batch 256 (PT) / 128 (SFT).
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
# Not in the paper: the Vicuna-7B recipe with the ChatML template.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

model.update(llm='model_zoo/Qwen/Qwen2-7B-Instruct', template='qwen_chat')
train_dataloader.update(batch_size=32)
optim_wrapper.optimizer.update(lr=1e-3)
