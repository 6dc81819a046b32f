# LLaVA-MoD demo, stage 3, preference distillation: the sparse student on pairs from the demo world (chosen = the
# true answer, rejected = another answer of the same question type; mg_llava.demo.distill pairs), the frozen
# teacher as the reference model, KTO-pair as the recipe. Twin: llava_mod_demo_sft_chosen.py.
from mmengine.config import read_base

from mg_llava.data.preference import PreferenceDataset, preference_collate_fn
from mg_llava.distill.preference import PreferenceDistillLLaVAModel

with read_base():
    from .llava_mod_demo_d2s import *  # noqa: F401,F403

model = dict(type=PreferenceDistillLLaVAModel, student=model.student, teacher=model.teacher,
             pretrained_pth='.demo/distill/work/d2s', loss_type='kto_pair', beta=0.1, kto_kl='batch_detached',
             moe_loss_enable=True, teacher_dtype='float32', llm=None)
train_dataloader.dataset.update(type=PreferenceDataset, data_path='.demo/distill/pairs.json')
train_dataloader.collate_fn = dict(type=preference_collate_fn)
optim_wrapper.optimizer.update(lr=1e-4)
