# MG-LLaVA Yi-1.5-34B-Chat, stage 1 (pre-training) (spec §5.1).
# Recipe: batch 16/GPU, lr 2e-3.
# Sized for 32 GPUs: global batch 512 (PT) / 128 (SFT).
# DeepSpeed: ZeRO-3 (`--deepspeed deepspeed_zero3`): a 34B LLM does not fit with ZeRO-2.
# Template: ChatML (qwen_chat), as the fork.
# mmengine copies base dicts into a child: every place that uses the LLM path / template is re-pointed.
from mmengine.config import read_base
from xtuner.utils import PROMPT_TEMPLATE

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

llm_name_or_path = 'model_zoo/01-ai/Yi-1.5-34B-Chat'
prompt_template = PROMPT_TEMPLATE.qwen_chat
batch_size, lr = 16, 2e-3

tokenizer.update(pretrained_model_name_or_path=llm_name_or_path)
model.update(tokenizer=tokenizer, template=prompt_template)
model.llm.update(pretrained_model_name_or_path=llm_name_or_path)
train_dataset.update(tokenizer=tokenizer, template=prompt_template)
train_dataloader.update(batch_size=batch_size, dataset=train_dataset)
optim_wrapper.optimizer.update(lr=lr)
