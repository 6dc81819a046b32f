# MG-LLaVA Llama-3-8B-Instruct, stage 2 (instruction tuning) (spec §5.1).
# Recipe: batch 4/GPU, accumulation 2, lr 1e-5.
# Sized for 8 GPUs: global batch 128 (PT) / 64 (SFT).
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
# pretrained_pth: the stage-1 work dir (the model follows its last_checkpoint) or a .pth.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_sft import *  # noqa: F401,F403

model.update(llm='model_zoo/meta-llama/Meta-Llama-3-8B-Instruct', template='llama3_chat',
             pretrained_pth='work_dirs/llama3_8b_pretrain')
train_dataloader.update(batch_size=4)
optim_wrapper.update(accumulative_counts=2, optimizer=dict(lr=1e-5))
