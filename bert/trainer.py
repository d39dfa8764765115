"""The training loop every task shares: resume, steps, metrics windows, evaluation, checkpoints.

`fit` drives a runner (bert.partitioning: jit over a Mesh, or pmap) over a stream of host
batches in which batch s is a function of (seed, s). A checkpoint holds the data position and
the unlogged part of the metrics window, so a run killed at any step and restarted ends with the
params of an uninterrupted run and writes the same metrics (timings aside). Pretraining and
every fine-tuning task call it; what differs between them is the Task, the batches and the
evaluation callback.

SIGTERM or SIGINT (a preemption notice, Ctrl-C) saves a checkpoint after the current step and
stops; a second signal stops at once.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from ml_collections import ConfigDict
from tqdm import tqdm

from bert import checkpoint, files
from bert.files import write_atomically
from bert.metrics import MetricsWriter
from bert.partitioning import DevicePrefetcher, Runner

EXPERIMENT_CONFIG_FILE = "experiment_config.json"
RUN_FILE = "run.json"  # what defines the run in a work directory; a rerun must match it
REPLACED_SUFFIX = ".replaced-"  # DIR.replaced-<time>: a run moved aside by config.overwrite

Evaluate = Callable[[Any, int], dict[str, float]]  # (params, step) -> metrics


def host_sum(sums: Mapping[str, jax.Array]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(dict(sums)).items()}


def format_metrics(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def save_experiment_config(config: ConfigDict, workdir: str) -> None:
    if jax.process_index() == 0:
        write_atomically(files.path(workdir) / EXPERIMENT_CONFIG_FILE,
                         config.to_json_best_effort(indent=2, sort_keys=True))


# ------------------------------------------------------------------ the run a work directory holds


def file_identity(location: str | None) -> dict[str, Any] | None:
    """A data file as a run fingerprint records it: its path, size and SHA-256 (compared by
    content, so a moved or copied file is the same file); None for no file."""
    if not location:
        return None
    _, size, version = files.fingerprint(location)
    return {"path": str(location), "bytes": size, "sha256": _sha256(str(location), size, version)}


@functools.lru_cache(maxsize=64)
def _sha256(location: str, size: int, version: int | str) -> str:
    """Once per file version (`files.fingerprint`): each run of a grid fingerprints the files."""
    return files.sha256(location)


def run_fingerprint(config: ConfigDict | Mapping[str, Any], *, ignored: Iterable[str],
                    **facts: Any) -> dict[str, Any]:
    """{name: value} of what defines a run: every key of `config` as "config.KEY" except those
    `ignored` (keys, or sections: "mesh" leaves out mesh.data too), and `facts` (the command,
    the task, the head, data files as `file_identity` gives them)."""
    ignored = tuple(ignored)
    flat = config.to_dict() if isinstance(config, ConfigDict) else dict(config)
    entries: dict[str, Any] = {}

    def walk(values: Mapping[str, Any], prefix: str) -> None:
        for key, value in values.items():
            name = prefix + key
            if name in ignored or any(name.startswith(i + ".") for i in ignored):
                continue
            if isinstance(value, Mapping):
                walk(value, name + ".")
            else:
                entries["config." + name] = list(value) if isinstance(value, tuple) else value

    walk(flat, "")
    return {**facts, **entries}


def _same(saved: Any, current: Any) -> bool:
    if isinstance(saved, dict) and isinstance(current, dict) and "sha256" in current:
        return (saved.get("sha256"), saved.get("bytes")) == (current["sha256"], current["bytes"])
    return json.loads(files.strict_json(saved)) == json.loads(files.strict_json(current))


def _shown(value: Any) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"{value['path']} ({value['bytes']} bytes, sha256 {value['sha256'][:12]})"
    return "none" if value is None else repr(value)


def _saved_fingerprint(workdir: epath.Path) -> tuple[dict[str, Any] | None, str]:
    """The fingerprint the work directory holds and the file it came from: run.json, or the
    config keys of a run's experiment_config.json written before work directories had one."""
    for name in (RUN_FILE, EXPERIMENT_CONFIG_FILE):
        path = workdir / name
        if path.exists():
            saved = files.json_object(path.read_text(), path)
            if name == EXPERIMENT_CONFIG_FILE:
                saved = run_fingerprint(saved, ignored=())
            return saved, str(path)
    return None, ""


