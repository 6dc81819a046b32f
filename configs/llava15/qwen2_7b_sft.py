# LLaVA-1.5 recipe with Qwen2-7B-Instruct (LLaVA-MoD's teacher), stage 2: full LLM, mix665k, batch 16/GPU, lr 2e-5.
# Its export (`xtuner convert pth_to_hf`) is the teacher of configs/llava_mod/qwen2_*. DeepSpeed: ZeRO-2.
from mmengine.config import read_base

with read_base():
    from .vicuna7b_sft import *  # noqa: F401,F403

work_dir = 'work_dirs/llava15_qwen2_7b_sft'
model.update(llm='model_zoo/Qwen/Qwen2-7B-Instruct', template='qwen_chat',
             pretrained_pth='work_dirs/llava15_qwen2_7b_pretrain')
