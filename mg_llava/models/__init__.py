from .. import compat  # noqa: F401  (CPU shims, before mmengine/xtuner/peft run; inert with CUDA)
from .fusion import ConvGateFusion
from .hf_export import load_hf
from .mg_llava_model import MGLLaVAModel
from .object_pooling import pool_object_features
from .projector import MLPProjector
from .towers import ConvNeXtTower, low_res_features

__all__ = ['ConvGateFusion', 'ConvNeXtTower', 'MGLLaVAModel', 'MLPProjector', 'load_hf', 'low_res_features',
           'pool_object_features']