def claim_workdir(workdir: str, fingerprint: Mapping[str, Any], *, overwrite: bool,
                  keep: Iterable[str] = ()) -> None:
    """Before anything is written into `workdir`: refuse it if it holds another run, with one
    line naming each differing key and both values. The same run (every key both have equal)
    goes on, and resumes. With `overwrite`, whatever run it holds is moved aside, never
    deleted, to the sibling DIR.replaced-<time>, except the cache folders `keep` (content-
    keyed, e.g. prepared data)."""
    directory = files.path(workdir)
    if not directory.is_dir():
        return
    saved, source = _saved_fingerprint(directory)
    contents = [child for child in directory.iterdir() if child.name not in set(keep)]
    if overwrite:
        if contents:
            _move_aside(directory, contents)
        return
    if saved is None:
        return
    differing = [key for key in fingerprint if key in saved
                 and not _same(saved[key], fingerprint[key])]
    if not differing:
        return
    shown = "; ".join(f"{key}: {_shown(saved[key])} there, {_shown(fingerprint[key])} now"
                      for key in differing[:8])
    more = f"; and {len(differing) - 8} more" if len(differing) > 8 else ""
    raise ValueError(f"{workdir} holds another run ({source}): {shown}{more}. Rerun with "
                     "--config.overwrite=true to move it aside and start over, or choose "
                     "another --workdir")


def _move_aside(directory: epath.Path, contents: list[epath.Path]) -> None:
    if jax.process_index() == 0:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = directory.parent / f"{directory.name}{REPLACED_SUFFIX}{stamp}"
        serial = 1
        while target.exists():
            serial += 1
            target = directory.parent / f"{directory.name}{REPLACED_SUFFIX}{stamp}-{serial}"
        target.mkdir(parents=True)
        for child in contents:
            child.rename(target / child.name)
        logging.warning("config.overwrite: moved the run in %s to %s; starting over",
                        directory, target)
    multihost_utils.sync_global_devices("bert.trainer.move_aside")


def record_run(config: ConfigDict, workdir: str, fingerprint: Mapping[str, Any]) -> None:
    """run.json (the fingerprint) and experiment_config.json (the whole config): written once
    the run's inputs are checked and its checkpoint, if any, restored."""
    if jax.process_index() == 0:
        write_atomically(files.path(workdir) / RUN_FILE,
                         files.strict_json(dict(fingerprint), indent=2, sort_keys=True) + "\n")
    save_experiment_config(config, workdir)


