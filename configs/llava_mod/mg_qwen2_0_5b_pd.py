# LLaVA-MoD stage 3 (preference distillation, KTO-pair): the D2S student, the teacher as reference.
# MG-LLaVA variant: ConvNeXt tower, Conv-Gate fusion and object tokens in teacher and student alike.
from mmengine.config import read_base

with read_base():
    from .._base_.llava_mod_preference import *  # noqa: F401,F403

work_dir = 'work_dirs/llava_mod_mg_qwen2_0_5b_pd'
model.student.update(llm='model_zoo/Qwen/Qwen2-0.5B-Instruct', template='qwen_chat')
model.update(teacher='work_dirs/qwen2_7b_sft/export',
             pretrained_pth='work_dirs/llava_mod_mg_qwen2_0_5b_d2s')
