"""Prompt templates that xtuner 0.2.0 lacks or spells differently from the MG-LLaVA fork.

`phi3_chat_mgllava`: the fork's `phi3_chat` (xtuner v0.1.18 fork, `xtuner/utils/templates.py:159-165`). xtuner 0.2.0's
`PROMPT_TEMPLATE.phi3_chat` puts a newline after `<|user|>` and `<|system|>`; the released MG-LLaVA Phi-3
checkpoint was trained without it (spec §0), so Phi-3 configs use this one.

A ConfigDict (like xtuner's PROMPT_TEMPLATE) so that configs can write `PROMPT_TEMPLATE_MG.phi3_chat_mgllava`.
"""
from mmengine.config import ConfigDict

PROMPT_TEMPLATE_MG = ConfigDict(
    phi3_chat_mgllava=ConfigDict(
        SYSTEM='<|system|>{system}<|end|>\n',
        INSTRUCTION='<|user|>{input}<|end|>\n<|assistant|>\n',
        SUFFIX='<|end|>',
        SUFFIX_AS_EOS=True,
        SEP='\n',
        STOP_WORDS=['<|end|>'],
    ),
)
