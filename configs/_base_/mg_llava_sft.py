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

#######################################################################
#                  PART 6  Evaluation (tools/test.py)                 #
#######################################################################
# One entry per benchmark: `benchmark` picks the reader/prompt/scorer (mg_llava.evaluation.questions),
# `data` is the public file (spec 4.3), `box_file` the detector boxes keyed as that benchmark's ids.
eval_root = data_root + 'eval/'
eval_boxes = data_root + 'bbox_json/eval/'
evaluation = dict(
    batch_size=8, dtype='bf16', max_new_tokens=100, num_workers=4,
    benchmarks=[
        dict(name='MMBench_DEV_EN', benchmark='mmbench', data=eval_root + 'MMBench/MMBench_DEV_EN.tsv',
             box_file=eval_boxes + 'MMBench_DEV_EN.json'),
        dict(name='SEEDBench_IMG', benchmark='seed', data=eval_root + 'SEED/SEEDBench_IMG.tsv',
             box_file=eval_boxes + 'SEEDBench_IMG.json'),
        dict(name='ScienceQA_TEST', benchmark='sqa', data=eval_root + 'ScienceQA/ScienceQA_TEST.tsv',
             box_file=eval_boxes + 'ScienceQA_TEST.json'),
        dict(name='AI2D_TEST', benchmark='ai2d', data=eval_root + 'AI2D/AI2D_TEST.tsv',
             box_file=eval_boxes + 'AI2D_TEST.json'),
        dict(name='MMMU_DEV_VAL', benchmark='mmmu', data=eval_root + 'MMMU/MMMU_DEV_VAL.tsv',
             box_file=eval_boxes + 'MMMU_DEV_VAL.json'),
        dict(name='MMStar', benchmark='mmstar', data=eval_root + 'MMStar/MMStar.tsv',
             box_file=eval_boxes + 'MMStar.json'),
        dict(name='TextVQA_val', benchmark='textvqa', data=eval_root + 'textvqa/llava_textvqa_val_v051_ocr.jsonl',
             annotations=eval_root + 'textvqa/TextVQA_0.5.1_val.json', image_folder=eval_root + 'textvqa/train_images',
             box_file=eval_boxes + 'textvqa_val.json'),
        dict(name='DocVQA_VAL', benchmark='docvqa', data=eval_root + 'DocVQA/DocVQA_VAL.tsv',
             box_file=eval_boxes + 'DocVQA_VAL.json'),
        dict(name='MME', benchmark='mme', data=eval_root + 'MME/MME.tsv', image_folder=eval_root + 'MME/images',
             box_file=eval_boxes + 'MME.json'),
        dict(name='HallusionBench', benchmark='hallusion', data=eval_root + 'HallusionBench/HallusionBench.tsv',
             box_file=eval_boxes + 'HallusionBench.json'),
        dict(name='POPE', benchmark='pope', data=eval_root + 'pope/', image_folder=eval_root + 'pope/val2014',
             box_file=eval_boxes + 'pope.json'),
        dict(name='GQA_testdev', benchmark='gqa', data=eval_root + 'gqa/llava_gqa_testdev_balanced.jsonl',
             annotations=eval_root + 'gqa/testdev_balanced_questions.json', image_folder=eval_root + 'gqa/images',
             box_file=eval_boxes + 'gqa_testdev.json'),
    ])
