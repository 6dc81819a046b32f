# MG-LLaVA Qwen2-1.5B-Instruct, stage 2 (instruction tuning) (spec §5.1).
# Recipe: batch 32/GPU, accumulation 1, lr 2e-5.
# Sized for 4 GPUs: global batch 256 (PT) / 128 (SFT), as Vicuna-7B on 8.
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
# Not in the paper: the Vicuna-7B recipe with the ChatML template; the small LLM allows twice the batch per GPU.
# pretrained_pth: the stage-1 work dir (the model follows its last_checkpoint) or a .pth.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_sft import *  # noqa: F401,F403

model.update(llm='model_zoo/Qwen/Qwen2-1.5B-Instruct', template='qwen_chat',
             pretrained_pth='work_dirs/qwen2_1_5b_pretrain')
train_dataloader.update(batch_size=32)
optim_wrapper.update(accumulative_counts=1, optimizer=dict(lr=2e-5))
