# LLaVA-MoD demo, SFT ablation, the twin of D2S (llava_mod_demo_d2s.py): the SFT dense student up-cycled at load
# the same way, the same modules trained, CE + router loss, no teacher.
from mmengine.config import read_base

from mg_llava.engine import MoEStatsHook

with read_base():
    from .llava_mod_demo_sft_dense import *  # noqa: F401,F403

MOE = dict(layers='every_2nd', num_experts=4, top_k=2, router_aux_loss_coef=0.01, capacity_factor=1.5,
           eval_capacity_factor=2.0)
model.update(freeze_llm=True, llm_train_modules=('mlp.',), moe=MOE, pretrained_pth='.demo/distill/work/sft_dense')
custom_hooks.append(dict(type=MoEStatsHook))
