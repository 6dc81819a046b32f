"""mg_llava: MG-LLaVA (and LLaVA-1.5) training on XTuner/MMEngine."""
from . import compat  # noqa: F401  (CPU shims; inert with CUDA)

__version__ = '0.1.0'
