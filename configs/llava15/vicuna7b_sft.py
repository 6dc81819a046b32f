# LLaVA-1.5 baseline, stage 2 (instruction tuning, full LLM), Vicuna-7B v1.5: MG branches off as in
# vicuna7b_pretrain.py. LLaVA mix665k data, batch 16/GPU, lr 2e-5 (the base's defaults). DeepSpeed: ZeRO-2.
# pretrained_pth: the stage-1 work dir of configs/llava15/vicuna7b_pretrain.py (its last_checkpoint) or a .pth.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_sft import *  # noqa: F401,F403

work_dir = 'work_dirs/llava15_vicuna7b_sft'
# visual_encoder_aux=None = LLaVA-1.5: no high-res tower, no fusion, no object tokens, no boxes
model.update(visual_encoder_aux=None, use_fusion=False, use_object_tokens=False,
             pretrained_pth='work_dirs/llava15_vicuna7b_pretrain')
train_dataloader.dataset.update(box_json_path=None)
