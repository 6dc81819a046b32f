# MG-LLaVA Llama-3-8B-Instruct, stage 1 (pre-training) (spec §5.1).
# Recipe: batch 16/GPU, lr 1e-3.
# Sized for 8 GPUs: global batch 128 (PT) / 64 (SFT).
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

model.update(llm='model_zoo/meta-llama/Meta-Llama-3-8B-Instruct', template='llama3_chat')
train_dataloader.update(batch_size=16)
optim_wrapper.optimizer.update(lr=1e-3)
