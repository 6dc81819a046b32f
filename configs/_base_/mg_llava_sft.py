# MG-LLaVA stage 2 (instruction tuning): full LLM fine-tuning plus the adapters of stage 1, which are
# loaded from `pretrained_pth` (the stage-1 checkpoint; script/pipeline.sh wires it in automatically).
from mmengine.config import read_base
from xtuner.dataset.samplers import LengthGroupedSampler

with read_base():
    from .benchmarks.standard import *  # noqa: F401,F403  (evaluation: tools/test.py)
    from .mg_llava_pretrain import *  # noqa: F401,F403

#######################################################################
#                               PART 1  Model                         #
#######################################################################
# pretrained_pth: a checkpoint, or a work dir (the model follows its last_checkpoint)
model.update(freeze_llm=False, pretrained_pth='work_dirs/mg_llava_vicuna7b_pretrain')

#######################################################################
#                      PART 2  Dataset & Dataloader                   #
#######################################################################
train_dataloader.update(batch_size=16)
train_dataloader.dataset.update(data_path='data/llava_data/LLaVA-Instruct-150K/llava_v1_5_mix665k.json',
                                image_folder='data/llava_data/llava_images',
                                box_json_path='data/bbox_json/train/sft_box.json')
# Assigned, not update()d: ConfigDict.update merges nested dicts and would keep DefaultSampler's `shuffle`,
# which LengthGroupedSampler does not accept. per_device_batch_size = batch_size x accumulation (filled in).
train_dataloader.sampler = dict(type=LengthGroupedSampler, length_property='modality_length')
# Packing (README "Packing"): train_dataloader.dataset.update(pack_to_max_length=True, max_packed_length=4096) with
# batch_size counting rows; off until GPU figures (timing/gpu_check.sh) say where it pays.

#######################################################################
#                    PART 3  Scheduler & Optimizer                    #
#######################################################################
optim_wrapper.optimizer.update(lr=2e-5)

#######################################################################
#                           PART 4  Runtime                           #
#######################################################################
default_hooks.checkpoint.update(interval=1000, max_keep_ckpts=1)
