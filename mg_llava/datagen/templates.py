"""Genixer's two-level instructions (spec A.3), read from the package's data files (templates/*.json):

  level 1  generic_instructions.json  a pool of "write a question about this image and answer it" paraphrases
           (written for this project); one is drawn per sample, seeded
  level 2  task_suffixes.json         the sentence that names the task ("\\nThis is a Multi-choice VQA task.");
           appended in task-specific mode, absent in task-agnostic mode
  dialogue_prompt.json                the multi-turn dialogue (md) prompt, used instead of the pool
  rec_questions.json / reg_questions.json   the inner question paraphrases of REC (`<expr>`) and REG (`<objs>`)

`sample_rng(seed, key)` is the one source of randomness: a generator per (seed, sample key), so a sample's
draws do not depend on the order, the shard or the rank that builds it.
"""
import json
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

TEMPLATE_DIR = Path(__file__).parent / 'templates'
GENERIC_TASKS = ('common', 'adv', 'mc', 'longqa', 'md')
GROUNDING_TASKS = ('rec', 'reg', 'pointqa', 'qca', 'rd')
TASKS = GENERIC_TASKS + GROUNDING_TASKS


@lru_cache(maxsize=None)
def load(name):
    return json.loads((TEMPLATE_DIR / f'{name}.json').read_text())


def generic_instructions():
    return load('generic_instructions')


def task_suffix(task):
    suffixes = load('task_suffixes')
    if task not in suffixes:
        raise ValueError(f'unknown Genixer task {task!r}; tasks: {", ".join(TASKS)}')
    return suffixes[task]


def sample_rng(seed, key):
    """A numpy Generator for one sample: the same (seed, key) gives the same draws on any rank, in any order."""
    return np.random.default_rng([int(seed), zlib.crc32(str(key).encode())])


def instruction(task, rng, task_specific=True):
    """-> (prompt without <image>, template index; -1 for the fixed dialogue prompt). md always uses the
    dialogue prompt; other tasks draw from the generic pool and, when task_specific, append the task's suffix."""
    if task == 'md':
        return load('dialogue_prompt')['md'], -1
    suffix = task_suffix(task)   # validates the task name
    pool = generic_instructions()
    index = int(rng.integers(len(pool)))
    return pool[index] + (suffix if task_specific else ''), index


def inner_question(kind, rng, **slots):
    """A REC (`expr=`) or REG (`objs=`) question paraphrase with its slot filled."""
    pool = load(f'{kind}_questions')
    text = pool[int(rng.integers(len(pool)))]
    for name, value in slots.items():
        text = text.replace(f'<{name}>', value)
    return text
