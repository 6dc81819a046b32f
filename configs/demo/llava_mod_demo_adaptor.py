# LLaVA-MoD demo (`make demo-distill`), stage 1, adaptor initialisation: a smaller student (the teacher's LLM
# depth-pruned to 2 of its 4 layers: mg_llava.demo.distill student) gets its projector, Conv-Gate fusion and bbox
# projector trained on the captions, its LLM frozen. It reuses the teacher's towers, frozen: the demo teacher's
# trained CLIP (from its export) and its frozen ConvNeXt, so teacher and student see the same visual tokens and
# the distillation stages compute the towers once for both. Everything else is the demo's stage-1 recipe.
from mmengine.config import read_base

with read_base():
    from .mg_llava_demo_pretrain import *  # noqa: F401,F403

model.update(llm='.demo/distill/student_llm', visual_encoder='.demo/work/export/visual_encoder',
             freeze_llm=True, freeze_visual_encoder=True)
train_cfg.update(max_epochs=1)
