# MG-LLaVA Vicuna-13B v1.5, stage 2 (instruction tuning) (spec §5.1).
# Recipe: batch 8/GPU, accumulation 1, lr 2e-5; max_new_tokens=50 (the fork's evaluate_max_tokens).
# Sized for 16 GPUs: global batch 256 (PT) / 128 (SFT) (the fork's script default is 8 GPUs).
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
# pretrained_pth: the stage-1 work dir (the model follows its last_checkpoint) or a .pth.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_sft import *  # noqa: F401,F403

model.update(llm='model_zoo/lmsys/vicuna-13b-v1.5', template='vicuna',
             pretrained_pth='work_dirs/vicuna13b_pretrain', max_new_tokens=50)
train_dataloader.update(batch_size=8)
optim_wrapper.update(accumulative_counts=1, optimizer=dict(lr=2e-5))
