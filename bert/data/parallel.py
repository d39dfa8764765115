"""Worker processes for data preparation, with results independent of how many there are.

Preparation splits its work into an ordered list of tasks (groups of files to tokenize, ranges
of documents to pair) whose results are concatenated in task order, and every random draw is
keyed by what it is about (seed, duplicate, document), never by which process makes it. So one
process and sixteen give byte-identical examples; only the wall time differs.

Workers are forked where that is safe: a fork starts in milliseconds, a spawned interpreter
needs ~0.3 s to import numpy and sentencepiece, which is as long as preparing the shipped corpus
takes. Once JAX has started its runtime threads a fork could deadlock, so then workers are
spawned (and large corpora, where the start-up cost is noise, are unaffected either way).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from bert.data.corpus import DataError

Item = TypeVar("Item")
Result = TypeVar("Result")
MapFn = Callable[[Callable[[Item], Result], Sequence[Item]], Iterator[Result]]

# Tasks per worker: enough to even out unequal task sizes, few enough that per-task overhead
# (pickling arguments and results) stays small.
TASKS_PER_WORKER = 4


def resolve_workers(num_workers: int) -> int:
    """`config.data.prep_workers`: 0 means one worker per CPU core this process may use."""
    if num_workers < 0:
        raise DataError(f"config.data.prep_workers must be >= 0, got {num_workers}")
    if num_workers:
        return num_workers
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _start_method() -> str:
    if "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    xla_bridge = sys.modules.get("jax._src.xla_bridge")
    started = getattr(xla_bridge, "backends_are_initialized", lambda: True)
    return "spawn" if xla_bridge is not None and started() else "fork"


@contextlib.contextmanager
def worker_map(num_workers: int, initializer: Callable[..., None],
               initargs: tuple[Any, ...]) -> Iterator[MapFn]:
    """Yields `map(fn, items)` running in `num_workers` processes (1: this process); results
    come back lazily, in order, as they are ready.

    `initializer(*initargs)` runs once in each worker first, to hand over what every task needs
    (a tokenizer, the corpus's sentence lengths) without pickling it into every task.
    """
    if num_workers <= 1:
        initializer(*initargs)
        yield lambda fn, items: (fn(item) for item in items)
        return
    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(num_workers, mp_context=context, initializer=initializer,
                             initargs=initargs) as executor:
        yield lambda fn, items: executor.map(fn, items)


def balanced_chunks(sizes: Sequence[int], num_chunks: int) -> list[range]:
    """Splits indices 0..len(sizes) into at most `num_chunks` contiguous ranges of similar total
    size. Depends on `sizes` and `num_chunks` only, and results are concatenated in order, so
    chunking never changes what is computed."""
    total = sum(sizes)
    if not sizes:
        return []
    num_chunks = max(1, min(num_chunks, len(sizes)))
    chunks, start, running = [], 0, 0
    for index, size in enumerate(sizes):
        running += size
        closes = running * num_chunks >= total * (len(chunks) + 1)
        if closes and len(chunks) < num_chunks - 1 and index + 1 < len(sizes):
            chunks.append(range(start, index + 1))
            start = index + 1
    chunks.append(range(start, len(sizes)))
    return chunks
