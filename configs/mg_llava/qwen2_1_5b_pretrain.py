# MG-LLaVA Qwen2-1.5B-Instruct, stage 1 (pre-training) (spec §5.1).
# Recipe: batch 64/GPU, lr 1e-3.
# Sized for 4 GPUs: global batch 256 (PT) / 128 (SFT), as Vicuna-7B on 8.
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
# Not in the paper: the Vicuna-7B recipe with the ChatML template; the small LLM allows twice the batch per GPU.
# mmengine copies base dicts into a child: every place that uses the LLM path / template is re-pointed.
from mmengine.config import read_base
from xtuner.utils import PROMPT_TEMPLATE

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

llm_name_or_path = 'model_zoo/Qwen/Qwen2-1.5B-Instruct'
prompt_template = PROMPT_TEMPLATE.qwen_chat
batch_size, lr = 64, 1e-3

tokenizer.update(pretrained_model_name_or_path=llm_name_or_path)
model.update(tokenizer=tokenizer, template=prompt_template)
model.llm.update(pretrained_model_name_or_path=llm_name_or_path)
train_dataset.update(tokenizer=tokenizer, template=prompt_template)
train_dataloader.update(batch_size=batch_size, dataset=train_dataset)
optim_wrapper.optimizer.update(lr=lr)
