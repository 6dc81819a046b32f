# MG-LLaVA stage 2 (instruction tuning): full LLM fine-tuning plus the adapters of stage 1, which are
# loaded from `pretrained_pth` (the stage-1 checkpoint; script/pipeline.sh wires it in automatically).
from mmengine.config import read_base
from xtuner.dataset.samplers import LengthGroupedSampler

with read_base():
    from .mg_llava_pretrain import *  # noqa: F401,F403

#######################################################################
#                          PART 1  Settings                           #
#######################################################################
pretrained_pth = 'work_dirs/mg_llava_vicuna7b_pretrain'  # a checkpoint, or a work dir (its last_checkpoint)
data_path = data_root + 'llava_data/LLaVA-Instruct-150K/llava_v1_5_mix665k.json'
image_folder = data_root + 'llava_data/llava_images'
box_json_path = data_root + 'bbox_json/train/sft_box.json'
batch_size = 16
lr = 2e-5
save_steps = 1000
save_total_limit = 1

#######################################################################
#            PART 2  Model & Tokenizer & Image Processor              #
#######################################################################
model.update(freeze_llm=False, pretrained_pth=pretrained_pth)

#######################################################################
#                      PART 3  Dataset & Dataloader                   #
#######################################################################
train_dataset.update(data_path=data_path, image_folder=image_folder, box_json_path=box_json_path)
train_dataloader.update(batch_size=batch_size, dataset=train_dataset)
# Assigned, not update()d: ConfigDict.update merges nested dicts and would keep DefaultSampler's `shuffle`,
# which LengthGroupedSampler does not accept.
train_dataloader.sampler = dict(type=LengthGroupedSampler, length_property='modality_length',
                                per_device_batch_size=batch_size * accumulative_counts)

#######################################################################
#                    PART 4  Scheduler & Optimizer                    #
#######################################################################
optim_wrapper.optimizer.update(lr=lr)

#######################################################################
#                           PART 5  Runtime                           #
#######################################################################
default_hooks.checkpoint.update(interval=save_steps, max_keep_ckpts=save_total_limit)
