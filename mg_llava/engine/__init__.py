"""Training-engine pieces named by the configs: exact resume, short-run-safe schedules, runtime helpers."""
from .loops import TrainLoop
from .moe_stats import MoEStatsHook
from .resume import ExactResumeHook
from .runtime import AutoAmpOptimWrapper, TrainVisualizer
from .schedulers import CosineAfterWarmupLR, WarmupLR

__all__ = ['TrainLoop', 'MoEStatsHook', 'ExactResumeHook', 'AutoAmpOptimWrapper', 'TrainVisualizer', 'CosineAfterWarmupLR', 'WarmupLR']
