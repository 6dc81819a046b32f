# Embedded demo, stage 1: MG-LLaVA on a synthetic world of coloured shapes (see `make demo`).
# Tiny random-init towers and LLM (built by mg_llava.demo.tiny_assets): nothing is pretrained. The ConvNeXt
# stays frozen as in upstream MG-LLaVA (its random features already separate the shapes; training it through
# the LLM slowed learning); CLIP, projectors, fusion and the LLM train, on CPU. Paths are relative to the
# repository root, where `make demo` runs.
from mmengine.config import read_base

with read_base():
    from .._base_.mg_llava_pretrain import *  # noqa: F401,F403

#######################################################################
#                               PART 1  Model                         #
#######################################################################
# Everything is generated under .demo/ by script/demo.sh (mg_llava.demo.world / tiny_assets).
model.update(
    llm='.demo/assets/llm', llm_dtype=None, tokenizer='.demo/assets/tokenizer',
    visual_encoder='.demo/assets/clip_vit', visual_encoder_aux='.demo/assets/convnext',
    vision_spec=dict(image_size=56, image_size_aux=128),  # 4x4 CLIP tokens; ConvNeXt last stage 4x4
    object_box_position=True,  # lets the LLM answer left/right from the object tokens (not upstream)
    max_new_tokens=8,
    freeze_llm=False, freeze_visual_encoder=False, use_activation_checkpointing=False)

#######################################################################
#                      PART 2  Dataset & Dataloader                   #
#######################################################################
# 2 CPU cores: loading in the main process measured ~10% faster than 1 worker.
train_dataloader.update(batch_size=16, num_workers=0, pin_memory=False)
train_dataloader.dataset.update(data_path='.demo/world/pretrain.json', image_folder='.demo/world/images',
                                box_json_path='.demo/world/boxes.json', max_length=256)

#######################################################################
#                    PART 3  Scheduler & Optimizer                    #
#######################################################################
optim_wrapper.optimizer.update(lr=1e-3, betas=(0.9, 0.98))
param_scheduler[0].update(warmup_ratio=0.05, start_factor=1e-2)
param_scheduler[1].update(eta_min=None, eta_min_ratio=0.05)
train_cfg.update(max_epochs=2)

#######################################################################
#                           PART 4  Runtime                           #
#######################################################################
default_hooks.logger.update(interval=50)
default_hooks.checkpoint.update(interval=500, max_keep_ckpts=1)
