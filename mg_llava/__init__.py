"""mg_llava: MG-LLaVA (and LLaVA-1.5) training on XTuner/MMEngine.

This package module imports nothing, so that the stdlib-only parts (`mg_llava.evaluation`: the offline
scorer `python -m mg_llava.evaluation.score`, metrics, loaders, question files) start without torch.
The CPU shims (`mg_llava.compat`) are installed by the modules that drive torch/mmengine/xtuner:
`mg_llava.models` and `mg_llava.inference.chat` import it, configs import values from it, and scripts that need the
shims before anything else `import mg_llava.compat`.
"""

__version__ = '0.1.0'
