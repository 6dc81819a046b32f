# LLaVA-MoD mimic distillation, dense -> sparse (D2S, spec §3 stage 2b): the D2D student (pretrained_pth) is
# up-cycled at load — every 2nd FFN becomes NUM_EXPERTS copies + a router — and distilled with KD + CE + the
# router loss (counted once; the reference counted it twice). Trainable, explicitly: FFNs, experts, routers
# (`llm_train_modules=('mlp.',)`) and the adapters; attention, norms, embeddings, LM head and CLIP stay frozen.
from mmengine.config import read_base

with read_base():
    from .llava_mod_mimic import *  # noqa: F401,F403

POLICY_MODEL_TYPE = 'sparse'
LOSS_TYPE = 'kd_lm'
MOE_LOSS_ENABLE = True

model.update(loss_type=LOSS_TYPE, moe_loss_enable=MOE_LOSS_ENABLE, pretrained_pth='work_dirs/llava_mod_d2d')
model.student.update(freeze_llm=True, llm_train_modules=('mlp.',), moe=dict(
    layers=MOE_MODE, num_experts=NUM_EXPERTS, top_k=TOP_K_EXPERTS, use_residual=USE_RESIDUAL,
    router_aux_loss_coef=ROUTER_AUX_LOSS_COEF, capacity_factor=CAPACITY_FACTOR,
    eval_capacity_factor=EVAL_CAPACITY_FACTOR))
# Multi-task data (VQA, documents, charts, science, OCR: the seed's 1.4M D2S mix).
train_dataloader.dataset.update(data_path='data/llava_mod/d2s.json', box_json_path='data/bbox_json/llava_mod/d2s_box.json')
