"""Metrics to the work directory: one JSON object per line in metrics.jsonl, and TensorBoard."""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Mapping

import jax

from bert.files import write_atomically


class MetricsWriter:
    """Appends to `<workdir>/metrics.jsonl` and TensorBoard events under `<workdir>/tensorboard`.

    Only process 0 writes; the others accept the calls and drop them. Appending (not truncating)
    keeps the history of a resumed run in one file. `resume_step` is the step a run restarts
    from: rows after it were written by a run that stopped before its next checkpoint, and the
    resumed run writes them again (identically), so they are dropped first.
    """

    def __init__(self, workdir: str, filename: str = "metrics.jsonl", *,
                 resume_step: int | None = None) -> None:
        self._enabled = jax.process_index() == 0
        self._jsonl = None
        self._tensorboard = None
        if self._enabled:
            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(workdir, filename)
            if resume_step is not None and os.path.exists(path):
                _keep_rows_through(path, resume_step)
            self._jsonl = open(path, "a", buffering=1)
            self._tensorboard = _summary_writer_class()(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        if not self._enabled:
            return
        record = {"step": int(step), **{prefix + k: _plain(v) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tensorboard.add_scalar(key, value, int(step))

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tensorboard.close()


def _summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported with torch hidden unless torch is loaded already:
    where torch is installed, tensorboardX imports it (3 s of every start) only to accept torch
    tensors, and we log Python floats."""
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide_torch:
            del sys.modules["torch"]
    return SummaryWriter


def _plain(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _keep_rows_through(path: str, step: int) -> None:
    """Rewrites `path` (atomically) without rows after `step`, and without a torn last line.

    Step 0 rows (the evaluation before training) belong to a run that has a checkpoint; a
    restart from step 0 writes them again.
    """
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a kill in the middle of a write
                dropped += 1
                continue
            if step > 0 and record["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        logging.info("%s: dropped %d row(s) after step %d; the resumed run writes them again",
                     path, dropped, step)
        write_atomically(path, "".join(kept))


def read_metrics(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class _LibraryChatterFilter(logging.Filter):
    """Drops INFO lines from checkpointing and backend libraries; warnings still pass."""

    _NOISY = ("orbax", "jax/_src", "tensorstore", "grain")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(n in record.pathname for n in self._NOISY)


def setup_logging() -> None:
    """INFO for this project's progress lines, without the libraries' per-save chatter."""
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_LibraryChatterFilter())
