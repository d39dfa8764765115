"""Pretraining entry point.

    python -m bert.pretrain --config experiments/pretrain/<name>.py --workdir DIR [--config.key=value ...]

Rerunning the same command resumes from the newest checkpoint in DIR/checkpoints. The batch of
step s and every PRNG key are functions of (seed, s), so a resumed run continues the exact
trajectory of an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Iterable, Iterator

import jax
import numpy as np
from absl import app, flags
from ml_collections import ConfigDict, config_flags
from tqdm import tqdm

from bert import checkpoint, data, distributed, objectives
from bert.config import model_config, validate
from bert.metrics import MetricsWriter, setup_logging
from bert.model import BertForPreTraining
from bert.optim import learning_rate_schedule, make_optimizer
from bert.partitioning import Runner, build_runner

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
    path = os.path.join(workdir, EXPERIMENT_CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(tmp, path)


def _restore_or_init(runner: Runner, manager: checkpoint.CheckpointManager,
                     rng: jax.Array) -> tuple[Any, int]:
    step = manager.latest_step()
    if step is None:
        return runner.init_state(rng), 0
    state, meta = manager.restore(step, runner.abstract_state)
    logging.info("resumed from step %d (%s)", step, manager.directory)
    return state, int(meta["step"])


def train_and_evaluate(config: ConfigDict, workdir: str) -> dict[str, float]:
    """Pretrain as `config` says, writing checkpoints and metrics into `workdir`.

    Returns the final evaluation metrics (empty without config.data.eval_files).
    """
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    bert_config = model_config(config)
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
    runner = build_runner(config, model, tx)
    per_host_batch = data.per_host_batch_size(config.batch_size, jax.process_count())
    hosts = dict(process_index=jax.process_index(), process_count=jax.process_count())
    manager = checkpoint.CheckpointManager(workdir, keep=config.keep_checkpoints)
    seed_key = jax.random.key(config.seed)
    init_rng, dropout_rng = jax.random.split(seed_key)
    state, start_step = _restore_or_init(runner, manager, init_rng)

    eval_batches = []
    if prepared.eval is not None:  # no config.data.eval_files: train without evaluation
        eval_batches = data.eval_batches(prepared, batch_size_per_host=per_host_batch,
                                         seed=config.seed, **hosts)
    if config.eval_batches:
        eval_batches = eval_batches[: config.eval_batches]
    train_batches = data.train_batches(prepared, batch_size_per_host=per_host_batch,
                                       seed=config.seed, start_step=start_step,
                                       num_workers=config.data.num_workers, **hosts)
    writer = MetricsWriter(workdir)
    schedule = learning_rate_schedule(config)
    tokens_per_step = config.batch_size * config.max_seq_len
    nsp_weight = config.data.nsp_weight

    if start_step == 0 and eval_batches:
        initial = evaluate(runner, state.params, eval_batches, nsp_weight)
        writer.write(0, initial, prefix="eval_")
        logging.info("eval at step 0: %s", _format(initial))

    progress = tqdm(total=config.train_steps, initial=start_step, desc="pretrain",
                    disable=jax.process_index() != 0, dynamic_ncols=True)
    add = jax.jit(lambda a, b: jax.tree.map(lambda x, y: x + y, a, b))
    window_sums, window_steps = None, 0
    timed_steps, timer_start = 0, time.perf_counter()
    final_eval: dict[str, float] = {}
    try:
        for step in range(start_step + 1, config.train_steps + 1):
            state, sums = runner.train_step(state, next(train_batches), dropout_rng)
            # Summed on device so that logging a window costs one transfer, not one per step.
            window_sums = sums if window_sums is None else add(window_sums, sums)
            window_steps += 1
            timed_steps += 1
            progress.update(1)
            if step == start_step + 1 and step != config.train_steps:
                # Keep compilation out of the throughput numbers.
                jax.block_until_ready(sums)
                logging.info("first step (compilation included) took %.1fs",
                             time.perf_counter() - timer_start)
                timed_steps, timer_start = 0, time.perf_counter()
            if config.on_nonfinite == "stop" and float(sums["nonfinite"]):
                # The step left params and optimizer state untouched, so `state` is the last
                # good one; resuming continues after the offending batch.
                manager.save(step, state, _meta(step, config), force=True)
                raise FloatingPointError(
                    f"non-finite loss or gradient at step {step}; the last good state is saved "
                    f"as step {step} in {manager.directory}"
                )
            if step % config.log_every == 0 or step == config.train_steps:
                host = _host_sum(window_sums)
                elapsed = time.perf_counter() - timer_start
                metrics = objectives.finalize_metrics(host, nsp_weight)
                metrics.update(
                    learning_rate=float(schedule(step - 1)),
                    tokens_per_sec=tokens_per_step * timed_steps / elapsed,
                    steps_per_sec=timed_steps / elapsed,
                    grad_norm=host["grad_norm"] / window_steps,
                    nonfinite_steps=host["nonfinite"],
                )
                writer.write(step, metrics)
                eta = (config.train_steps - step) / max(metrics["steps_per_sec"], 1e-9)
                progress.set_postfix(loss=f"{metrics['loss']:.3f}",
                                     tok_s=f"{metrics['tokens_per_sec']:.0f}")
                logging.info("step %d/%d %s eta %.0fs", step, config.train_steps,
                             _format(metrics), eta)
                window_sums, window_steps = None, 0
                timed_steps, timer_start = 0, time.perf_counter()
            if eval_batches and (step % config.eval_every == 0 or step == config.train_steps):
                final_eval = evaluate(runner, state.params, eval_batches, nsp_weight)
                writer.write(step, final_eval, prefix="eval_")
                logging.info("eval at step %d: %s", step, _format(final_eval))
            if step % config.checkpoint_every == 0 or step == config.train_steps:
                manager.save(step, state, _meta(step, config), force=True)
    finally:
        progress.close()
        manager.wait()
        manager.close()
        writer.close()
    if not final_eval and eval_batches:
        final_eval = evaluate(runner, state.params, eval_batches, nsp_weight)
    return final_eval


def _meta(step: int, config: ConfigDict) -> dict[str, Any]:
    """Everything besides arrays needed to continue: the data position is the step itself."""
    return {"step": int(step), "data_position": int(step), "seed": int(config.seed)}


def _format(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and data")


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    try:
        distributed.initialize_from_flags()  # first: before anything touches a device
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ValueError, OSError) as error:  # bad config, data or paths: the message says which
        raise SystemExit(f"bert.pretrain: error: {error}") from None


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
