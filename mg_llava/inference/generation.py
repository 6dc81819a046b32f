"""The one generation path of evaluation, chat and the demo: a LEFT-padded batch -> decoded answers.

    data (collate_prompts: input_ids/attention_mask (B,L), pixels, boxes, visual_index)
      -> model.embed_inputs(data)  (B,L,H)          [chat: visual tokens cached across turns]
      -> model.llm.generate(inputs_embeds, attention_mask, greedy, stop at EOS / one-token stop words)
      -> new tokens (B,N) -> decode: cut at the first stop word of the template, strip -> list[str]

Left padding lets every row continue at the same position. With inputs_embeds and no input_ids, HF returns only
the new tokens. Multi-token stop words cannot end one row of a batch early: `decode` cuts them afterwards, and
a single sequence (chat) may also stop on them (`stop_word_criteria`). The model is used through
`embed_inputs`, `llm`, `tokenizer`, `template` and `max_new_tokens` only.
"""
import torch
from transformers import StoppingCriteriaList, TextStreamer
from xtuner.utils import StopWordStoppingCriteria

from .prompt import pad_token_id


def _stop_words(model):
    return (model.template or {}).get('STOP_WORDS', []) or []


def generation_kwargs(model, max_new_tokens=None, **overrides):
    """Greedy `llm.generate` arguments: stop at EOS or a single-token stop word of the template.
    (Multi-token stop words are cut by `decode`; a batch cannot stop on them row by row.)"""
    if model.tokenizer is None:
        raise ValueError('generation needs a tokenizer: pass tokenizer=... to MGLLaVAModel')
    tok = model.tokenizer
    stop_ids = [tok.eos_token_id]
    for word in _stop_words(model):
        ids = tok.encode(word, add_special_tokens=False)
        if len(ids) == 1 and ids[0] not in stop_ids:
            stop_ids.append(ids[0])
    gen = dict(max_new_tokens=max_new_tokens or model.max_new_tokens, do_sample=False, num_beams=1,
               eos_token_id=stop_ids, pad_token_id=pad_token_id(tok), use_cache=True)
    gen.update(overrides)
    return gen


def stop_word_criteria(model):
    """Stopping criteria for the template's multi-token stop words (one sequence only), or None."""
    tok = model.tokenizer
    long_stops = [w for w in _stop_words(model) if len(tok.encode(w, add_special_tokens=False)) > 1]
    return StoppingCriteriaList(StopWordStoppingCriteria(tok, w) for w in long_stops) if long_stops else None


def decode(model, tokens):
    """Generated ids (1-D) -> answer text, cut at the first stop word of the template."""
    text = model.tokenizer.decode(tokens, skip_special_tokens=True)
    for word in _stop_words(model):
        if word and word in text:
            text = text[:text.index(word)]
    return text.strip()


class CallbackStreamer(TextStreamer):
    """A TextStreamer that hands each finalized piece of text to `callback(text)` instead of printing."""

    def __init__(self, tokenizer, callback):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.callback = callback

    def on_finalized_text(self, text, stream_end=False):
        if text:
            self.callback(text)


def as_streamer(streamer, tokenizer):
    """None, an HF streamer (has put/end), or a callable(str) -> something llm.generate accepts."""
    if streamer is None or (hasattr(streamer, 'put') and hasattr(streamer, 'end')):
        return streamer
    if callable(streamer):
        return CallbackStreamer(tokenizer, streamer)
    raise TypeError(f'streamer must be an HF streamer or a callable(str), got {type(streamer).__name__}')


def to_device(data, device):
    """The batch's tensors on `device` (other values as they are)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in data.items()}


@torch.no_grad()
def generate(model, data, max_new_tokens=None, visual_tokens=None, streamer=None, **overrides):
    """Answers (list[str], one per row) for a LEFT-padded batch `data` (input_ids, attention_mask (B,L) and the
    visual inputs of collate_prompts), moved to the LLM's device here.

    visual_tokens: (V,H) already gathered for the batch's visual slots (chat encodes its image once), else the
    pixels of `data` are encoded. streamer: an HF streamer or a callable(str) fed the text as it is generated
    (batch of one). overrides: further `llm.generate` arguments (sampling, stopping_criteria, ...)."""
    gen = generation_kwargs(model, max_new_tokens, **overrides)
    data = to_device(data, next(model.llm.parameters()).device)
    if hasattr(model, 'set_routing'):   # an up-cycled MoE student routes the prompt's real tokens only
        model.set_routing(data['attention_mask'])
    out = model.llm.generate(inputs_embeds=model.embed_inputs(data, visual_tokens=visual_tokens),
                             attention_mask=data['attention_mask'], streamer=as_streamer(streamer, model.tokenizer),
                             **gen)
    return [decode(model, t) for t in out]
