"""Prompt templates that xtuner 0.2.0 lacks or spells differently from the MG-LLaVA fork.

`phi3_chat_mgllava`: the fork's `phi3_chat` (xtuner v0.1.18 fork, `xtuner/utils/templates.py:159-165`). xtuner 0.2.0's
`PROMPT_TEMPLATE.phi3_chat` puts a newline after `<|user|>` and `<|system|>`; the released MG-LLaVA Phi-3
checkpoint was trained without it (spec §0), so Phi-3 configs use this one.

Configs name templates (`template='phi3_chat_mgllava'`); `resolve_template` looks names up here first, then in xtuner.
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


def resolve_template(template):
    """A template name ('vicuna', 'llama3_chat', 'phi3_chat_mgllava', ...) or a template dict -> ConfigDict.

    Names are looked up in PROMPT_TEMPLATE_MG first (the MG-LLaVA fork's spellings), then in xtuner's
    PROMPT_TEMPLATE. None stays None (plain text, no chat template)."""
    if template is None or isinstance(template, ConfigDict):
        return template
    if isinstance(template, dict):
        return ConfigDict(template)
    from xtuner.utils import PROMPT_TEMPLATE
    found = PROMPT_TEMPLATE_MG.get(template) or PROMPT_TEMPLATE.get(template)
    if found is None:
        known = sorted(set(PROMPT_TEMPLATE_MG) | set(PROMPT_TEMPLATE))
        raise ValueError(f'unknown prompt template {template!r}; known: {", ".join(known)}')
    return found


def template_name(template):
    """The registered name of a template dict (for saving), or None when it is a custom one."""
    from xtuner.utils import PROMPT_TEMPLATE
    if isinstance(template, str):
        return template
    for table in (PROMPT_TEMPLATE_MG, PROMPT_TEMPLATE):
        for name, t in table.items():
            if dict(t) == dict(template or {}):
                return name
    return None
