# LLaVA-MoD stage 2b (dense -> sparse): the D2D student up-cycled to top-2-of-4 experts every 2nd layer.
from mmengine.config import read_base

with read_base():
    from .._base_.llava_mod_d2s import *  # noqa: F401,F403

work_dir = 'work_dirs/llava_mod_qwen2_1_5b_d2s'
model.student.update(llm='model_zoo/Qwen/Qwen2-1.5B-Instruct', template='qwen_chat', visual_encoder_aux=None,
                     use_fusion=False, use_object_tokens=False)
model.update(pretrained_pth='work_dirs/llava_mod_qwen2_1_5b_d2d')
train_dataloader.dataset.update(box_json_path=None)
