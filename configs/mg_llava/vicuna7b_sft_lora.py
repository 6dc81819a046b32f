# MG-LLaVA Vicuna-7B v1.5, stage 2 with LoRA on the LLM instead of full fine-tuning (not a paper recipe).
# The LLM stays frozen; its LoRA adapters plus the stage-1 adapters (projector, fusion, bbox projector) train,
# and only those are saved (model.state_dict keeps `lora_` keys of the LLM). lr 2e-4 (xtuner's LoRA default);
# batch/accumulation/pretrained_pth as vicuna7b_sft. DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`).
from mmengine.config import read_base
from peft import LoraConfig

with read_base():
    from .vicuna7b_sft import *  # noqa: F401,F403

model.update(freeze_llm=True, llm_lora=dict(type=LoraConfig, r=128, lora_alpha=256, lora_dropout=0.05, bias='none',
                                            task_type='CAUSAL_LM'))
optim_wrapper.optimizer.update(lr=2e-4)
