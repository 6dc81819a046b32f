"""Multi-turn chat about one image with an MG-LLaVA model (the CLI is `tools/chat.py`).

The image and its boxes go through the training preprocessing once (`build_prompt_sample`, i.e.
`preprocess_image` / `preprocess_boxes` with the export's `VisionSpec`: no separate chat resize, unlike
the reference chat, spec §5.3a) and the vision towers run once per session. Each turn tokenises the whole
conversation exactly as xtuner tokenises it for training (`template_map_fn` + `encode_fn`):

    [BOS] SYSTEM + INSTRUCTION(<image>\\n q1, round=1) | a1 + SUFFIX | [EOS] | SEP | [BOS] INSTRUCTION(q2, round=2) ...

every piece encoded on its own, BOS/EOS only where training has them (a SUFFIX_AS_EOS template has
neither between rounds). xtuner's chat instead re-encodes the decoded history as one string, which can
tokenise differently from training. Answers are generated like `MGLLaVAModel.generate` (greedy unless a
temperature is given, EOS + one-token STOP_WORDS end a turn; longer stop words use xtuner's criterion).
"""
import json
import sys

import torch
from PIL import Image
from transformers import StoppingCriteriaList, TextStreamer
from xtuner.dataset.utils import get_bos_eos_token_ids
from xtuner.utils import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX, StopWordStoppingCriteria

from . import compat  # noqa: F401  (CPU shims; inert with CUDA)
from .data import DataError, VisionSpec, load_box_index, load_image, mg_llava_collate_fn
from .data.dataset import as_template, expand_visual_slots
from .data.inference import build_prompt_sample

EMPTY_BOXES = dict(boxes=[], scores=[], labels=[])  # -> one [0,0,0,0] object token, as training does


def _encode_input(text, tokenizer):
    """encode_fn's input encoding: split at <image> (-> IMAGE_TOKEN_INDEX), chunks without special tokens."""
    if DEFAULT_IMAGE_TOKEN not in text:
        return tokenizer.encode(text, add_special_tokens=False)
    chunks = text.split(DEFAULT_IMAGE_TOKEN)
    if len(chunks) != 2:
        raise ValueError('one <image> per conversation is supported')
    return (tokenizer.encode(chunks[0], add_special_tokens=False) + [IMAGE_TOKEN_INDEX]
            + tokenizer.encode(chunks[1], add_special_tokens=False))


def encode_conversation(turns, tokenizer, template, system='', with_image=True):
    """turns: [(question, answer), ..., (question, None)] -> input_ids of the prompt for the last question.

    Same ids as `llava_map_fn` -> `template_map_fn` -> `encode_fn` give for the conversation
    ["<image>\\n" + q1, a1, q2, a2, ...] up to (excluding) the last answer; `system` goes before round 1.
    With a final answer instead of None, the full training sequence (answer, [EOS], SEP) is returned.
    """
    template = as_template(template)
    bos, eos = get_bos_eos_token_ids(tokenizer)
    ids, needs_bos = [], True
    for n, (question, answer) in enumerate(turns, 1):
        if DEFAULT_IMAGE_TOKEN in question:
            raise ValueError(f'{DEFAULT_IMAGE_TOKEN} in a question: the session places the image itself')
        text = DEFAULT_IMAGE_TOKEN + '\n' + question.strip() if n == 1 and with_image else question
        if template is not None:
            prompt = template.INSTRUCTION.format(input=text, round=n)
            if n == 1 and system:
                prompt = template.SYSTEM.format(system=system) + prompt
        else:
            prompt = text
        if needs_bos:
            ids += bos
        ids += _encode_input(prompt, tokenizer)
        if answer is None:
            if n != len(turns):
                raise ValueError('only the last turn may lack an answer')
            break
        suffix = (template.get('SUFFIX') or '') if template is not None else ''
        ids += tokenizer.encode(answer + suffix, add_special_tokens=False)
        needs_bos = not (template is not None and template.get('SUFFIX_AS_EOS', False))
        if needs_bos:
            ids += eos
        sep = (template.get('SEP') or '') if template is not None else ''
        if sep:
            ids += tokenizer.encode(sep, add_special_tokens=False)
    return ids


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


