"""The judge filter's score (spec A.6): how likely a judge model finds a generated QA true for its image.

    P(Yes) = softmax over the first answer token's logits restricted to {Yes, No}
           = sigmoid(logsumexp(logits[yes ids]) - logsumexp(logits[no ids]))
one greedy forward pass per batch, deterministic. The reference (Genixer's Fuyu filter) instead samples up to 10
tokens and scores exp(sum of the sampled tokens' log-probs) ** (1 / (T - 1)): a confidence in whatever was said
(Yes or No), not P(Yes), and its exponent leaves out the last token that the product includes (T = 1 divides
by zero, and the reference silently drops the sample). `geomean_score` reproduces it behind
`score='reference_geomean'` for comparison. Samples are kept when lo <= score <= hi (default 0.5-0.7, the band
the Genixer README reports as the most useful: higher scores are mostly easy samples).

`score='answer'` is not Genixer's: round-trip consistency. The judge is asked the generated question itself and the
score is its probability of the generated answer (teacher-forced, geometric mean over the answer's tokens, one
forward). A judge that answers the task's questions well but was never taught Genixer's quoted Yes/No prompt can
filter this way (the demo's judge: a 4-layer LLM that does not learn that prompt within the demo's budget).
"""
import math

JUDGE_PROMPT = ("Here is a question and answer pair. Is '{qa}' true for this image?\n"
                "Please answer this question with Yes or No.")
YES_WORDS = ('Yes', ' Yes')
NO_WORDS = ('No', ' No')
DEFAULT_BAND = (0.5, 0.7)


def judge_prompt(question, answer):
    return JUDGE_PROMPT.format(qa=f'Question: {question.strip()} Answer: {answer.strip()}')


def yes_no_ids(tokenizer):
    """The first token ids of "Yes"/" Yes" and "No"/" No" -> (yes ids, no ids); a clear error when they overlap
    or a tokenizer cannot tell them apart."""
    def first_ids(words):
        ids = []
        for w in words:
            enc = tokenizer.encode(w, add_special_tokens=False)
            if enc and enc[0] not in ids:
                ids.append(enc[0])
        return ids
    yes, no = first_ids(YES_WORDS), first_ids(NO_WORDS)
    if not yes or not no or set(yes) & set(no):
        raise ValueError(f'the judge tokenizer cannot tell Yes {yes} from No {no} by their first token')
    return yes, no


def p_yes(logits, yes_ids, no_ids):
    """logits (B, V) of the first answer token -> P(Yes) (B,), in float32."""
    import torch
    logits = logits.float()
    yes = torch.logsumexp(logits[:, list(yes_ids)], dim=-1)
    no = torch.logsumexp(logits[:, list(no_ids)], dim=-1)
    return torch.sigmoid(yes - no)


def geomean_score(token_logprobs):
    """The reference's score of one sampled answer: exp(sum(log p_t)) ** (1 / (T - 1)) over its T tokens (the
    exponent's off-by-one kept). ValueError for T < 2 (the reference divides by zero and skips the sample)."""
    n = len(token_logprobs)
    if n < 2:
        raise ValueError(f'{n} generated token(s): the reference score divides by zero (T - 1 = {n - 1})')
    return math.exp(sum(token_logprobs)) ** (1.0 / (n - 1))


def in_band(score, band=DEFAULT_BAND):
    """lo <= score <= hi (both edges kept)."""
    lo, hi = band
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f'band {band}: need 0 <= lo <= hi <= 1')
    return lo <= score <= hi


def left_padded_positions(mask):
    """Position ids of a LEFT-padded batch as `generate` makes them: each row counts from 0 at its first real token
    (without them a padded row's tokens would sit at shifted RoPE positions and score differently)."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def judge_hidden(model, data):
    """A LEFT-padded prompt batch (inference.prompt.collate_prompts) -> the decoder's last hidden states (B, L, H),
    no LM head (callers apply it where they read logits)."""
    import torch

    from mg_llava.inference.generation import to_device
    with torch.no_grad():
        data = to_device(data, next(model.llm.parameters()).device)
        if hasattr(model, 'set_routing'):
            model.set_routing(data['attention_mask'])
        mask = data['attention_mask']
        return model.llm.get_decoder()(inputs_embeds=model.embed_inputs(data), attention_mask=mask,
                                       position_ids=left_padded_positions(mask)).last_hidden_state


def first_token_logits(model, data):
    """The LLM's next-token logits (B, V) at the last position of a left-padded prompt batch only."""
    import torch
    with torch.no_grad():
        return model.llm.get_output_embeddings()(judge_hidden(model, data)[:, -1])


