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
max_epochs = 5
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

#######################################################################
#                  PART 6  Evaluation (tools/test.py)                 #
#######################################################################
# The held-out split in benchmark formats (mg_llava.demo.bench_formats), scored by the real benchmark code.
bench_root = data_root + 'bench/'
evaluation = dict(
    batch_size=32, dtype='fp32', max_new_tokens=8, num_workers=0,
    benchmarks=[
        dict(name='shapes_mc', benchmark='mmbench', data=bench_root + 'shapes_mc.tsv',
             box_file=bench_root + 'shapes_mc_boxes.json'),
        dict(name='shapes_pope', benchmark='pope', data=bench_root + 'shapes_pope.jsonl',
             image_folder=image_folder, box_file=bench_root + 'shapes_pope_boxes.json'),
        dict(name='shapes_short', benchmark='gqa', data=bench_root + 'shapes_short.jsonl',
             annotations=bench_root + 'shapes_short_gt.json', image_folder=image_folder,
             box_file=bench_root + 'shapes_short_boxes.json'),
    ])