def load_box_entry(path, box_id=None):
    """A box json (list of {id, boxes, scores, labels}, or one bare entry) -> the entry for `box_id`
    (may be omitted when the file holds a single entry)."""
    path = str(path)
    if not path.endswith('.jsonl'):
        try:
            with open(path, encoding='utf-8') as f:
                obj = json.load(f)
        except FileNotFoundError:
            raise DataError(path, None, 'box json not found') from None
        except json.JSONDecodeError as e:
            raise DataError(path, f'line {e.lineno}', f'malformed JSON ({e.msg})') from None
        if isinstance(obj, dict):  # one bare entry
            if not all(k in obj for k in ('boxes', 'scores', 'labels')):
                raise DataError(path, None, 'a box entry needs "boxes", "scores" and "labels"')
            if box_id is not None and 'id' in obj and str(obj['id']) != str(box_id):
                raise DataError(path, f'id {box_id!r}', f'the file holds only id {obj["id"]!r}')
            return obj
    index = load_box_index(path)
    if box_id is None:
        if len(index) != 1:
            raise DataError(path, None, f'{len(index)} box entries: pass --box-id to choose one')
        return next(iter(index.values()))
    if str(box_id) not in index:
        some = ', '.join(list(index)[:5])
        raise DataError(path, f'id {box_id!r}', f'no box entry with this id ({len(index)} entries, e.g. {some})')
    return index[str(box_id)]


def detect_boxes(image, detector_dir, tags=None, tagger_dir=None, vocabulary=None, device='cpu'):
    """Box entry {boxes, scores, labels} (original frame) for one PIL image, detected now with
    `mg_llava.detection` (imported only here), as tools/detect_boxes.py does for a box json: OWLv2 queried
    with `tags`, or with the tags a zero-shot CLIP tagger (`tagger_dir` + `vocabulary` file) gives."""
    try:
        from mg_llava.detection.owl import OwlDetector, image_tensor
        if not tags:
            from mg_llava.detection.tagger import ClipTagger, read_vocabulary
    except ImportError as e:
        raise RuntimeError(f'--detector needs mg_llava.detection (OwlDetector, image_tensor, ClipTagger), which '
                           f'cannot be imported: {e}. Use --boxes BOX_JSON (e.g. from tools/detect_boxes.py)') from e
    if not tags and not (tagger_dir and vocabulary):
        raise RuntimeError('the detector needs its queries: --tags TAG ... (or --tagger CLIP_DIR --vocabulary FILE)')
    detector = OwlDetector(detector_dir, device=device)
    if tags:
        tag_list = list(dict.fromkeys(tags))
    else:
        tagger = ClipTagger(tagger_dir, read_vocabulary(vocabulary), device=device)
        tag_list = tagger.tag(1, image_tensor(tagger.image_processor, image)[None])[0]
    pixels = image_tensor(detector.image_processor, image)[None]
    entry, _ = detector.detect(pixels, [tag_list], [image.size])[0]
    return entry


