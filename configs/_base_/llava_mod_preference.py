# LLaVA-MoD preference distillation (spec §3 stage 3, §7): the D2S student (pretrained_pth) trained on preference
# pairs with the frozen teacher as the reference model. KTO-pair by default (the seed's), its KL reference point a
# detached batch estimate (the reference's per-device, non-detached one: kto_kl='reference'); DPO: 'sigmoid'.
# Same trainable set as D2S; the router loss once per policy pass (one pass covers chosen and rejected).
from mmengine.config import read_base

from mg_llava.data.preference import PreferenceDataset, preference_collate_fn
from mg_llava.distill.preference import PreferenceDistillLLaVAModel

with read_base():
    from .llava_mod_d2s import *  # noqa: F401,F403

LOSS_TYPE = 'kto_pair'          # 'sigmoid' (DPO), 'kto_pair', 'hinge', 'ipo'

model = dict(type=PreferenceDistillLLaVAModel, student=model.student, teacher=model.teacher,
             pretrained_pth='work_dirs/llava_mod_d2s', loss_type=LOSS_TYPE, beta=0.1, kto_kl='batch_detached',
             moe_loss_enable=MOE_LOSS_ENABLE, teacher_dtype='bfloat16', llm=None)  # llm: for pth_to_hf
# RLAIF-V pairs, converted by tools/convert_rlaif_v.py.
train_dataloader.dataset.update(type=PreferenceDataset, data_path='data/llava_mod/rlaif_v.json',
                                image_folder='data/llava_mod/rlaif_v_images',
                                box_json_path='data/bbox_json/llava_mod/rlaif_v_box.json')
train_dataloader.collate_fn = dict(type=preference_collate_fn)
optim_wrapper.optimizer.update(lr=2e-6)
