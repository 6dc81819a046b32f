# LLaVA-MoD demo, stage 3, preference distillation: the sparse student on pairs from the demo world (chosen = the
# true answer, rejected = another answer of the same question type, one per image of the student's 200 samples;
# mg_llava.demo.distill data), the frozen teacher as the reference model, KTO-pair and lr = D2D's / 10 as the
# recipe, 4 epochs. Twin: llava_mod_demo_sft_chosen.py.
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
train_cfg.update(max_epochs=4)
default_hooks.logger.update(interval=10)   # 48 steps: show the rewards and margins
