# MG-LLaVA Phi-3-mini-4k-instruct (3.8B), stage 2 (instruction tuning) (spec §5.1).
# Recipe: batch 8/GPU, accumulation 1, lr 2e-5.
# Sized for 8 GPUs: global batch 256 (PT) / 64 (SFT).
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
# Template: the fork's phi3_chat (no newline after <|user|>/<|system|>, spec §0), not xtuner 0.2.0's phi3_chat.
# pretrained_pth: the stage-1 work dir (the model follows its last_checkpoint) or a .pth.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_sft import *  # noqa: F401,F403

model.update(llm='model_zoo/microsoft/Phi-3-mini-4k-instruct', template='phi3_chat_mgllava',
             pretrained_pth='work_dirs/phi3_mini_pretrain')
train_dataloader.update(batch_size=8)
optim_wrapper.update(accumulative_counts=1, optimizer=dict(lr=2e-5))
