"""TrainLoop: xtuner's (epochs counted in iterations), completing the config's derived values first."""
from xtuner.engine.runner import TrainLoop as XTunerTrainLoop

from .wiring import complete_param_schedulers, complete_train_dataloader


class TrainLoop(XTunerTrainLoop):
    """Before the dataloader is built: the dataset gets the model's tokenizer/template/vision facts, a
    LengthGroupedSampler its per-device batch, and epoch-based schedulers `end = max_epochs` (mmengine would
    take 1: xtuner's loop is iteration-based). See `mg_llava.engine.wiring`."""

    def __init__(self, runner, dataloader, max_iters=None, max_epochs=None, **kwargs):
        cfg = getattr(runner, 'cfg', None)
        if isinstance(dataloader, dict) and cfg is not None and 'model' in cfg:
            dataloader = complete_train_dataloader(cfg, dataloader)
        if max_epochs is not None and isinstance(runner.param_schedulers, (list, dict)):
            complete_param_schedulers(runner.param_schedulers, max_epochs)
        super().__init__(runner, dataloader, max_iters=max_iters, max_epochs=max_epochs, **kwargs)
