# LLaVA-1.5 recipe with Qwen2-7B-Instruct instead of Vicuna-7B (LLaVA-MoD's teacher, spec §3 stage 0), stage 1.
# Same data and hyper-parameters as vicuna7b_pretrain.py; ChatML template. DeepSpeed: ZeRO-2.
from mmengine.config import read_base

with read_base():
    from .vicuna7b_pretrain import *  # noqa: F401,F403

work_dir = 'work_dirs/llava15_qwen2_7b_pretrain'
model.update(llm='model_zoo/Qwen/Qwen2-7B-Instruct', template='qwen_chat')
