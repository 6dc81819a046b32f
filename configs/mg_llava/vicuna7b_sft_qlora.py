# MG-LLaVA Vicuna-7B v1.5, stage 2 with QLoRA: vicuna7b_sft_lora with the frozen LLM loaded in 4-bit NF4.
# GPU ONLY: bitsandbytes 4-bit kernels need CUDA (a CPU run must drop model.llm_kwargs.quantization_config,
# which turns this back into vicuna7b_sft_lora). DeepSpeed: ZeRO-2 (`--deepspeed deepspeed_zero2`), or none on one GPU.
from mmengine.config import read_base
from transformers import BitsAndBytesConfig

with read_base():
    from .vicuna7b_sft_lora import *  # noqa: F401,F403

model.update(llm_kwargs=dict(quantization_config=dict(
    type=BitsAndBytesConfig, load_in_4bit=True, load_in_8bit=False, llm_int8_threshold=6.0,
    llm_int8_has_fp16_weight=False, bnb_4bit_compute_dtype='float16', bnb_4bit_use_double_quant=True,
    bnb_4bit_quant_type='nf4')))
