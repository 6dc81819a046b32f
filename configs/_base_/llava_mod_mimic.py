# LLaVA-MoD mimic distillation (spec §3, §5), dense -> dense (D2D) as written; dense -> sparse (D2S) is the same
# stage with the knobs of configs/_base_/llava_mod_d2s.py. A frozen teacher (an export of this framework) and a
# student of the same family; the student's preprocessing feeds both (checked at start-up).
#
# The seed's knobs, each used once below (a child re-points the model, not these: a knob re-assigned in a child
# without the model following it is refused, naming the model key).
from mmengine.config import read_base

from mg_llava.distill.mimic import MimicDistillLLaVAModel
from mg_llava.engine import ExactResumeHook, MoEStatsHook

with read_base():
    from .benchmarks.standard import *  # noqa: F401,F403  (evaluation of the student: tools/test.py)
    from .mg_llava_pretrain import *  # noqa: F401,F403  (runtime, optimizer, data pipeline)

POLICY_MODEL_TYPE = 'dense'     # 'sparse': the student's FFNs are up-cycled into routed experts
REF_MODEL_TYPE = 'dense'        # the teacher, as exported (dense or MoE: its folder says)
LOSS_TYPE = 'only_kd'           # 'kd_lm': KD + next-token CE (1:1)
DISTILL_ALL_TOKENS = False      # True: every non-padding position, not only the response
MOE_LOSS_ENABLE = False         # add the student's router load-balancing loss (once)
MOE_MODE = 'every_2nd'          # the seed's 'sparse': layers 0, 2, 4, ...
NUM_EXPERTS = 4
TOP_K_EXPERTS = 2
USE_RESIDUAL = False
ROUTER_AUX_LOSS_COEF = 0.01
CAPACITY_FACTOR = 1.5
EVAL_CAPACITY_FACTOR = 2.0

#######################################################################
#                               PART 1  Model                         #
#######################################################################
# The student: the base's MG-LLaVA model (a LLaVA-1.5 child sets visual_encoder_aux=None and no box file; every
# child sets llm / template / pretrained_pth = the adaptor stage's work dir). D2D trains the whole LLM and the
# adapters; the towers stay frozen.
student = dict(model, freeze_llm=False, llm_dtype=None,
               moe=None if POLICY_MODEL_TYPE == 'dense' else dict(
                   layers=MOE_MODE, num_experts=NUM_EXPERTS, top_k=TOP_K_EXPERTS, use_residual=USE_RESIDUAL,
                   router_aux_loss_coef=ROUTER_AUX_LOSS_COEF, capacity_factor=CAPACITY_FACTOR,
                   eval_capacity_factor=EVAL_CAPACITY_FACTOR))
model = dict(type=MimicDistillLLaVAModel, student=student, teacher='work_dirs/llava15_qwen2_7b_sft/export',
             pretrained_pth='work_dirs/llava_mod_adaptor', loss_type=LOSS_TYPE, distill_all_tokens=DISTILL_ALL_TOKENS,
             moe_loss_enable=MOE_LOSS_ENABLE, kd_kind='forward_kl', temperature=1.0, teacher_dtype='bfloat16',
             llm=None)   # read (and ignored) by `xtuner convert pth_to_hf`; the student's LLM is student['llm']
del student

#######################################################################
#                      PART 2  Dataset & Dataloader                   #
#######################################################################
# General captions and conversations (the seed's 2.4M D2D mix); one json, one image root.
train_dataloader.update(batch_size=8)
train_dataloader.dataset.update(data_path='data/llava_mod/d2d.json', image_folder='data/llava_mod/images',
                                box_json_path='data/bbox_json/llava_mod/d2d_box.json')

#######################################################################
#                    PART 3  Scheduler & Optimizer                    #
#######################################################################
optim_wrapper.optimizer.update(lr=2e-5)

#######################################################################
#                           PART 4  Runtime                           #
#######################################################################
# + per-layer expert load and dropped-token fraction of an up-cycled student, at the logger's interval
custom_hooks = [dict(type=ExactResumeHook), dict(type=MoEStatsHook)]
