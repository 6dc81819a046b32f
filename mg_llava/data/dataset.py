"""LLaVA-format conversations + offline detector boxes -> model-ready samples.

One sample, from json line to collate input:
  conversations --llava_map_fn/template_map_fn/encode_fn (xtuner, byte-identical prompts)--> input_ids with one
  IMAGE_TOKEN_INDEX, labels; image file + box entry (joined on `id`) --preprocess_image/preprocess_boxes--> views,
  boxes in the high-res frame; the <image> token is expanded to T image + n_obj object slots (labels -100).
Tokenisation runs once at build time (or is read from `offline_processed_text_folder`); so does the
length used for grouping (text + T + estimated object tokens).
"""
import json
import logging
import os.path as osp

import numpy as np
import torch
from mmengine.logging import print_log
from xtuner.dataset.map_fns import llava_map_fn, template_map_fn
from xtuner.dataset.utils import encode_fn
from xtuner.registry import BUILDER
from xtuner.utils import IGNORE_INDEX, IMAGE_TOKEN_INDEX

from mg_llava.errors import BoxError, DataError, ImageError
from mg_llava.templates import resolve_template

from .packing import pack_indices, packing_stats
from .preprocess import VisionSpec, load_image, preprocess_boxes, preprocess_image

# The user's switch, named by every bad-sample error.
SKIP_HINT = ("to skip bad samples instead, set on_bad_sample='skip' in the config's train_dataloader.dataset "
             "(or pass --cfg-options train_dataloader.dataset.on_bad_sample=skip)")


def read_records(path):
    """A LLaVA .json list or .jsonl file -> list of dicts; malformed lines name file and line."""
    path = str(path)
    with open(path, encoding='utf-8') as f:
        if path.endswith('.jsonl'):
            records = []
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(path, f'line {lineno}', f'malformed JSON ({e.msg})') from None
            return records
        try:
            records = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(path, f'line {e.lineno}', f'malformed JSON ({e.msg})') from None
    if not isinstance(records, list):
        raise DataError(path, None, 'expected a JSON list of samples')
    return records


def describe_duplicate(positions):
    """[3, 17] -> 'entries #3 and #17 (0-based, in file order) have this id'."""
    shown = [f'#{p}' for p in positions]
    return f'entries {", ".join(shown[:-1])} and {shown[-1]} (0-based, in file order) have this id'


def load_box_index(path, duplicates=None):
    """Box json (a .json list, or .jsonl lines, of {id, boxes, scores, labels}) -> {str(id): entry}, validated.

    An id must appear once: a repeat would silently replace the earlier entry. duplicates=None -> a repeated
    id raises DataError naming the id and both (all) positions; a dict -> filled with {str(id): [positions]}
    for every repeated id, and ALL entries of those ids are left out of the index (which one is right is unknown).
    """
    records = read_records(path)
    index, repeated = {}, []
    for i, e in enumerate(records):
        if not isinstance(e, dict) or 'id' not in e:
            raise DataError(path, f'entry {i}', 'box entry without "id"')
        n = len(e.get('boxes', []))
        if len(e.get('labels', [])) != n or len(e.get('scores', [])) != n:
            raise DataError(path, f'id {e["id"]!r}', 'boxes, scores and labels differ in length')
        key = str(e['id'])
        if key in index:
            repeated.append(key)
        index[key] = e
    if not repeated:   # the common case costs one dict lookup per entry; positions are found only when needed
        return index
    where = {key: [] for key in repeated}
    for i, e in enumerate(records):
        if str(e['id']) in where:
            where[str(e['id'])].append(i)
    if duplicates is None:
        key = next(iter(where))
        raise DataError(path, f'id {key!r}', f'duplicated box id: {describe_duplicate(where[key])}; '
                                             f'{len(where)} duplicated id(s) in total, each id must appear once')
    duplicates.update(where)
    for key in where:
        del index[key]
    return index


def as_template(template):
    """A template name ('vicuna') or dict -> ConfigDict (mg_llava.templates.resolve_template)."""
    return resolve_template(template)


