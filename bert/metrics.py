"""Metrics to the work directory: one JSON object per line in metrics.jsonl, and TensorBoard."""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import jax


class MetricsWriter:
    """Appends to `<workdir>/metrics.jsonl` and TensorBoard events under `<workdir>/tensorboard`.

    Only process 0 writes; the others accept the calls and drop them. Appending (not truncating)
    keeps the history of a resumed run in one file.
    """

    def __init__(self, workdir: str, filename: str = "metrics.jsonl") -> None:
        self._enabled = jax.process_index() == 0
        self._jsonl = None
        self._tensorboard = None
        if self._enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, filename), "a", buffering=1)
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

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


def _plain(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


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
