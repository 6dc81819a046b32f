from .. import compat  # noqa: F401  (CPU shims, before mmengine/xtuner/peft run; inert with CUDA)
from .configuration import MGLLaVAConfig
from .fusion import ConvGateFusion
from .mg_llava_model import MGLLaVAModel
from .object_pooling import pool_object_features
from .policy import TrainingPolicy
from .projector import MLPProjector
from .towers import ConvNeXtTower, low_res_features

__all__ = ['ConvGateFusion', 'ConvNeXtTower', 'MGLLaVAConfig', 'MGLLaVAModel', 'MLPProjector', 'TrainingPolicy',
           'low_res_features', 'pool_object_features']
