# LLaVA-MoD stage 2b (dense -> sparse): the D2D student up-cycled to top-2-of-4 experts every 2nd layer.
# MG-LLaVA variant: ConvNeXt tower, Conv-Gate fusion and object tokens in teacher and student alike.
from mmengine.config import read_base

with read_base():
    from .._base_.llava_mod_d2s import *  # noqa: F401,F403

work_dir = 'work_dirs/llava_mod_mg_qwen2_0_5b_d2s'
model.student.update(llm='model_zoo/Qwen/Qwen2-0.5B-Instruct', template='qwen_chat')
model.update(teacher='work_dirs/qwen2_7b_sft/export',
             pretrained_pth='work_dirs/llava_mod_mg_qwen2_0_5b_d2d')
