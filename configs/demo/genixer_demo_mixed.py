# Genixer demo, the comparison: the labelled-only recipe (genixer_demo_labelled.py, from the same stage-1
# checkpoint) on the labelled samples plus the judge-filtered generated ones (tools/mix_data.py -> mixed.json).
from mmengine.config import read_base

with read_base():
    from .genixer_demo_labelled import *  # noqa: F401,F403

train_dataloader.dataset.update(data_path='.demo/genixer/mixed.json', box_json_path='.demo/genixer/mixed.boxes.json')
