# LLaVA-1.5 baseline, stage 1 (projector pre-training), Vicuna-7B v1.5: the MG-LLaVA model with both MG branches
# off — no ConvNeXt tower (hence no Conv-Gate fusion, no object tokens), no boxes, LLaVA-1.5 preprocessing (one
# 336 px padded-to-square view). LLaVA-Pretrain 558k data, batch 32/GPU, lr 1e-3 (the base's defaults).
# DeepSpeed: ZeRO-2. Own work_dir: the default (file name) would clash with configs/mg_llava/vicuna7b_pretrain.py.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

work_dir = 'work_dirs/llava15_vicuna7b_pretrain'
# visual_encoder_aux=None = LLaVA-1.5: no high-res tower, no fusion, no object tokens, no boxes
model.update(visual_encoder_aux=None, use_fusion=False, use_object_tokens=False)
train_dataloader.dataset.update(box_json_path=None)
