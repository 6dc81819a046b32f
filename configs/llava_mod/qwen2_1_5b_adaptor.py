# LLaVA-MoD stage 1 (adaptor initialisation, spec §3): the Qwen2-1.5B student's projector on captions (LLaVA-1.5 mode,
# LLM and CLIP frozen), lr 1e-3.
from mmengine.config import read_base

with read_base():
    from ..llava15.vicuna7b_pretrain import *  # noqa: F401,F403

work_dir = 'work_dirs/llava_mod_qwen2_1_5b_adaptor'
model.update(llm='model_zoo/Qwen/Qwen2-1.5B-Instruct', template='qwen_chat')
