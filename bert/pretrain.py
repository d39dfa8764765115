"""Pretraining entry point.

    python -m bert.pretrain --config experiments/pretrain/<name>.py --workdir DIR [--config.key=value ...]

Rerunning the same command resumes from the newest usable checkpoint in DIR/checkpoints. The
batch of step s and every PRNG key are functions of (seed, s), and a checkpoint holds the data
position and the unlogged part of the metrics window, so a run killed at any step and restarted
ends with the params of an uninterrupted run and writes the same metrics (timings aside).

SIGTERM or SIGINT (a preemption notice, Ctrl-C) saves a checkpoint after the current step and
exits with status 0; a second signal stops at once.
"""
from __future__ import annotations

from bert.allocator import reexec_with_tuned_allocator

if __name__ == "__main__":  # before the heavy imports, which a restart would repeat
    reexec_with_tuned_allocator()

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.experimental import multihost_utils
from ml_collections import ConfigDict
from tqdm import tqdm

from bert import checkpoint, cli, data, distributed, objectives
from bert.config import model_config, pretraining_config, validate
from bert.files import write_atomically
from bert.metrics import MetricsWriter, setup_logging
from bert.model import BertForPreTraining
from bert.optim import learning_rate_schedule, make_optimizer
from bert.partitioning import DevicePrefetcher, Runner, build_runner

EXPERIMENT_CONFIG_FILE = "experiment_config.json"


def _host_sum(sums: dict[str, jax.Array]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(sums).items()}


def evaluate(runner: Runner, params: Any, batches: Iterable[dict[str, np.ndarray]],
             nsp_weight: float) -> dict[str, float]:
    """MLM/NSP loss and accuracy over `batches`, deterministic."""
    totals: dict[str, float] = {}
    for batch in batches:
        for key, value in _host_sum(runner.eval_step(params, batch)).items():
            totals[key] = totals.get(key, 0.0) + value
    if not totals:
        raise ValueError("the eval split produced no batches: add text to config.data.eval_files")
    return objectives.finalize_metrics(totals, nsp_weight)


def _save_experiment_config(config: ConfigDict, workdir: str) -> None:
    write_atomically(os.path.join(workdir, EXPERIMENT_CONFIG_FILE),
                           config.to_json_best_effort(indent=2, sort_keys=True))


def _restore_or_init(runner: Runner, manager: checkpoint.CheckpointManager,
                     rng: jax.Array) -> tuple[Any, int, dict[str, Any]]:
    """(state, step, meta) of the newest usable checkpoint, or a fresh state at step 0."""
    restored = manager.restore_latest(runner.abstract_state)
    if restored is None:
        return runner.init_state(rng), 0, {}
    step, state, meta = restored
    logging.info("resumed from step %d (%s)", step, manager.directory)
    return state, step, meta


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


