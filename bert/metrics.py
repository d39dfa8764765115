"""Metrics to the work directory: one JSON object per line in metrics.jsonl, and TensorBoard."""
from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from typing import Any, Mapping

import jax
from etils import epath

from bert import files


class MetricsWriter:
    """Appends to `<workdir>/metrics.jsonl` and TensorBoard events under `<workdir>/tensorboard`.

    Only process 0 writes; the others accept the calls and drop them. Appending (not truncating)
    keeps the history of a resumed run in one file. `resume_step` is the step a run restarts
    from: rows after it were written by a run that stopped before its next checkpoint, and the
    resumed run writes them again (identically), so they are dropped first, and TensorBoard is
    told to drop their events (purge_step).

    `workdir` may be a URL (bert.files). Objects cannot be appended to, so there metrics.jsonl
    is rewritten whole at most every `remote_flush_seconds` and on close, and the event file
    likewise on TensorBoard's own flushes; a kill loses only rows the resumed run writes again.
    """

    def __init__(self, workdir: str, filename: str = "metrics.jsonl", *,
                 resume_step: int | None = None, remote_flush_seconds: float = 30.0) -> None:
        self._enabled = jax.process_index() == 0
        self._jsonl: _Lines | None = None
        self._tensorboard = None
        if self._enabled:
            files.path(workdir).mkdir(parents=True, exist_ok=True)
            path = files.path(workdir) / filename
            if resume_step is not None and path.exists():
                _keep_rows_through(path, resume_step)
            self._jsonl = _Lines(path, remote_flush_seconds)
            self._tensorboard = _summary_writer(files.path(workdir) / "tensorboard", resume_step)

    def write(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        if not self._enabled:
            return
        record = {"step": int(step), **{prefix + k: _plain(v) for k, v in values.items()}}
        self._jsonl.write(files.strict_json(record) + "\n")  # NaN: null
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tensorboard.add_scalar(key, value, int(step))

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tensorboard.close()


def _purge_step(resume_step: int | None) -> int | None:
    """The first step whose events TensorBoard drops from earlier files: every step after the
    resumed one, and all of them on a restart from step 0 (which writes its step 0 again, as
    `_keep_rows_through` says)."""
    if resume_step is None:
        return None
    return resume_step + 1 if resume_step > 0 else 0


class _Lines:
    """A text file appended line by line: locally an open file, remotely rewritten whole."""

    def __init__(self, path: epath.Path, flush_seconds: float) -> None:
        self._path = path
        self._remote = files.is_remote(path)
        self._flush_seconds = flush_seconds
        if self._remote:
            self._text = path.read_text() if path.exists() else ""
            self._flushed_at = 0.0
        else:
            self._file = open(path, "a", buffering=1)

    def write(self, line: str) -> None:
        if not self._remote:
            self._file.write(line)
            return
        self._text += line
        if time.monotonic() - self._flushed_at >= self._flush_seconds:
            self._flush()

    def _flush(self) -> None:
        files.write_atomically(self._path, self._text)
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        if self._remote:
            self._flush()
        else:
            self._file.close()


def _summary_writer(logdir: epath.Path, resume_step: int | None) -> Any:
    """tensorboardX's SummaryWriter, imported with torch hidden unless torch is loaded already:
    where torch is installed, tensorboardX imports it (3 s of every start) only to accept torch
    tensors, and we log Python floats. A remote `logdir` is written through bert.files."""
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
    try:
        from tensorboardX import SummaryWriter, record_writer
    finally:
        if hide_torch:
            del sys.modules["torch"]
    if files.is_remote(logdir):
        # tensorboardX picks a record writer by the URL's scheme; ours goes through bert.files
        # for every scheme (its own gs:// writer would need google-cloud-storage and credentials).
        record_writer.register_writer_factory(str(logdir).split("://", 1)[0], _RemoteEventFiles())
    # Event files are named by the second they are opened in: the suffix keeps a run resumed
    # within the same second from overwriting the file of its predecessor (only runs resumed
    # from the same step share a name, and the later one purges all the earlier one wrote).
    suffix = "" if resume_step is None else f".from_step{resume_step}"
    return SummaryWriter(str(logdir), purge_step=_purge_step(resume_step), filename_suffix=suffix)


class _RemoteEventFile:
    """An event file held in memory and uploaded whole on every flush (objects cannot grow)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._buffer = io.BytesIO()

    def write(self, data: bytes) -> None:
        self._buffer.write(data)

    def flush(self) -> None:
        files.write_atomically(self._path, self._buffer.getvalue())

    def close(self) -> None:
        self.flush()


class _RemoteEventFiles:
    """tensorboardX's record writer factory interface."""

    def open(self, path: str) -> _RemoteEventFile:
        return _RemoteEventFile(path)

    def directory_check(self, path: str) -> None:
        files.path(path).mkdir(parents=True, exist_ok=True)


def _plain(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _keep_rows_through(path: epath.Path, step: int) -> None:
    """Rewrites `path` (atomically) without rows after `step`, and without a torn last line.

    Step 0 rows (the evaluation before training) belong to a run that has a checkpoint; a
    restart from step 0 writes them again.
    """
    kept, dropped = [], 0
    for line in path.read_text().splitlines(keepends=True):
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
        files.write_atomically(path, "".join(kept))


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]


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