def answer_logprobs(model, data, answer_lengths):
    """Round-trip consistency: rows = prompt + the generated answer's n_b tokens at the end (left padding) ->
    (B,) mean log-probability per answer token under the model, teacher-forced; the LM head runs on the answer
    positions only. answer_lengths: (B,) LongTensor."""
    import torch
    hidden = judge_hidden(model, data)
    B, L = data['input_ids'].shape
    n = answer_lengths.to(hidden.device)
    k = torch.arange(int(n.max()), device=hidden.device)
    valid = k[None] < n[:, None]                                         # (B, m)
    target_pos = (L - n[:, None] + k[None]).clamp(max=L - 1)            # answer token k of row b
    rows = torch.arange(B, device=hidden.device)[:, None]
    with torch.no_grad():
        logp = model.llm.get_output_embeddings()(hidden[rows, target_pos - 1]).float().log_softmax(-1)
    targets = data['input_ids'].to(hidden.device)[rows, target_pos]
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return (picked * valid).sum(1) / n.clamp(min=1)


def answer_step(answer_lengths):
    """A `predict` step for --score answer: batch -> [exp(mean log p(answer token))] (the judge's own probability
    of the generated answer to the generated question; answer_lengths: {id: number of answer tokens})."""
    import torch

    def step(model, data):
        n = torch.tensor([answer_lengths[i] for i in data['ids']])
        return torch.exp(answer_logprobs(model, data, n)).tolist()
    return step


class AnswerPromptBuilder:
    """question dict with 'answer' -> the prompt sample (a SampleBuilder's) with the answer's tokens appended,
    encoded on their own without special tokens as training encodes an answer."""

    def __init__(self, build, tokenizer):
        self.build, self.tokenizer = build, tokenizer

    def __call__(self, q):
        sample = self.build(q)
        sample['input_ids'] = list(sample['input_ids']) + answer_ids(self.tokenizer, q['answer'])
        return sample


def answer_ids(tokenizer, answer):
    return tokenizer.encode(answer.strip(), add_special_tokens=False)


def p_yes_step(tokenizer):
    """A `predict` step: batch -> [P(Yes)] (floats, one greedy forward, last position only)."""
    yes, no = yes_no_ids(tokenizer)
    return lambda model, data: p_yes(first_token_logits(model, data), yes, no).tolist()


def reference_step(seed=0, max_new_tokens=10):
    """A `predict` step reproducing the reference's score: sample up to 10 tokens (top-p 0.95, top-k 10), then
    geomean_score over the log-softmax of the processed scores of the sampled tokens up to the first stop token
    (included). -> [{'score': float or None (fewer than 2 tokens), 'said': decoded text}]. Stochastic by design;
    seeded per batch (by seed and the batch's first id)."""
    import zlib

    import torch

    from mg_llava.inference.generation import decode, generation_kwargs, to_device

    def step(model, data):
        torch.manual_seed(zlib.crc32(f'{seed}/{data["ids"][0]}'.encode()))
        gen = generation_kwargs(model, max_new_tokens, do_sample=True, top_p=0.95, top_k=10,
                                return_dict_in_generate=True, output_scores=True)
        stops = set(gen['eos_token_id'])
        data = to_device(data, next(model.llm.parameters()).device)
        if hasattr(model, 'set_routing'):
            model.set_routing(data['attention_mask'])
        with torch.no_grad():
            out = model.llm.generate(inputs_embeds=model.embed_inputs(data), attention_mask=data['attention_mask'],
                                     **gen)
        seqs = out.sequences[:, -len(out.scores):]
        logprobs = torch.stack([torch.log_softmax(s.float(), -1).gather(1, seqs[:, t:t + 1])[:, 0]
                                for t, s in enumerate(out.scores)], 1)
        rows = []
        for b in range(seqs.shape[0]):
            toks = seqs[b].tolist()
            end = next((t + 1 for t, tok in enumerate(toks) if tok in stops), len(toks))
            try:
                score = geomean_score(logprobs[b, :end].tolist())
            except ValueError:
                score = None
            rows.append({'score': score, 'said': decode(model, seqs[b, :end])})
        return rows
    return step