def tokenize_conversation(record, tokenizer, template, max_length):
    """One LLaVA record -> dict(input_ids, labels, error). Never raises: errors are reported by the caller."""
    try:
        conv = llava_map_fn({'conversations': [dict(m) for m in record['conversations']]})
        conv = template_map_fn(conv, template)
        out = encode_fn(conv, tokenizer, max_length, with_image_token=True)
    except Exception as e:  # noqa: BLE001 - turned into a DataError naming the sample
        return dict(input_ids=[], labels=[], error=f'cannot tokenise conversation: {type(e).__name__}: {e}')
    n_img = out['input_ids'].count(IMAGE_TOKEN_INDEX)
    error = ''
    if not conv['conversation']:
        error = 'no supervised token: the conversation has no "gpt" answer turn'
    elif record.get('image') is not None and n_img != 1:
        error = ('the <image> token was cut by max_length' if n_img == 0 else f'{n_img} <image> tokens')
    elif record.get('image') is None and n_img:
        error = '<image> token in a sample without "image"'
    elif all(x == IGNORE_INDEX for x in out['labels']):
        error = 'no supervised token (answer empty or cut by max_length: the loss would silently be 0)'
    return dict(out, error=error)


class MGLLaVADataset(torch.utils.data.Dataset):
    """Args:
        data_path: LLaVA .json/.jsonl. image_folder: root of the `image` paths.
        tokenizer: dict(type=AutoTokenizer.from_pretrained, ...) or a tokenizer. template: a name ('vicuna') or dict.
        max_length: text-token budget (the <image> token is never cut: a sample that would lose it is bad input).
        vision_spec: dict for VisionSpec (sizes, box policy). num_image_tokens: T per image (e.g. 576).
        box_json_path: offline boxes joined on `id` (MG-LLaVA object tokens); None = no object tokens.
        on_bad_sample: 'error' (raise, naming file and id) or 'skip' (count, warn, use the next sample).
        pack_to_max_length: items are packs of samples filling max_packed_length tokens (text + visual; default
            max_length) instead of single samples (data/packing.py); pack_oversize: 'error' or 'own_row' for a
            sample longer than the budget. In skip mode a bad sample is dropped from its pack (nothing replaces it:
            a substitute could overflow the budget).
    """

    def __init__(self, data_path, image_folder, tokenizer=None, template=None, max_length=1472, vision_spec=None,
                 num_image_tokens=576, box_json_path=None, offline_processed_text_folder=None,
                 on_bad_sample='error', map_num_proc=1, pack_to_max_length=False, max_packed_length=None,
                 pack_oversize='error'):
        if tokenizer is None or template is None:
            raise ValueError('MGLLaVADataset needs the model\'s tokenizer and template. A training config gives them '
                             'in `model` only and the run fills them in; to build the dataset outside a run use '
                             '`mg_llava.engine.wiring.complete_dataset(cfg.train_dataloader.dataset, cfg.model)`')
        if on_bad_sample not in ('error', 'skip'):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.data_path, self.image_folder, self.max_length = data_path, image_folder, max_length
        self.spec = VisionSpec(**dict(vision_spec or {}))
        self.num_image_tokens, self.on_bad_sample = num_image_tokens, on_bad_sample
        self.tokenizer = BUILDER.build(tokenizer) if isinstance(tokenizer, dict) else tokenizer
        self.template = as_template(template)
        self.box_json_path, self.skipped, self.box_duplicates = box_json_path, {}, {}
        self.boxes = None
        if box_json_path and self.spec.image_size_aux:
            self.boxes = load_box_index(box_json_path, self.box_duplicates)
            self._report_box_duplicates()
        if offline_processed_text_folder:
            from datasets import load_from_disk
            text = load_from_disk(offline_processed_text_folder)
        else:
            text = self.tokenize(read_records(data_path), map_num_proc)
        self.text, self.problems = self._drop_bad_text(text)
        self.modality_length = self._modality_lengths()
        self.packs = None
        if pack_to_max_length:
            budget = max_packed_length or max_length
            lengths = [abs(n) for n in self.modality_length]
            self.packs = pack_indices(lengths, budget, pack_oversize, ids=self.text['id'], source=data_path)
            stats = packing_stats(lengths, self.packs, budget)
            print_log(f'{data_path}: {stats["samples"]} samples packed into {stats["rows"]} rows of <= {budget} '
                      f'tokens ({100 * stats["fill"]:.1f}% filled)', 'current')
            # a length-grouping sampler sees packs: their summed lengths, all marked multimodal
            self.modality_length = [sum(lengths[i] for i in p) for p in self.packs]

    # ---------------------------------------------------------------- build time
    def tokenize(self, records, num_proc=1):
        """Records -> HF Dataset with input_ids/labels/error (what an offline text folder stores)."""
        from datasets import Dataset
        rows = []
        for i, r in enumerate(records):
            if not isinstance(r, dict) or 'conversations' not in r or 'id' not in r:
                rows.append(dict(id=str(r.get('id', f'#{i}')) if isinstance(r, dict) else f'#{i}', image=None,
                                 conversations='[]', error='sample needs "id" and "conversations"'))
                continue
            if isinstance(r.get('image'), list):
                rows.append(dict(id=str(r['id']), image=None, conversations='[]',
                                 error='one image per sample is supported'))
                continue
            rows.append(dict(id=str(r['id']), image=r.get('image'), conversations=json.dumps(r['conversations']),
                             error=''))
        tok, tmpl, max_len = self.tokenizer, self.template, self.max_length

        def fn(row):
            if row['error']:
                return dict(input_ids=[], labels=[], error=row['error'])
            rec = dict(image=row['image'], conversations=json.loads(row['conversations']))
            return tokenize_conversation(rec, tok, tmpl, max_len)

        ds = Dataset.from_list(rows)
        return ds.map(fn, num_proc=num_proc if num_proc > 1 else None, desc='tokenise')

    def _report_box_duplicates(self):
        """Repeated box ids: an error, or (skip mode) their samples are skipped like other bad samples."""
        if not self.box_duplicates:
            return
        key, positions = next(iter(self.box_duplicates.items()))
        if self.on_bad_sample == 'error':
            raise DataError(self.box_json_path, f'id {key!r}',
                            f'duplicated box id: {describe_duplicate(positions)}; {len(self.box_duplicates)} '
                            f'duplicated id(s) in total, each id must appear once; {SKIP_HINT}')
        print_log(f'{self.box_json_path}: {len(self.box_duplicates)} duplicated box ids (e.g. {key!r}: '
                  f'{describe_duplicate(positions)}); their samples are skipped', 'current', level=logging.WARNING)

    def _drop_bad_text(self, text):
        errors = text['error'] if 'error' in text.column_names else [''] * len(text)
        bad = [i for i, e in enumerate(errors) if e]
        problems = [(text[i]['id'], errors[i]) for i in bad]
        if problems and self.on_bad_sample == 'error':
            sid, why = problems[0]
            raise DataError(self.data_path, f'id {sid!r}',
                            f'{why} ({len(problems)} bad samples in total); {SKIP_HINT}')
        for sid, why in problems:
            self.skipped[why] = self.skipped.get(why, 0) + 1
        if problems:
            print_log(f'{self.data_path}: skipped {len(problems)} bad samples: {self.skipped}', 'current',
                      level=logging.WARNING)
            keep = sorted(set(range(len(text))) - set(bad))
            text = text.select(keep)
        return text, problems

    def _modality_lengths(self):
        """Grouping length = text + T + object tokens (bounded estimate from the raw box count); negative = text-only."""
        lengths = np.array([len(x) for x in self.text['input_ids']], dtype=np.int64)
        has_image = np.array([im is not None for im in self.text['image']])
        n_obj = np.zeros(len(lengths), dtype=np.int64)
        if self.boxes is not None:
            n_obj = np.array([max(1, min(len(self.boxes.get(sid, {}).get('boxes', [])), self.spec.max_objects))
                              for sid in self.text['id']], dtype=np.int64)
        visual = np.where(has_image, self.num_image_tokens + n_obj - 1, 0)
        return np.where(has_image, lengths + visual, -lengths).tolist()

    # ---------------------------------------------------------------- per sample
    def __len__(self):
        return len(self.text) if self.packs is None else len(self.packs)

    def __getitem__(self, index):
        if self.packs is not None:
            return self.load_pack(index)
        for attempt in range(min(len(self), 100)):
            i = (index + attempt) % len(self)
            try:
                return self.load_sample(i)
            except (DataError, ImageError, BoxError) as e:
                self._bad_sample(e, 'skipping bad sample')
        raise DataError(self.data_path, None, 'too many consecutive bad samples')

    def _bad_sample(self, e, doing):
        """Error mode: raise (a DataError gets the skip hint). Skip mode: count it by kind and warn."""
        if self.on_bad_sample == 'error':
            if isinstance(e, DataError):
                raise DataError(e.path, e.where, f'{e.reason}; {SKIP_HINT}', kind=e.kind) from None
            raise e
        why = getattr(e, 'kind', type(e).__name__)
        self.skipped[why] = self.skipped.get(why, 0) + 1
        print_log(f'{doing} ({sum(self.skipped.values())} so far): {e}', 'current', level=logging.WARNING)

    def load_pack(self, index):
        """The samples of pack `index` (and, in skip mode, of the next packs while every sample of one is bad)."""
        for attempt in range(min(len(self.packs), 100)):
            pack = []
            for i in self.packs[(index + attempt) % len(self.packs)]:
                try:
                    pack.append(self.load_sample(i))
                except (DataError, ImageError, BoxError) as e:
                    self._bad_sample(e, 'dropping a bad sample from its pack')
            if pack:
                return pack
        raise DataError(self.data_path, None, 'too many consecutive bad packs')

    def load_sample(self, i):
        row = self.text[i]
        sid, input_ids, labels = row['id'], list(row['input_ids']), list(row['labels'])
        if row['image'] is None:
            return dict(id=sid, input_ids=input_ids, labels=labels)
        image_path = osp.join(self.image_folder, row['image'])
        try:
            views = preprocess_image(load_image(image_path), self.spec)
        except ImageError as e:
            raise DataError(self.data_path, f'id {sid!r}', str(e), kind='unreadable image') from None
        sample = dict(id=sid, pixel_values=views['pixel_values'], num_image_tokens=self.num_image_tokens)
        n_obj = 0
        if self.spec.image_size_aux:
            sample['pixel_values_aux'] = views['pixel_values_aux']
            if self.boxes is not None:
                entry = self.boxes.get(sid)
                if entry is None and sid in self.box_duplicates:
                    raise DataError(self.box_json_path, f'id {sid!r}',
                                    f'duplicated box id: {describe_duplicate(self.box_duplicates[sid])}',
                                    kind='duplicated box id')
                if entry is None:
                    raise DataError(self.box_json_path, f'id {sid!r}', 'no box entry for this image sample',
                                    kind='missing box entry')
                try:
                    boxes, _, stats = preprocess_boxes(entry['boxes'], entry['labels'], entry['scores'],
                                                       views['orig_size'], self.spec, text_len=len(input_ids),
                                                       max_length=self.max_length,
                                                       skip_bad=self.on_bad_sample == 'skip')
                except BoxError as e:
                    raise DataError(self.box_json_path, f'id {sid!r}', str(e), kind='bad boxes') from None
                dropped = stats['degenerate'] + stats['outside']
                if dropped:  # skip mode: the sample is kept, its bad boxes are counted like skipped samples
                    self.skipped['bad boxes dropped'] = self.skipped.get('bad boxes dropped', 0) + dropped
                sample['boxes'] = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
                n_obj = len(sample['boxes'])
        sample['input_ids'], sample['labels'] = expand_visual_slots(input_ids, labels, self.num_image_tokens + n_obj)
        return sample


def expand_visual_slots(input_ids, labels, n_slots):
    """Replace the single IMAGE_TOKEN_INDEX by n_slots of them (labels IGNORE_INDEX there)."""
    k = input_ids.index(IMAGE_TOKEN_INDEX)
    ids = input_ids[:k] + [IMAGE_TOKEN_INDEX] * n_slots + input_ids[k + 1:]
    if labels is None:
        return ids, None
    return ids, labels[:k] + [IGNORE_INDEX] * n_slots + labels[k + 1:]
