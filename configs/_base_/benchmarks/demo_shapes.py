# The embedded demo's held-out split in benchmark formats (mg_llava.demo.bench_formats writes them under
# .demo/world/bench/), scored by the real benchmark code: multiple choice as MMBench, yes/no as POPE, short
# answers as GQA.
evaluation = dict(
    batch_size=32, dtype='fp32', max_new_tokens=8, num_workers=0,
    benchmarks=[
        dict(name='shapes_mc', benchmark='mmbench', data='.demo/world/bench/shapes_mc.tsv',
             box_file='.demo/world/bench/shapes_mc_boxes.json'),
        dict(name='shapes_pope', benchmark='pope', data='.demo/world/bench/shapes_pope.jsonl',
             image_folder='.demo/world/images', box_file='.demo/world/bench/shapes_pope_boxes.json'),
        dict(name='shapes_short', benchmark='gqa', data='.demo/world/bench/shapes_short.jsonl',
             annotations='.demo/world/bench/shapes_short_gt.json', image_folder='.demo/world/images',
             box_file='.demo/world/bench/shapes_short_boxes.json'),
    ])
