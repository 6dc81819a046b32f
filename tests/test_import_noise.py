"""Importing our modules prints no bitsandbytes notice on a CPU host.

The notice ("The installed version of bitsandbytes was compiled without GPU support. ...") is logged by
bitsandbytes' own import. Only QLoRA uses bitsandbytes, so only QLoRA should import it. Third-party imports
also bring it in: mmengine.optim registers bitsandbytes' optimizers when it is imported
(mmengine/optim/optimizer/builder.py), and `import peft` runs `import bitsandbytes` (peft/helpers.py).
`mg_llava.compat` (imported first by `mg_llava.models`) keeps those two import-time imports from seeing
bitsandbytes on hosts without CUDA. (`xtuner train` itself imports mmengine before any of our code, so its
first log line can still be the notice: that import is xtuner's.)
"""
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
NOTICE = 'bitsandbytes was compiled without GPU support'
_REPORT = ("import sys; print('BNB_MODULES', sorted(k for k in sys.modules "
           "if k == 'bitsandbytes' or k.startswith('bitsandbytes.')))")


def _import_and_report(modules):
    code = f"import {', '.join(modules)}; {_REPORT}"
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith('BNB_MODULES')]
    return line, out.stdout + out.stderr


def test_data_detection_and_eval_imports_skip_bitsandbytes():
    """What tools/check_dataset.py, tools/detect_boxes.py and the evaluation loop import: no notice, and no
    bitsandbytes module at all (a failed bitsandbytes import leaves its submodules behind, so those count)."""
    line, output = _import_and_report(['mg_llava.data', 'mg_llava.detection.boxfile', 'mg_llava.detection.owl',
                                       'mg_llava.detection.tagger', 'mg_llava.evaluation.loop', 'mg_llava.templates'])
    assert NOTICE not in output
    assert line == 'BNB_MODULES []'


def test_model_imports_skip_bitsandbytes():
    """mg_llava.models imports mg_llava.compat first, whose finder hides bitsandbytes from the two import-time
    importers on a host without CUDA."""
    line, output = _import_and_report(['mg_llava.models', 'mg_llava.data'])
    assert NOTICE not in output
    assert line == 'BNB_MODULES []'


def test_plain_lora_does_not_ask_for_bitsandbytes(monkeypatch):
    """add_lora on a model that is not quantised keeps peft's LoRA dispatch from importing bitsandbytes
    (peft imports it whenever it is installed, only to recognise quantised layers)."""
    import peft.tuners.lora.model as lora_model
    import torch.nn as nn
    from peft import LoraConfig

    import mg_llava.compat
    from mg_llava.models.policy import add_lora

    def asked(*args, **kwargs):
        raise AssertionError('bitsandbytes was consulted for a model that is not quantised')

    monkeypatch.setattr(lora_model, 'is_bnb_available', asked)
    monkeypatch.setattr(lora_model, 'is_bnb_4bit_available', asked)
    monkeypatch.setattr(mg_llava.compat, 'bitsandbytes_usable', asked)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(4, 4)

        def forward(self, x):
            return self.q_proj(x)

    peft_model = add_lora(Tiny(), dict(type=LoraConfig, r=2, target_modules=['q_proj']), False)
    assert 'lora_A' in dict(peft_model.named_modules())['base_model.model.q_proj']._modules
    assert lora_model.is_bnb_available is asked and lora_model.is_bnb_4bit_available is asked  # restored
