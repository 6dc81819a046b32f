# LLaVA-MoD stage 3 (preference distillation, KTO-pair): the D2S student, the teacher as reference.
from mmengine.config import read_base

with read_base():
    from .._base_.llava_mod_preference import *  # noqa: F401,F403

work_dir = 'work_dirs/llava_mod_qwen2_1_5b_pd'
model.student.update(llm='model_zoo/Qwen/Qwen2-1.5B-Instruct', template='qwen_chat', visual_encoder_aux=None,
                     use_fusion=False, use_object_tokens=False)
model.update(pretrained_pth='work_dirs/llava_mod_qwen2_1_5b_d2s')
train_dataloader.dataset.update(box_json_path=None)
