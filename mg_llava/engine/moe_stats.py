"""MoEStatsHook: an up-cycled student's routing in the training log (per-layer expert load and dropped-token
fraction of the last batch), at the logger's interval; scalars.json / TensorBoard get them like the losses."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mg_llava.models.moe import routing_stats


class MoEStatsHook(Hook):
    """interval: every N training iterations (default: the logger's)."""
    priority = 'BELOW_NORMAL'   # before the LoggerHook (priority LOW) writes the iteration's line

    def __init__(self, interval=None):
        self.interval = interval

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        interval = self.interval or _logger_interval(runner)
        if not self.every_n_train_iters(runner, interval):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        student = getattr(model, 'student', model)
        for key, value in routing_stats(student.llm).items():
            runner.message_hub.update_scalar(f'train/{key}', value)


def _logger_interval(runner):
    for hook in runner.hooks:
        if type(hook).__name__ == 'LoggerHook':
            return hook.interval
    return 10
