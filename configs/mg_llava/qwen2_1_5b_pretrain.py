# MG-LLaVA Qwen2-1.5B-Instruct, stage 1 (pre-training) (spec §5.1).
# Recipe: batch 64/GPU, lr 1e-3.
# Sized for 4 GPUs: global batch 256 (PT) / 128 (SFT), as Vicuna-7B on 8.
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
# Not in the paper: the Vicuna-7B recipe with the ChatML template; the small LLM allows twice the batch per GPU.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

model.update(llm='model_zoo/Qwen/Qwen2-1.5B-Instruct', template='qwen_chat')
train_dataloader.update(batch_size=64)
optim_wrapper.optimizer.update(lr=1e-3)
