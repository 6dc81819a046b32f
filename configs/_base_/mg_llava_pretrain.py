# MG-LLaVA stage 1 (projector pre-training): LLM and both towers frozen; projector, Conv-Gate fusion and
# bbox projector trained. Defaults = Vicuna-7B v1.5 recipe of the paper (spec §5.1).
#
# One fact, one place. The model (LLM, template, towers, vision spec) is written in `model` only, the data files
# in `train_dataloader.dataset` only: the dataset gets the model's tokenizer, template, vision spec and image-token
# count when the run starts (mg_llava.engine.wiring). The lr is written in `optim_wrapper`, the epochs in
# `train_cfg`, the warm-up ratio in `param_scheduler[0]`. A child changes one with e.g.
#     model.update(llm='model_zoo/Qwen/Qwen2-7B-Instruct', template='qwen_chat')
#     train_dataloader.dataset.update(data_path='my.json', image_folder='my_images/')
# (ConfigDict.update merges nested dicts). A top-level `data_path = ...` is refused with the place to set it.
from mmengine.dataset import DefaultSampler
from mmengine.hooks import CheckpointHook, DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from torch.optim import AdamW

from mg_llava.compat import DIST_BACKEND, DIST_TIMEOUT, VARLEN_ATTN
from mg_llava.data import MGLLaVADataset, mg_llava_collate_fn
from mg_llava.engine import (AutoAmpOptimWrapper, CosineAfterWarmupLR, ExactResumeHook, TrainLoop, TrainVisualizer,
                             WarmupLR)
from mg_llava.models import MGLLaVAModel

#######################################################################
#            PART 1  Model (mg_llava.models.MGLLaVAConfig fields      #
#                    + mg_llava.models.TrainingPolicy)                #
#######################################################################
model = dict(
    type=MGLLaVAModel,
    llm='model_zoo/lmsys/vicuna-7b-v1.5',      # tokenizer: the LLM's own unless `tokenizer=` is given
    llm_dtype='float16',
    template='vicuna',                         # a name in xtuner's PROMPT_TEMPLATE or mg_llava.templates
    trust_remote_code=False,                   # True only for LLMs whose code lives in their folder
    visual_encoder='model_zoo/openai/clip-vit-large-patch14-336',
    visual_encoder_aux='model_zoo/laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup',
    vision_spec=dict(image_size=336, image_size_aux=768, pad_to_square=True, nms_iou=0.2, limit_num=100,
                     max_objects=100),
    use_fusion=True,
    use_object_tokens=True,
    object_pooling='exact',
    freeze_llm=True,
    freeze_visual_encoder=True,
    freeze_visual_encoder_aux=True)

#######################################################################
#                      PART 2  Dataset & Dataloader                   #
#######################################################################
train_dataloader = dict(
    batch_size=32,  # per device
    num_workers=4,
    pin_memory=True,
    dataset=dict(
        type=MGLLaVADataset,
        data_path='data/llava_data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json',
        image_folder='data/llava_data/LLaVA-Pretrain/images',
        box_json_path='data/bbox_json/train/pretrain_box.json',
        offline_processed_text_folder=None,
        max_length=2048 - 576,   # text-token budget after the 576 image tokens (upstream: 1472)
        on_bad_sample='error'),
    sampler=dict(type=DefaultSampler, shuffle=True),
    collate_fn=dict(type=mg_llava_collate_fn))

#######################################################################
#                    PART 3  Scheduler & Optimizer                    #
#######################################################################
# AMP (fp16 loss scaling) on GPUs; a plain fp32 OptimWrapper on a CPU-only host (mmengine's AMP asserts there).
optim_wrapper = dict(
    type=AutoAmpOptimWrapper,
    optimizer=dict(type=AdamW, lr=1e-3, betas=(0.9, 0.999), weight_decay=0),
    clip_grad=dict(max_norm=1, error_if_nonfinite=False),
    accumulative_counts=1,
    loss_scale='dynamic',
    dtype='float16')

# Warm-up = warmup_ratio of the run, rounded up to >= 2 iterations (mmengine truncates it to 0 or 1 on short
# runs: crash / lr stuck at 1e-9); the cosine starts where it ends and ends with train_cfg.max_epochs.
param_scheduler = [
    dict(type=WarmupLR, warmup_ratio=0.03, start_factor=1e-5, by_epoch=True, convert_to_iter_based=True),
    dict(type=CosineAfterWarmupLR, eta_min=0.0, by_epoch=True, convert_to_iter_based=True),
]

train_cfg = dict(type=TrainLoop, max_epochs=1)

#######################################################################
#                           PART 4  Runtime                           #
#######################################################################
# Exact resume: weights-only-loadable checkpoints, RNG state, and a clear stop when optimizer state is missing.
custom_hooks = [dict(type=ExactResumeHook)]

default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=10),
    param_scheduler=dict(type=ParamSchedulerHook),
    # save_optimizer=True: without it `--resume` cannot continue the lr schedule (ExactResumeHook refuses).
    checkpoint=dict(type=CheckpointHook, save_optimizer=True, by_epoch=False, interval=500, max_keep_ckpts=2),
    sampler_seed=dict(type=DistSamplerSeedHook),
)

# Read first by xtuner's train.py: resolving it imports mg_llava.compat (CPU/resume/DeepSpeed shims). Keep False.
use_varlen_attn = VARLEN_ATTN

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend=DIST_BACKEND, timeout=DIST_TIMEOUT),  # nccl with CUDA, gloo on a CPU-only host
)
# device_ids=None: valid for one-GPU-per-process DDP and required for CPU modules.
model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                         find_unused_parameters=False)

# TensorBoard: `--cfg-options visualizer.tensorboard=True` (pip install tensorboard); scalars.json always.
visualizer = dict(type=TrainVisualizer, tensorboard=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)
log_processor = dict(by_epoch=False)
