# MG-LLaVA Phi-3-mini-4k-instruct (3.8B), stage 1 (pre-training) (spec §5.1).
# Recipe: batch 32/GPU, lr 1e-3.
# Sized for 8 GPUs: global batch 256 (PT) / 64 (SFT).
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
# Template: the fork's phi3_chat (no newline after <|user|>/<|system|>, spec §0), not xtuner 0.2.0's phi3_chat.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

model.update(llm='model_zoo/microsoft/Phi-3-mini-4k-instruct', template='phi3_chat_mgllava')
train_dataloader.update(batch_size=32)
optim_wrapper.optimizer.update(lr=1e-3)
