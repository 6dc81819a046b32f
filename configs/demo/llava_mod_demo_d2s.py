# LLaVA-MoD demo, stage 2b, dense -> sparse: the D2D student's FFNs are up-cycled at load into 4 experts, top-2
# routed (every 2nd layer, as the recipe), and distilled with KD + CE + the router loss; FFNs, experts, routers
# and adapters train, attention / norms / embeddings stay frozen. Twin: llava_mod_demo_sft_sparse.py.
from mmengine.config import read_base

from mg_llava.engine import MoEStatsHook

with read_base():
    from .llava_mod_demo_d2d import *  # noqa: F401,F403

MOE = dict(layers='every_2nd', num_experts=4, top_k=2, router_aux_loss_coef=0.01, capacity_factor=1.5,
           eval_capacity_factor=2.0)
model.student.update(freeze_llm=True, llm_train_modules=('mlp.',), moe=MOE)
model.update(pretrained_pth='.demo/distill/work/d2d', moe_loss_enable=True)
custom_hooks.append(dict(type=MoEStatsHook))
