# Embedded demo, stage 1: MG-LLaVA on a synthetic world of coloured shapes (see `make demo`).
# Tiny random-init towers and LLM (built by mg_llava.demo.tiny_assets): nothing is pretrained. The ConvNeXt
# stays frozen as in upstream MG-LLaVA (its random features already separate the shapes; training it through
# the LLM slowed learning); CLIP, projectors, fusion and the LLM train, on CPU. Paths are relative to the
# repository root, where `make demo` runs.
from mmengine.dataset import DefaultSampler
from mmengine.hooks import CheckpointHook, DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.optim import OptimWrapper
from torch.optim import AdamW
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel
from xtuner.engine.runner import TrainLoop
from xtuner.utils import PROMPT_TEMPLATE

from mg_llava.compat import DIST_TIMEOUT, VARLEN_ATTN
from mg_llava.data import MGLLaVADataset, mg_llava_collate_fn
from mg_llava.engine import CosineAfterWarmupLR, ExactResumeHook, WarmupLR
from mg_llava.models import ConvNeXtTower, MGLLaVAModel

#######################################################################
#                          PART 1  Settings                           #
#######################################################################
assets = '.demo/assets/'
llm_name_or_path = assets + 'llm'
tokenizer_name_or_path = assets + 'tokenizer'
visual_encoder_name_or_path = assets + 'clip_vit'
visual_encoder_aux_path = assets + 'convnext'
prompt_template = PROMPT_TEMPLATE.vicuna

data_root = '.demo/world/'
data_path = data_root + 'pretrain.json'
image_folder = data_root + 'images'
box_json_path = data_root + 'boxes.json'

image_size, patch_size, image_size_aux = 56, 14, 128        # 4x4 CLIP tokens; ConvNeXt last stage 4x4
num_image_tokens = (image_size // patch_size) ** 2
max_length = 256
vision_spec = dict(image_size=image_size, image_size_aux=image_size_aux, pad_to_square=True,
                   nms_iou=0.2, limit_num=100, max_objects=100)

batch_size = 16
accumulative_counts = 1
dataloader_num_workers = 0  # 2 CPU cores: loading in the main process measured ~10% faster than 1 worker
max_epochs = 2
lr = 1e-3
betas = (0.9, 0.98)
weight_decay = 0.0
max_norm = 1
warmup_ratio = 0.05
save_steps = 500
save_total_limit = 1

#######################################################################
#            PART 2  Model & Tokenizer & Image Processor              #
#######################################################################
tokenizer = dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=tokenizer_name_or_path)

model = dict(
    type=MGLLaVAModel,
    freeze_llm=False,
    freeze_visual_encoder=False,
    freeze_visual_encoder_aux=True,
    tokenizer=tokenizer,
    template=prompt_template,
    llm=dict(type=AutoModelForCausalLM.from_pretrained, pretrained_model_name_or_path=llm_name_or_path),
    visual_encoder=dict(type=CLIPVisionModel.from_pretrained,
                        pretrained_model_name_or_path=visual_encoder_name_or_path),
    visual_encoder_aux=dict(type=ConvNeXtTower, model_name_or_path=visual_encoder_aux_path),
    use_fusion=True,
    use_object_tokens=True,
    object_pooling='exact',
    object_box_position=True,  # lets the LLM answer left/right from the object tokens (not upstream)
    use_activation_checkpointing=False,
    max_new_tokens=8)

#######################################################################
#                      PART 3  Dataset & Dataloader                   #
#######################################################################
train_dataset = dict(
    type=MGLLaVADataset,
    data_path=data_path,
    image_folder=image_folder,
    box_json_path=box_json_path,
    tokenizer=tokenizer,
    template=prompt_template,
    max_length=max_length,
    vision_spec=vision_spec,
    num_image_tokens=num_image_tokens)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    persistent_workers=dataloader_num_workers > 0,
    pin_memory=False,
    dataset=train_dataset,
    sampler=dict(type=DefaultSampler, shuffle=True),
    collate_fn=dict(type=mg_llava_collate_fn))

#######################################################################
#                    PART 4  Scheduler & Optimizer                    #
#######################################################################
optim_wrapper = dict(
    type=OptimWrapper,  # CPU: no AMP
    optimizer=dict(type=AdamW, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts)

param_scheduler = [
    dict(type=WarmupLR, start_factor=1e-2, by_epoch=True, begin=0, end=warmup_ratio * max_epochs,
         convert_to_iter_based=True),
    dict(type=CosineAfterWarmupLR, eta_min=lr * 0.05, by_epoch=True, begin=warmup_ratio * max_epochs,
         end=max_epochs, convert_to_iter_based=True),
]

train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)

#######################################################################
#                           PART 5  Runtime                           #
#######################################################################
custom_hooks = [dict(type=ExactResumeHook)]
use_varlen_attn = VARLEN_ATTN  # read first by xtuner's train.py: installs mg_llava's shims
default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=50),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(type=CheckpointHook, save_optimizer=True, by_epoch=False, interval=save_steps,
                    max_keep_ckpts=save_total_limit),
    sampler_seed=dict(type=DistSamplerSeedHook),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo', timeout=DIST_TIMEOUT),  # CPU: gloo; DIST_TIMEOUT installs the CPU shims early
)
model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                         find_unused_parameters=False)
visualizer = None
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)
log_processor = dict(by_epoch=False)
