# Embedded demo, stage 2: instruction tuning on the synthetic world's questions, starting from stage 1
# (`pretrained_pth`, wired in by script/pipeline.sh).
from mmengine.config import read_base

with read_base():
    from .mg_llava_demo_pretrain import *  # noqa: F401,F403

#######################################################################
#                          PART 1  Settings                           #
#######################################################################
pretrained_pth = '.demo/work/pretrain'  # a checkpoint, or a work dir (its last_checkpoint)
data_path = data_root + 'sft.json'
max_epochs = 6
lr = 1e-3

#######################################################################
#            PART 2  Model & Tokenizer & Image Processor              #
#######################################################################
model.update(pretrained_pth=pretrained_pth)

#######################################################################
#                      PART 3  Dataset & Dataloader                   #
#######################################################################
train_dataset.update(data_path=data_path)
train_dataloader.update(dataset=train_dataset)

#######################################################################
#                    PART 4  Scheduler & Optimizer                    #
#######################################################################
optim_wrapper.optimizer.update(lr=lr)
param_scheduler[0].update(end=warmup_ratio * max_epochs)
param_scheduler[1].update(begin=warmup_ratio * max_epochs, end=max_epochs, eta_min=lr * 0.05)
train_cfg.update(max_epochs=max_epochs)
