# MG-LLaVA Yi-1.5-34B-Chat, stage 2 (instruction tuning) (spec §5.1).
# Recipe: batch 4/GPU, accumulation 1, lr 2e-5; pin_memory=False.
# Sized for 32 GPUs: global batch 512 (PT) / 128 (SFT).
# DeepSpeed: ZeRO-3 (`--deepspeed deepspeed_zero3`): a 34B LLM does not fit with ZeRO-2.
# Template: ChatML (qwen_chat), as the fork.
# pretrained_pth: the stage-1 work dir (the model follows its last_checkpoint) or a .pth.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_sft import *  # noqa: F401,F403

model.update(llm='model_zoo/01-ai/Yi-1.5-34B-Chat', template='qwen_chat',
             pretrained_pth='work_dirs/yi34b_pretrain')
train_dataloader.update(batch_size=4, pin_memory=False)
optim_wrapper.update(accumulative_counts=1, optimizer=dict(lr=2e-5))
