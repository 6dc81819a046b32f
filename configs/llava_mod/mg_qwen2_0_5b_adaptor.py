# LLaVA-MoD stage 1 (adaptor initialisation, spec §3): the MG-LLaVA Qwen2-0.5B student's adapters on captions (LLM
# and towers frozen), lr 1e-3.
# MG-LLaVA variant: ConvNeXt tower, Conv-Gate fusion and object tokens in teacher and student alike.
from mmengine.config import read_base

with read_base():
    from ..mg_llava.qwen2_7b_pretrain import *  # noqa: F401,F403

work_dir = 'work_dirs/llava_mod_mg_qwen2_0_5b_adaptor'
model.update(llm='model_zoo/Qwen/Qwen2-0.5B-Instruct')