def train_and_evaluate(config: ConfigDict, workdir: str) -> dict[str, float]:
    """Pretrain as `config` says, writing checkpoints and metrics into `workdir`.

    Returns the final evaluation metrics (empty without config.data.eval_files, or when a
    signal stopped the run early).
    """
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    bert_config = model_config(config)
    # Before anything starts JAX's runtime: data preparation forks its workers until then.
    tokenizer, prepared = data.build(config, workdir)
    if tokenizer.vocab_size > bert_config.vocab_size:
        raise ValueError(
            f"config.model.vocab_size={bert_config.vocab_size} is smaller than the tokenizer's "
            f"vocabulary ({tokenizer.vocab_size})"
        )
    if jax.process_index() == 0:
        checkpoint.write_model_description(workdir, bert_config, tokenizer)
        _save_experiment_config(config, workdir)

    model = BertForPreTraining(bert_config)
    tx = make_optimizer(config)
    runner = build_runner(config, model, tx)  # checks the batch layout; compiles nothing yet
    per_host_batch = data.per_host_batch_size(config.batch_size, jax.process_count())
    hosts = dict(process_index=jax.process_index(), process_count=jax.process_count())
    manager = checkpoint.CheckpointManager(workdir, keep=config.keep_checkpoints)
    seed_key = jax.random.key(config.seed)
    init_rng, dropout_rng = jax.random.split(seed_key)
    state, start_step, meta = _restore_or_init(runner, manager, init_rng)

    eval_batches = []
    if prepared.eval is not None:  # no config.data.eval_files: train without evaluation
        eval_batches = data.eval_batches(prepared, batch_size_per_host=per_host_batch,
                                         seed=config.seed, **hosts)
    if config.eval_batches:
        eval_batches = eval_batches[: config.eval_batches]
    train_batches = data.train_batches(prepared, batch_size_per_host=per_host_batch,
                                       seed=config.seed,
                                       start_step=int(meta.get("data_position", start_step)),
                                       num_workers=config.data.num_workers, **hosts)
    # Batch s + 1 is on the devices while step s runs; wait_seconds is the loop's input wait.
    train_batches = DevicePrefetcher(train_batches, runner.place_batch)
    writer = MetricsWriter(workdir, resume_step=start_step)
    schedule = learning_rate_schedule(config)
    nsp_weight = config.data.nsp_weight

    if start_step == 0 and eval_batches:
        initial = evaluate(runner, state.params, eval_batches, nsp_weight)
        writer.write(0, initial, prefix="eval_")
        logging.info("eval at step 0: %s", _format(initial))

    progress = tqdm(total=config.train_steps, initial=start_step, desc="pretrain",
                    disable=jax.process_index() != 0, dynamic_ncols=True)
    # The metrics window: sums since the last log line, carried across restarts by checkpoints.
    saved_window = meta.get("window", {})
    window_steps = int(saved_window.get("steps", 0))
    window_sums = {k: np.float32(v) for k, v in saved_window.get("sums", {}).items()}
    timed_steps, timer_start, wait_start = 0, time.perf_counter(), 0.0
    final_eval: dict[str, float] = {}
    stop = _StopRequest()
    try:
        with stop:
            for step in range(start_step + 1, config.train_steps + 1):
                state, sums = runner.train_step_placed(state, next(train_batches), dropout_rng)
                # Summed on device so that logging a window costs one transfer, not one per step.
                window_sums = _accumulate(window_sums or _empty_window(sums), sums)
                window_steps += 1
                timed_steps += 1
                progress.update(1)
                if step == start_step + 1 and step != config.train_steps:
                    # Keep compilation out of the throughput numbers.
                    jax.block_until_ready(sums)
                    logging.info("first step (compilation included) took %.1fs",
                                 time.perf_counter() - timer_start)
                    timed_steps, timer_start = 0, time.perf_counter()
                    wait_start = train_batches.wait_seconds
                if config.on_nonfinite == "stop" and float(sums["nonfinite"]):
                    # The step left params and optimizer state untouched, so `state` is the last
                    # good one; resuming continues after the offending batch.
                    manager.save(step, state, _meta(step, config, (window_steps, window_sums)),
                                 force=True)
                    raise FloatingPointError(
                        f"non-finite loss or gradient at step {step} (config.on_nonfinite='stop'); "
                        f"the last good state is saved as step {step} in {manager.directory}"
                    )
                logged = step % config.log_every == 0 or step == config.train_steps
                if logged:
                    # Steps are dispatched asynchronously: without waiting for the last one the
                    # clock would stop while a dozen are still queued, overstating tokens/s.
                    jax.block_until_ready(sums)
                    _log_window(writer, progress, step, config, (window_steps, window_sums),
                                schedule, timed_steps, time.perf_counter() - timer_start,
                                train_batches.wait_seconds - wait_start)
                    window_sums, window_steps = {}, 0
                if eval_batches and (step % config.eval_every == 0 or step == config.train_steps):
                    final_eval = evaluate(runner, state.params, eval_batches, nsp_weight)
                    writer.write(step, final_eval, prefix="eval_")
                    logging.info("eval at step %d: %s", step, _format(final_eval))
                stopping = stop.requested(step)
                if stopping or step % config.checkpoint_every == 0 or step == config.train_steps:
                    manager.save(step, state, _meta(step, config, (window_steps, window_sums)),
                                 force=True)
                if logged:  # the next window's clock starts after evaluation and saving
                    timed_steps, timer_start = 0, time.perf_counter()
                    wait_start = train_batches.wait_seconds
                if stopping:
                    logging.warning("%s: stopped after step %d with a checkpoint of it in %s; "
                                    "rerun the same command to resume", stop.signal_name, step,
                                    manager.directory)
                    return {}
    finally:
        progress.close()
        manager.close()  # waits for a save in flight
        writer.close()
    if not final_eval and eval_batches:
        final_eval = evaluate(runner, state.params, eval_batches, nsp_weight)
    return final_eval


def _log_window(writer: MetricsWriter, progress: tqdm, step: int, config: ConfigDict,
                window: tuple[int, dict[str, Any]], schedule: Any, timed_steps: int,
                elapsed: float, input_wait: float) -> None:
    """One metrics row (and log line) for the steps since the last one.

    input_wait_fraction is the share of the window's time the loop spent waiting for its next
    batch (host pipeline and placement) instead of dispatching steps; near 0 means the input
    pipeline keeps up.
    """
    window_steps, window_sums = window
    host = _host_sum(window_sums)
    finite_steps = window_steps - int(host["nonfinite"])
    metrics = objectives.finalize_metrics(host, config.data.nsp_weight)
    if not finite_steps:  # every step was skipped: there is no loss to report
        metrics = {key: float("nan") for key in metrics}
    metrics.update(
        learning_rate=float(schedule(step - 1)),
        tokens_per_sec=config.batch_size * config.max_seq_len * timed_steps / elapsed,
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
    eta = (config.train_steps - step) / max(metrics["steps_per_sec"], 1e-9)
    progress.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{metrics['tokens_per_sec']:.0f}")
    logging.info("step %d/%d %s eta %.0fs", step, config.train_steps, _format(metrics), eta)


def _meta(step: int, config: ConfigDict, window: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    """Everything besides arrays needed to continue exactly: the data position (batches
    consumed, which is the step) and the metric sums not yet logged."""
    window_steps, window_sums = window
    return {"step": int(step), "data_position": int(step), "seed": int(config.seed),
            "window": {"steps": window_steps, "sums": _host_sum(window_sums)}}


def _format(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def define_flags() -> None:
    """Only when run as a command (bert.demo reuses them); other CLIs define --config too."""
    cli.define_config_flags()
    flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and data")


def main(argv: list[str]) -> None:
    setup_logging()
    # A bad key or value stops here, with exit status 2; --print_config stops here too.
    config = cli.config_from_flags("pretrain", argv, validate, pretraining_config)
    if not flags.FLAGS.workdir:
        cli.usage_error("pretrain", "--workdir is required")
    try:
        distributed.initialize_from_flags()  # first: before anything touches a device
        train_and_evaluate(config, flags.FLAGS.workdir)
    # Bad config, data, paths or checkpoints, or a non-finite step with on_nonfinite='stop':
    # the message says which, so a traceback would only bury it.
    except (ValueError, OSError, FloatingPointError) as error:
        raise SystemExit(f"bert.pretrain: error: {error}") from None


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