class ChatSession:
    """A conversation about one image (or none) with `model` (an MGLLaVAModel with a tokenizer).

    image: path or PIL image. boxes: box entry {boxes, scores, labels} in the original frame (None: a model
    with object tokens gets the training fallback for "no detections", one empty box). spec: VisionSpec or
    dict; default the export's (`model.export_meta['vision_spec']`, set by `load_hf`).
    """

    def __init__(self, model, image=None, boxes=None, system='', spec=None, max_new_tokens=None,
                 temperature=0.0, top_p=0.75, top_k=40):
        if model.tokenizer is None:
            raise ValueError('chat needs a model with a tokenizer')
        self.model, self.tokenizer, self.template = model, model.tokenizer, as_template(model.template)
        self.system, self.history = system, []
        self.max_new_tokens = max_new_tokens or model.max_new_tokens
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.device = next(model.llm.parameters()).device
        self.sample, self.visual, self.num_visual_slots = None, None, 0
        if image is not None:
            self._encode_image(image, boxes, spec)

    def _encode_image(self, image, boxes, spec):
        model = self.model
        if spec is None:
            spec = (getattr(model, 'export_meta', None) or {}).get('vision_spec')
            if spec is None:
                raise ValueError('no vision spec: pass spec=... (exports made by hf_export carry one)')
        spec = spec if isinstance(spec, VisionSpec) else VisionSpec(**spec)
        if not isinstance(image, Image.Image):
            image = load_image(image)  # ImageError naming the file
        if model.bbox_projector is None or not spec.image_size_aux:
            if boxes is not None:
                print('note: this model has no object tokens; the boxes are ignored', file=sys.stderr)
            boxes = None
        elif boxes is None:
            boxes = EMPTY_BOXES
        self.sample = build_prompt_sample('', image, self.tokenizer, self.template, spec, model.num_image_tokens,
                                          box_entry=boxes)
        self.num_visual_slots = self.sample['input_ids'].count(IMAGE_TOKEN_INDEX)
        data = mg_llava_collate_fn([self.sample], padding_side='left', return_hf_format=True)
        data = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in data.items()}
        with torch.no_grad():
            self.visual = model.encode_visual(data)[data['visual_index']]

    @property
    def num_objects(self):
        return self.num_visual_slots - self.model.num_image_tokens if self.visual is not None else 0

    def reset(self):
        """Forget the conversation (the image stays)."""
        self.history = []

    def input_ids(self, question):
        """Prompt ids for asking `question` next (visual slots expanded to image + object tokens)."""
        ids = encode_conversation(self.history + [(question.strip(), None)], self.tokenizer, self.template,
                                  self.system, with_image=self.visual is not None)
        if self.visual is not None:
            ids, _ = expand_visual_slots(ids, None, self.num_visual_slots)
        return ids

    def generation_kwargs(self, max_new_tokens=None, **overrides):
        """The model's greedy arguments (MGLLaVAModel.generation_kwargs), plus sampling and, for this single
        sequence, stopping on multi-token stop words."""
        gen = self.model.generation_kwargs(max_new_tokens or self.max_new_tokens)
        if self.temperature and self.temperature > 0:
            gen.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        tok = self.tokenizer
        long_stops = [w for w in (self.template or {}).get('STOP_WORDS', []) or []
                      if len(tok.encode(w, add_special_tokens=False)) > 1]
        if long_stops:
            gen['stopping_criteria'] = StoppingCriteriaList(StopWordStoppingCriteria(tok, w) for w in long_stops)
        gen.update(overrides)
        return gen

    @torch.no_grad()
    def ask(self, question, streamer=None, max_new_tokens=None, **generate_kwargs):
        """Answer `question` (next round); `streamer` (HF streamer or callable(str)) gets the text as it is
        generated. The answer is recorded for the following rounds and returned."""
        question = question.strip()
        gen = self.generation_kwargs(max_new_tokens, **generate_kwargs)
        ids = self.input_ids(question)
        limit = getattr(self.model.llm.config, 'max_position_embeddings', None)
        if limit and len(ids) + gen['max_new_tokens'] > limit and self.history:
            print(f'note: the conversation exceeds the context ({limit} tokens): history cleared',
                  file=sys.stderr)
            self.reset()
            ids = self.input_ids(question)
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        embeds = self.model.embed_inputs({'input_ids': input_ids}, visual_tokens=self.visual)
        out = self.model.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask,
                                      streamer=as_streamer(streamer, self.tokenizer), **gen)
        answer = self.model.decode(out[0])
        self.history.append((question, answer))
        return answer
