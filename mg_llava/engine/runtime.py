"""Runtime pieces the shipped configs name by type: an optimizer wrapper that picks AMP only where it exists,
and a visualizer with an on/off TensorBoard switch."""
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.visualization import LocalVisBackend, TensorboardVisBackend, Visualizer

_AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def _has_amp_device():
    from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
    return is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


class AutoAmpOptimWrapper(AmpOptimWrapper):
    """`AmpOptimWrapper` on a GPU/NPU; on a CPU-only host (where mmengine's AmpOptimWrapper asserts) a plain
    fp32 `OptimWrapper` with the same optimizer, clipping and accumulation, and one log line saying so."""

    def __new__(cls, *args, **kwargs):
        if _has_amp_device():
            return super().__new__(cls)
        print_log('no GPU: mixed precision is off, training with a plain fp32 OptimWrapper', 'current')
        for key in _AMP_ONLY_KEYS:
            kwargs.pop(key, None)
        return OptimWrapper(*args, **kwargs)  # not an instance of cls, so AmpOptimWrapper.__init__ is skipped


class TrainVisualizer(Visualizer):
    """mmengine's Visualizer with the local JSON backend, plus TensorBoard when `tensorboard=True`
    (`--cfg-options visualizer.tensorboard=True`; needs `pip install tensorboard`). Event files go to
    <work_dir>/<timestamp>/vis_data."""

    def __init__(self, name='visualizer', tensorboard=False, vis_backends=None, save_dir=None, **kwargs):
        backends = list(vis_backends or [dict(type=LocalVisBackend)])
        if tensorboard:
            try:
                import tensorboard  # noqa: F401
            except ImportError as e:
                raise ImportError('visualizer.tensorboard=True needs the tensorboard package: '
                                  'pip install tensorboard (or pip install -e .[tensorboard])') from e
            backends.append(dict(type=TensorboardVisBackend))
        super().__init__(name=name, vis_backends=backends, save_dir=save_dir, **kwargs)
