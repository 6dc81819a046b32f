"""The benchmark registry: every benchmark the evaluation knows, by name, each one `Benchmark` object.

A benchmark's whole description lives in its module here (one module per family: `multiple_choice` for
mmbench/seed/sqa/ai2d/mmmu/mmstar, `textvqa`, `docvqa`, `ocrvqa`, `chartqa`, `mme`, `hallusion`, `pope`, `gqa`,
`vqav2`, `vizwiz`, `llava_bench`, `mmvet`): how its questions are read and prompted, where its ground truth is,
how it is scored, what the summary shows, which official files are written and what an evaluation entry needs.
The generic modules only look names up here: `questions` (questions and ground truth of an entry), `score` (the
offline scorer CLI), `submission`, `entries` (config entry checks) and `loop` (the evaluation run).

    get(name) -> Benchmark         (ValueError naming the known ones for an unknown name)
    names() -> every name;  scored_names() -> those with ground truth (the scorer's `--benchmark` choices)

`data` and `annotations` mean the same in every caller: an evaluation entry's `data`/`annotations` (configs,
`tools/test.py`) are exactly the scorer's `--data`/`--annotations`.

Adding a benchmark: write one module `benchmarks/<name>.py` that defines `BENCHMARKS = (Benchmark(...),)`
(build it from the shared readers in `mg_llava.evaluation.loaders` and the metrics in `vqa_metrics` /
`benchmark_metrics`, or define its own), plus a test `tests/test_eval_<name>.py` with tiny fixture files; add
the benchmark to `tests/test_score_parity.py`'s ENTRIES (that test fails for a registered benchmark it does not
run).  Every module of this package is imported here and its `BENCHMARKS` registered, in module-name order;
modules whose name starts with `_` are skipped.  Nothing else changes: the scorer's `--benchmark` choices, the
config entry checks, the loop's scoring, summary and submission files all come from the object.  Stdlib only,
like the scorer.
"""
import importlib
import os
import pkgutil
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

IMAGE_FOLDER_MODES = ('required', 'unless_tsv', 'optional')


def _no_check(data, image_folder=None):
    """Default entry check of `data`: the file (or folder) exists."""
    from ..loaders import check_readable
    check_readable(data, folder=os.path.isdir(data))


@dataclass(frozen=True)
class Benchmark:
    """One benchmark.  Callables take plain `str` paths.

    name             the `benchmark` value of an evaluation entry and the scorer's `--benchmark`
    read_questions   (data, image_folder, annotations) -> [question record] in file order (loaders.question:
                     {'id', 'text', 'image', 'box_key', 'where'}); `id` is the id its ground-truth item has
    read_answers     (data, annotations) -> [item {'id', ...}] for `score`, or None: prediction-only
    score            (items, predictions {id: text}[, option_extractor]) -> OrderedDict of metrics (percent)
    headline_keys    the metrics a summary row shows (the scorer returns more; all go to <name>_scores.json)
    write_submission (questions, predictions, out_dir, name, test_questions=None, model_id=None) -> [paths]:
                     official submission / judge-input files written next to <name>_predictions.jsonl
    check_data       (data, image_folder) -> None: raises an InputError (its `reason` is reported) when `data`
                     cannot be what read_questions reads (cheap: TSV header / first JSONL record)
    check_annotations (annotations) -> None, same contract (default: the file parses as JSON)
    image_folder     'required' | 'unless_tsv' (a .tsv `data` carries base64 images) | 'optional'
    needs_annotations an entry must name `annotations` (the scorer accepts `--annotations` only then)
    prediction_resolver (items, data, annotations) -> resolve(key, prompt) -> (id | None, problem): accepts
                     prediction keys other than the items' ids (returns the id, or None and '' for an unknown
                     key, or None and a reason for an ambiguous one); `prompt` is a LLaVA answer line's prompt
    options          scorer options the benchmark takes ('option_extractor')
    """
    name: str
    read_questions: Callable
    read_answers: Optional[Callable] = None
    score: Optional[Callable] = None
    headline_keys: Tuple[str, ...] = ('accuracy',)
    write_submission: Optional[Callable] = None
    check_data: Callable = _no_check
    check_annotations: Optional[Callable] = None
    image_folder: str = 'optional'
    needs_annotations: bool = False
    prediction_resolver: Optional[Callable] = None
    options: Tuple[str, ...] = field(default=())

    def __post_init__(self):
        if self.image_folder not in IMAGE_FOLDER_MODES:
            raise ValueError(f'{self.name}: image_folder must be one of {IMAGE_FOLDER_MODES}')
        if (self.read_answers is None) != (self.score is None):
            raise ValueError(f'{self.name}: read_answers and score go together (both None: prediction-only)')

    @property
    def scored(self):
        return self.read_answers is not None

    def needs_image_folder(self, data):
        return self.image_folder == 'required' or (self.image_folder == 'unless_tsv' and
                                                   not str(data).endswith('.tsv'))

    def score_items(self, items, predictions, option_extractor='robust'):
        if 'option_extractor' in self.options:
            return self.score(items, predictions, option_extractor=option_extractor)
        return self.score(items, predictions)


REGISTRY = OrderedDict()


def register(benchmark):
    if not isinstance(benchmark, Benchmark):
        raise TypeError(f'expected a Benchmark, got {benchmark!r}')
    if benchmark.name in REGISTRY:
        raise ValueError(f'benchmark {benchmark.name!r} is registered twice')
    REGISTRY[benchmark.name] = benchmark
    return benchmark


def get(name):
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f'unknown benchmark {name!r}; choose from {", ".join(REGISTRY)}') from None


def names():
    return tuple(REGISTRY)


def scored_names():
    return tuple(n for n, b in REGISTRY.items() if b.scored)


def _discover():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith('_'):
            continue
        module = importlib.import_module(f'{__name__}.{info.name}')
        for benchmark in getattr(module, 'BENCHMARKS', ()):
            register(benchmark)


_discover()
