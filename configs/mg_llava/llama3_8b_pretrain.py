# MG-LLaVA Llama-3-8B-Instruct, stage 1 (pre-training) (spec §5.1).
# Recipe: batch 16/GPU, lr 1e-3.
# Sized for 8 GPUs: global batch 128 (PT) / 64 (SFT).
# DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
# mmengine copies base dicts into a child: every place that uses the LLM path / template is re-pointed.
from mmengine.config import read_base
from xtuner.utils import PROMPT_TEMPLATE

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

llm_name_or_path = 'model_zoo/meta-llama/Meta-Llama-3-8B-Instruct'
prompt_template = PROMPT_TEMPLATE.llama3_chat
batch_size, lr = 16, 1e-3

tokenizer.update(pretrained_model_name_or_path=llm_name_or_path)
model.update(tokenizer=tokenizer, template=prompt_template)
model.llm.update(pretrained_model_name_or_path=llm_name_or_path)
train_dataset.update(tokenizer=tokenizer, template=prompt_template)
train_dataloader.update(batch_size=batch_size, dataset=train_dataset)
optim_wrapper.optimizer.update(lr=lr)
