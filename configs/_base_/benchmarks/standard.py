# The standard benchmarks (tools/test.py, script/eval.sh): one entry per benchmark. `benchmark` picks the
# reader/prompt/scorer (mg_llava.evaluation's registry), `data` is the public file (spec 4.3), `annotations`
# the official answers where they are separate, `box_file` the detector boxes keyed as that benchmark's ids.
# An SFT config imports this list with `read_base()`; a child re-points an entry with
# `evaluation.benchmarks[i].update(...)` or replaces the list.
evaluation = dict(
    batch_size=8, dtype='bf16', max_new_tokens=100, num_workers=4,
    benchmarks=[
        dict(name='MMBench_DEV_EN', benchmark='mmbench', data='data/eval/MMBench/MMBench_DEV_EN.tsv',
             box_file='data/bbox_json/eval/MMBench_DEV_EN.json'),
        dict(name='SEEDBench_IMG', benchmark='seed', data='data/eval/SEED/SEEDBench_IMG.tsv',
             box_file='data/bbox_json/eval/SEEDBench_IMG.json'),
        dict(name='ScienceQA_TEST', benchmark='sqa', data='data/eval/ScienceQA/ScienceQA_TEST.tsv',
             box_file='data/bbox_json/eval/ScienceQA_TEST.json'),
        dict(name='AI2D_TEST', benchmark='ai2d', data='data/eval/AI2D/AI2D_TEST.tsv',
             box_file='data/bbox_json/eval/AI2D_TEST.json'),
        dict(name='MMMU_DEV_VAL', benchmark='mmmu', data='data/eval/MMMU/MMMU_DEV_VAL.tsv',
             box_file='data/bbox_json/eval/MMMU_DEV_VAL.json'),
        dict(name='MMStar', benchmark='mmstar', data='data/eval/MMStar/MMStar.tsv',
             box_file='data/bbox_json/eval/MMStar.json'),
        dict(name='TextVQA_val', benchmark='textvqa', data='data/eval/textvqa/llava_textvqa_val_v051_ocr.jsonl',
             annotations='data/eval/textvqa/TextVQA_0.5.1_val.json', image_folder='data/eval/textvqa/train_images',
             box_file='data/bbox_json/eval/textvqa_val.json'),
        dict(name='DocVQA_VAL', benchmark='docvqa', data='data/eval/DocVQA/DocVQA_VAL.tsv',
             box_file='data/bbox_json/eval/DocVQA_VAL.json'),
        dict(name='MME', benchmark='mme', data='data/eval/MME/MME.tsv', image_folder='data/eval/MME/images',
             box_file='data/bbox_json/eval/MME.json'),
        dict(name='HallusionBench', benchmark='hallusion', data='data/eval/HallusionBench/HallusionBench.tsv',
             box_file='data/bbox_json/eval/HallusionBench.json'),
        dict(name='POPE', benchmark='pope', data='data/eval/pope/', image_folder='data/eval/pope/val2014',
             box_file='data/bbox_json/eval/pope.json'),
        dict(name='GQA_testdev', benchmark='gqa', data='data/eval/gqa/llava_gqa_testdev_balanced.jsonl',
             annotations='data/eval/gqa/testdev_balanced_questions.json', image_folder='data/eval/gqa/images',
             box_file='data/bbox_json/eval/gqa_testdev.json'),
    ])
