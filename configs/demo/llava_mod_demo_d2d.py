# LLaVA-MoD demo, stage 2a, dense -> dense mimic distillation: the whole student LLM and its adapters learn the
# world's questions from the frozen demo teacher (`make demo`'s export) by KD + next-token CE (`kd_lm`), on a
# small labelled budget as in LLaVA-MoD (the teacher learnt from the world's 6300 SFT samples, the student gets
# the first 200, 15 epochs: mg_llava.demo.distill data writes .demo/distill/sft.json). Every
# non-padding position is distilled (`distill_all_tokens`): the teacher's next-token distribution over the
# question tokens also depends on the image, a signal SFT never sees. Twin without the teacher:
# llava_mod_demo_sft_dense.py.
from mmengine.config import read_base

from mg_llava.distill.mimic import MimicDistillLLaVAModel

with read_base():
    from .._base_.benchmarks.demo_shapes import *  # noqa: F401,F403  (evaluation: tools/test.py)
    from .llava_mod_demo_adaptor import *  # noqa: F401,F403

model = dict(type=MimicDistillLLaVAModel, student=dict(model, freeze_llm=False), teacher='.demo/work/export',
             pretrained_pth='.demo/distill/work/adaptor', loss_type='kd_lm', kd_kind='forward_kl', temperature=1.0,
             distill_all_tokens=True, moe_loss_enable=False, teacher_dtype='float32',
             llm=None)  # read (and ignored) by `xtuner convert pth_to_hf`
train_dataloader.dataset.update(data_path='.demo/distill/sft.json')
train_cfg.update(max_epochs=15)
