# MG-LLaVA Qwen2-7B-Instruct, stage 2 (instruction tuning) (spec §5.1).
# Recipe: batch 16/GPU, accumulation 1, lr 2e-5.
# Sized for 8 GPUs: global batch 256 (PT) / 128 (SFT).
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
# Not in the paper: the Vicuna-7B recipe with the ChatML template.
# mmengine copies base dicts into a child: every place that uses the LLM path / template is re-pointed.
# pretrained_pth: the stage-1 work dir (the model follows its last_checkpoint) or a .pth.
from mmengine.config import read_base
from xtuner.utils import PROMPT_TEMPLATE

with read_base():
    from .._base_.mg_llava_sft import *  # noqa: F401,F403

llm_name_or_path = 'model_zoo/Qwen/Qwen2-7B-Instruct'
prompt_template = PROMPT_TEMPLATE.qwen_chat
pretrained_pth = 'work_dirs/qwen2_7b_pretrain'
batch_size, accumulative_counts, lr = 16, 1, 2e-5

tokenizer.update(pretrained_model_name_or_path=llm_name_or_path)
model.update(tokenizer=tokenizer, template=prompt_template, pretrained_pth=pretrained_pth)
model.llm.update(pretrained_model_name_or_path=llm_name_or_path)
train_dataset.update(tokenizer=tokenizer, template=prompt_template)
train_dataloader.update(batch_size=batch_size, dataset=train_dataset)
train_dataloader.sampler.update(per_device_batch_size=batch_size * accumulative_counts)
optim_wrapper.update(accumulative_counts=accumulative_counts, optimizer=dict(lr=lr))