@jax.jit
def _accumulate(window: dict[str, jax.Array], sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Adds one step's metric sums to the window's. A skipped (non-finite) step adds only its
    count: its NaN loss would hide the losses of the other steps in the window."""
    skipped = sums["nonfinite"] > 0
    return {key: window[key] + (value if key == "nonfinite" else jnp.where(skipped, 0.0, value))
            for key, value in sums.items()}


def _empty_window(keys: Iterable[str]) -> dict[str, np.ndarray]:
    return {key: np.float32(0.0) for key in keys}


class _StopRequest:
    """SIGTERM or SIGINT asks the training loop to save and stop after the current step.

    One process: a handler notes the signal, and a second signal gets the previous handler
    (stop at once). Several processes: a signal reaches one host at a time, so JAX's preemption
    service (which listens for SIGTERM) picks a step that all of them stop at together.
    """

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    def __enter__(self) -> "_StopRequest":
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self._SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked worker inherited the handler: die as asked
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signal_name = signal.Signals(signum).name
        self._restore_handlers()
        logging.warning("%s: saving a checkpoint after this step, then stopping (send it again "
                        "to stop at once)", self.signal_name)

    def requested(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.signal_name is not None
        try:
            if multihost_utils.reached_preemption_sync_point(step):
                self.signal_name = "preemption notice"
        except RuntimeError:  # the preemption service is off (jax_enable_preemption_service)
            pass
        return self.signal_name is not None


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The loop's schedule, in optimizer steps."""

    train_steps: int
    log_every: int
    eval_every: int  # 0: no evaluation during training (the caller evaluates at the end)
    checkpoint_every: int
    keep_checkpoints: int
    on_nonfinite: str  # "skip" or "stop"
    seed: int
    eval_steps: tuple[int, ...] = ()  # extra evaluation steps (e.g. epoch ends)

    @classmethod
    def from_config(cls, config: ConfigDict, **overrides: Any) -> "LoopConfig":
        values = {f.name: config.get(f.name) for f in dataclasses.fields(cls)
                  if f.name in config and f.name != "eval_steps"}
        values.update(overrides)
        return cls(**values)


@dataclasses.dataclass
class FitResult:
    state: Any
    step: int  # the last step taken
    final_eval: dict[str, float]  # metrics of the last evaluation during the loop, if any
    stopped_by: str | None  # the signal that stopped the run early, or None


def restore_or_init(runner: Runner, manager: checkpoint.CheckpointManager,
                    init: Callable[[], Any]) -> tuple[Any, int, dict[str, Any]]:
    """(state, step, meta) of the newest usable checkpoint, or `init()` at step 0."""
    restored = manager.restore_latest(runner.abstract_state)
    if restored is None:
        return init(), 0, {}
    step, state, meta = restored
    logging.info("resumed from step %d (%s)", step, manager.directory)
    return state, step, meta


def fit(*, runner: Runner, loop: LoopConfig, manager: checkpoint.CheckpointManager,
        writer: MetricsWriter, state: Any, start_step: int, meta: Mapping[str, Any],
        train_batches: Iterator[Mapping[str, np.ndarray]], schedule: Callable[[int], Any],
        evaluate: Evaluate | None, desc: str) -> FitResult:
    """Train from `start_step` (with `meta` of its checkpoint) to `loop.train_steps`.

    `train_batches` yields host batches from the one after `start_step`. `evaluate(params, step)`
    runs at every `eval_every`-th step, at `eval_steps` and at the last step; its metrics are
    written with the prefix eval_. Checkpoints every `checkpoint_every` steps and at the end.
    """
    task = runner.task
    base_rng = jax.random.split(jax.random.key(loop.seed))[1]  # [0] initialises params
    batches = DevicePrefetcher(train_batches, runner.place_batch)
    progress = tqdm(total=loop.train_steps, initial=start_step, desc=desc,
                    disable=jax.process_index() != 0, dynamic_ncols=True)
    saved_window = meta.get("window", {})
    window = (int(saved_window.get("steps", 0)),
              {k: np.float32(v) for k, v in saved_window.get("sums", {}).items()})
    timed_steps, timed_tokens, timer_start, wait_start = 0, 0, time.perf_counter(), 0.0
    final_eval: dict[str, float] = {}
    eval_steps = set(loop.eval_steps)
    stop = _StopRequest()
    step = start_step
    try:
        with stop:
            for step in range(start_step + 1, loop.train_steps + 1):
                batch = next(batches)
                state, sums = runner.train_step_placed(state, batch, base_rng)
                # Summed on device so that logging a window costs one transfer, not one per step.
                window = (window[0] + 1, _accumulate(window[1] or _empty_window(sums), sums))
                timed_steps += 1
                timed_tokens += runner.batch_tokens(batch)
                progress.update(1)
                if step == start_step + 1 and step != loop.train_steps:
                    jax.block_until_ready(sums)  # keep compilation out of the throughput numbers
                    logging.info("first step (compilation included) took %.1fs",
                                 time.perf_counter() - timer_start)
                    timed_steps, timed_tokens, timer_start = 0, 0, time.perf_counter()
                    wait_start = batches.wait_seconds
                if loop.on_nonfinite == "stop" and float(sums["nonfinite"]):
                    # The step left params and optimizer state untouched, so `state` is the last
                    # good one; resuming continues after the offending batch.
                    manager.save(step, state, _meta(step, loop, window), force=True)
                    raise FloatingPointError(
                        f"non-finite loss or gradient at step {step} (config.on_nonfinite='stop'); "
                        f"the last good state is saved as step {step} in {manager.directory}")
                logged = step % loop.log_every == 0 or step == loop.train_steps
                if logged:
                    # Steps are dispatched asynchronously: without waiting for the last one the
                    # clock would stop while a dozen are still queued, overstating tokens/s.
                    jax.block_until_ready(sums)
                    elapsed = time.perf_counter() - timer_start
                    _log_window(writer, progress, task, step, loop, window, schedule,
                                timed_steps, timed_tokens, elapsed,
                                batches.wait_seconds - wait_start)
                    window = (0, {})
                if evaluate is not None and (step == loop.train_steps or step in eval_steps or (
                        loop.eval_every and step % loop.eval_every == 0)):
                    final_eval = evaluate(state.params, step)
                    writer.write(step, final_eval, prefix="eval_")
                    logging.info("eval at step %d: %s", step, format_metrics(final_eval))
                stopping = stop.requested(step)
                if stopping or step % loop.checkpoint_every == 0 or step == loop.train_steps:
                    manager.save(step, state, _meta(step, loop, window), force=True)
                if logged:  # the next window's clock starts after evaluation and saving
                    timed_steps, timed_tokens, timer_start = 0, 0, time.perf_counter()
                    wait_start = batches.wait_seconds
                if stopping:
                    logging.warning("%s: stopped after step %d with a checkpoint of it in %s; "
                                    "rerun the same command to resume", stop.signal_name, step,
                                    manager.directory)
                    return FitResult(state, step, {}, stop.signal_name)
    finally:
        progress.close()
        manager.wait()  # a save in flight finishes before anyone reads the checkpoints
    return FitResult(state, step, final_eval, None)


def _log_window(writer: MetricsWriter, progress: tqdm, task: Any, step: int, loop: LoopConfig,
                window: tuple[int, dict[str, Any]], schedule: Any, timed_steps: int,
                timed_tokens: int, elapsed: float, input_wait: float) -> None:
    """One metrics row (and log line) for the steps since the last one.

    input_wait_fraction is the share of the window's time the loop spent waiting for its next
    batch (host pipeline and placement) instead of dispatching steps; near 0 means the input
    pipeline keeps up.
    """
    window_steps, window_sums = window
    host = host_sum(window_sums)
    finite_steps = window_steps - int(host["nonfinite"])
    metrics = task.finalize(host)
    if not finite_steps:  # every step was skipped: there is no loss to report
        metrics = {key: float("nan") for key in metrics}
    elapsed = max(elapsed, 1e-9)
    metrics.update(
        learning_rate=float(schedule(step - 1)),
        tokens_per_sec=timed_tokens / elapsed,
        steps_per_sec=timed_steps / elapsed,
        input_wait_fraction=input_wait / elapsed,
        grad_norm=host["grad_norm"] / max(finite_steps, 1),
        nonfinite_steps=host["nonfinite"],
    )
    writer.write(step, metrics)
    if host["nonfinite"]:
        logging.warning("%d of the %d steps up to step %d had a non-finite loss or gradient and "
                        "were skipped (config.on_nonfinite='skip')", host["nonfinite"],
                        window_steps, step)
    eta = (loop.train_steps - step) / max(metrics["steps_per_sec"], 1e-9)
    progress.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{metrics['tokens_per_sec']:.0f}")
    logging.info("step %d/%d %s eta %.0fs", step, loop.train_steps, format_metrics(metrics), eta)


def _meta(step: int, loop: LoopConfig, window: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    """Everything besides arrays needed to continue exactly: the data position (batches
    consumed, which is the step) and the metric sums not yet logged."""
    window_steps, window_sums = window
    return {"step": int(step), "data_position": int(step), "seed": int(loop.seed),
            "window": {"steps": window_steps, "sums": host_sum(window_sums)}}
