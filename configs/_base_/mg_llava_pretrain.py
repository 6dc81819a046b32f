# MG-LLaVA stage 1 (projector pre-training): LLM and both towers frozen; projector, Conv-Gate fusion and
# bbox projector trained. Defaults = Vicuna-7B v1.5 recipe of the paper (spec §5.1). Children override the
# LLM in PART 1 and re-point the few places that use it (see configs/mg_llava/*.py).
import torch
from mmengine.dataset import DefaultSampler
from mmengine.hooks import CheckpointHook, DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from torch.optim import AdamW
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel
from xtuner.engine.runner import TrainLoop
from xtuner.utils import PROMPT_TEMPLATE

from mg_llava.compat import DIST_BACKEND, DIST_TIMEOUT, VARLEN_ATTN
from mg_llava.data import MGLLaVADataset, mg_llava_collate_fn
from mg_llava.engine import AutoAmpOptimWrapper, CosineAfterWarmupLR, ExactResumeHook, TrainVisualizer, WarmupLR
from mg_llava.models import ConvNeXtTower, MGLLaVAModel

#######################################################################
#                          PART 1  Settings                           #
#######################################################################
llm_name_or_path = 'model_zoo/lmsys/vicuna-7b-v1.5'
visual_encoder_name_or_path = 'model_zoo/openai/clip-vit-large-patch14-336'
visual_encoder_aux_path = 'model_zoo/laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup'
prompt_template = PROMPT_TEMPLATE.vicuna

data_root = 'data/'
data_path = data_root + 'llava_data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json'
image_folder = data_root + 'llava_data/LLaVA-Pretrain/images'
box_json_path = data_root + 'bbox_json/train/pretrain_box.json'
offline_processed_text_folder = None

image_size, patch_size, image_size_aux = 336, 14, 768
num_image_tokens = (image_size // patch_size) ** 2          # 576
max_length = 2048 - num_image_tokens                        # text-token budget (upstream: 1472)
vision_spec = dict(image_size=image_size, image_size_aux=image_size_aux, pad_to_square=True,
                   nms_iou=0.2, limit_num=100, max_objects=100)

batch_size = 32  # per device
accumulative_counts = 1
dataloader_num_workers = 4
max_epochs = 1
lr = 1e-3
betas = (0.9, 0.999)
weight_decay = 0
max_norm = 1
warmup_ratio = 0.03
save_steps = 500
save_total_limit = 2

#######################################################################
#            PART 2  Model & Tokenizer & Image Processor              #
#######################################################################
tokenizer = dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=llm_name_or_path,
                 trust_remote_code=True, padding_side='right')

model = dict(
    type=MGLLaVAModel,
    freeze_llm=True,
    freeze_visual_encoder=True,
    freeze_visual_encoder_aux=True,
    tokenizer=tokenizer,
    template=prompt_template,
    llm=dict(type=AutoModelForCausalLM.from_pretrained, pretrained_model_name_or_path=llm_name_or_path,
             trust_remote_code=True, torch_dtype=torch.float16),
    visual_encoder=dict(type=CLIPVisionModel.from_pretrained,
                        pretrained_model_name_or_path=visual_encoder_name_or_path),
    visual_encoder_aux=dict(type=ConvNeXtTower, model_name_or_path=visual_encoder_aux_path),
    use_fusion=True,
    use_object_tokens=True,
    object_pooling='exact')

#######################################################################
#                      PART 3  Dataset & Dataloader                   #
#######################################################################
train_dataset = dict(
    type=MGLLaVADataset,
    data_path=data_path,
    image_folder=image_folder,
    box_json_path=box_json_path,
    offline_processed_text_folder=offline_processed_text_folder,
    tokenizer=tokenizer,
    template=prompt_template,
    max_length=max_length,
    vision_spec=vision_spec,
    num_image_tokens=num_image_tokens,
    on_bad_sample='error')

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    pin_memory=True,
    dataset=train_dataset,
    sampler=dict(type=DefaultSampler, shuffle=True),
    collate_fn=dict(type=mg_llava_collate_fn))

#######################################################################
#                    PART 4  Scheduler & Optimizer                    #
#######################################################################
# AMP (fp16 loss scaling) on GPUs; a plain fp32 OptimWrapper on a CPU-only host (mmengine's AMP asserts there).
optim_wrapper = dict(
    type=AutoAmpOptimWrapper,
    optimizer=dict(type=AdamW, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
    loss_scale='dynamic',
    dtype='float16')

# Warm-up rounded up to >= 2 iterations (mmengine truncates it to 0 or 1 on short runs: crash / lr stuck at 1e-9).
param_scheduler = [
    dict(type=WarmupLR, start_factor=1e-5, by_epoch=True, begin=0, end=warmup_ratio * max_epochs,
         convert_to_iter_based=True),
    dict(type=CosineAfterWarmupLR, eta_min=0.0, by_epoch=True, begin=warmup_ratio * max_epochs, end=max_epochs,
         convert_to_iter_based=True),
]

train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)

#######################################################################
#                           PART 5  Runtime                           #
#######################################################################
# Exact resume: weights-only-loadable checkpoints, RNG state, and a clear stop when optimizer state is missing.
custom_hooks = [dict(type=ExactResumeHook)]

default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=10),
    param_scheduler=dict(type=ParamSchedulerHook),
    # save_optimizer=True: without it `--resume` cannot continue the lr schedule (ExactResumeHook refuses).
    checkpoint=dict(type=CheckpointHook, save_optimizer=True, by_epoch=False, interval=save_steps,
                    max_keep_ckpts=save_total_limit),
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
