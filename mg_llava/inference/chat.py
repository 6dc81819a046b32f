"""Multi-turn chat about one image with an MG-LLaVA model (the CLI is `tools/chat.py`).

The image and its boxes go through the training preprocessing once (`prompt.build_prompt_sample`, i.e.
`preprocess_image` / `preprocess_boxes` with the model's `VisionSpec`: no separate chat resize, unlike the
reference chat, spec §5.3a) and the vision towers run once per session. Each turn tokenises the whole
conversation exactly as training does (`prompt.encode_conversation`) and is answered by `generation.generate`,
the evaluation's path: greedy unless a temperature is given, EOS + one-token STOP_WORDS end a turn; longer stop
words end it too here (a single sequence), through xtuner's criterion.
"""
import json
import sys

import torch
from PIL import Image
from xtuner.utils import IMAGE_TOKEN_INDEX

from mg_llava import compat  # noqa: F401  (CPU shims; inert with CUDA)
from mg_llava.data import load_box_index, load_image
from mg_llava.data.dataset import as_template, expand_visual_slots
from mg_llava.errors import DataError

from .generation import generate, generation_kwargs, stop_word_criteria, to_device
from .prompt import (NO_DETECTIONS, as_spec, build_prompt_sample, collate_prompts, encode_conversation,
                     model_vision_spec)


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
    dict; default the model's (`prompt.model_vision_spec`: what an export records).
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
        spec = as_spec(spec) if spec is not None else model_vision_spec(model)
        if spec is None:
            raise ValueError('no vision spec: pass spec=... (exports carry one)')
        if not isinstance(image, Image.Image):
            image = load_image(image)  # ImageError naming the file
        if model.bbox_projector is None or not spec.image_size_aux:
            if boxes is not None:
                print('note: this model has no object tokens; the boxes are ignored', file=sys.stderr)
            boxes = None
        elif boxes is None:
            boxes = NO_DETECTIONS  # -> one [0,0,0,0] object token, as training does
        self.sample = build_prompt_sample('', image, self.tokenizer, self.template, spec, model.num_image_tokens,
                                          box_entry=boxes)
        self.num_visual_slots = self.sample['input_ids'].count(IMAGE_TOKEN_INDEX)
        data = to_device(collate_prompts([self.sample], self.tokenizer), self.device)
        with torch.no_grad():  # the towers run once; every turn reuses the gathered visual tokens
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
        """The greedy arguments of `generation.generation_kwargs`, plus sampling and, for this single
        sequence, stopping on multi-token stop words."""
        extra = {}
        if self.temperature and self.temperature > 0:
            extra.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        criteria = stop_word_criteria(self.model)
        if criteria is not None:
            extra['stopping_criteria'] = criteria
        extra.update(overrides)
        return generation_kwargs(self.model, max_new_tokens or self.max_new_tokens, **extra)

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
        data = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids, dtype=torch.bool))
        answer, = generate(self.model, data, visual_tokens=self.visual, streamer=streamer, **gen)
        self.history.append((question, answer))
        return answer
