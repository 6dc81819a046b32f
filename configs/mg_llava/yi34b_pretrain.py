# MG-LLaVA Yi-1.5-34B-Chat, stage 1 (pre-training) (spec §5.1).
# Recipe: batch 16/GPU, lr 2e-3.
# Sized for 32 GPUs: global batch 512 (PT) / 128 (SFT).
# DeepSpeed: ZeRO-3 (`--deepspeed deepspeed_zero3`): a 34B LLM does not fit with ZeRO-2.
# Template: ChatML (qwen_chat), as the fork.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

model.update(llm='model_zoo/01-ai/Yi-1.5-34B-Chat', template='qwen_chat')
train_dataloader.update(batch_size=16)
optim_wrapper.optimizer.update(lr=2e-3)
