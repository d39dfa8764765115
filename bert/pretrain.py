"""Pretraining entry point.

    python -m bert.pretrain --config experiments/pretrain/<name>.py --workdir DIR [--config.key=value ...]

Rerunning the same command resumes from the newest usable checkpoint in DIR/checkpoints. The
batch of step s and every PRNG key are functions of (seed, s), and a checkpoint holds the data
position and the unlogged part of the metrics window, so a run killed at any step and restarted
ends with the params of an uninterrupted run and writes the same metrics (timings aside).

SIGTERM or SIGINT (a preemption notice, Ctrl-C) saves a checkpoint after the current step and
exits with status 0; a second signal stops at once.

DIR/run.json records what defines the run; a rerun that differs (other than in its length and
sequence shape, which phase 2 changes) is refused before any work, naming each differing key,
unless config.overwrite moves the old run aside.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import jax
import numpy as np
from absl import app
from ml_collections import ConfigDict

from bert import checkpoint, cli, data, files, trainer
from bert.config import model_config, pretraining_config, validate
from bert.metrics import MetricsWriter
from bert.model import BertForPreTraining
from bert.optim import OptimizerSettings, learning_rate_schedule, make_optimizer
from bert.partitioning import Runner, build_runner
from bert.train import LeftToRightTask, PretrainingTask

DATA_DIR = "data"  # the default config.data.cache_dir, content-keyed: kept by config.overwrite
# Keys a rerun in the same work directory may change: how often to log, evaluate and save,
# the layout and memory knobs, the data pipeline's workers and caches, and the run's length
# and sequence shape (phase 2 continues phase 1 at 512 tokens; the learning-rate horizon,
# which train_steps sets when schedule_steps is 0, is fingerprinted instead).
_NOT_FINGERPRINTED = ("log_every", "eval_every", "eval_batches", "checkpoint_every",
                      "keep_checkpoints", "host_allocator", "parallelism", "mesh",
                      "grad_accum_steps", "on_nonfinite", "overwrite", "model.remat",
                      "train_steps", "max_seq_len", "max_predictions_per_seq", "data.eval_files",
                      "data.eval_dupe_factor", "data.num_workers", "data.prep_workers",
                      "data.part_mb", "data.cache_dir", "data.local_cache_dir")


def run_fingerprint(config: ConfigDict, optimizer: OptimizerSettings) -> dict[str, Any]:
    """What defines a pretraining run (bert.trainer.claim_workdir compares it on a rerun); the
    warmup as the schedule runs it (cut to a short run's horizon)."""
    fingerprint = trainer.run_fingerprint(
        config, ignored=_NOT_FINGERPRINTED, command="pretrain",
        lr_horizon_steps=optimizer.total_steps)
    fingerprint["config.warmup_steps"] = optimizer.warmup_steps
    return fingerprint


def evaluate(runner: Runner, params: Any, batches: Iterable[dict[str, np.ndarray]]
             ) -> dict[str, float]:
    """The objective's loss and accuracy (MLM/NSP, or LTR) over `batches`, deterministic."""
    totals: dict[str, float] = {}
    for batch in batches:
        sums, _ = runner.eval_step(params, batch)
        for key, value in trainer.host_sum(sums).items():
            totals[key] = totals.get(key, 0.0) + value
    if not totals:
        raise ValueError("the eval split produced no batches: add text to config.data.eval_files")
    return runner.task.finalize(totals)


def train_and_evaluate(config: ConfigDict, workdir: str) -> dict[str, float]:
    """Pretrain as `config` says, writing checkpoints and metrics into `workdir`.

    Returns the final evaluation metrics (empty without config.data.eval_files, or when a
    signal stopped the run early).
    """
    validate(config)
    optimizer = OptimizerSettings.from_config(config)
    fingerprint = run_fingerprint(config, optimizer)
    trainer.claim_workdir(workdir, fingerprint, overwrite=config.overwrite, keep=(DATA_DIR,))
    files.path(workdir).mkdir(parents=True, exist_ok=True)
    # Before anything starts JAX's runtime: data preparation forks its workers until then.
    # The data stage checks the tokenizer fits config.model.vocab_size (0: takes its size).
    tokenizer, prepared = data.build(config, workdir)
    bert_config = model_config(config, tokenizer_vocab_size=tokenizer.vocab_size)
    model = BertForPreTraining(bert_config)
    task = (LeftToRightTask(model) if config.objective == "ltr"
            else PretrainingTask(model, config.data.nsp_weight))
    runner = build_runner(config, task, make_optimizer(optimizer))  # checks the batch layout
    per_host_batch = data.per_host_batch_size(config.batch_size, jax.process_count())
    hosts = dict(process_index=jax.process_index(), process_count=jax.process_count())
    manager = checkpoint.CheckpointManager(workdir, keep=config.keep_checkpoints)
    init_rng = jax.random.split(jax.random.key(config.seed))[0]
    try:
        state, start_step, meta = trainer.restore_or_init(runner, manager,
                                                          lambda: runner.init_state(init_rng))
    except BaseException:
        manager.close()
        raise
    if jax.process_index() == 0:
        checkpoint.write_model_description(workdir, bert_config, tokenizer)
    trainer.record_run(config, workdir, fingerprint)

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
    writer = MetricsWriter(workdir, resume_step=start_step)

    def run_eval(params: Any, step: int) -> dict[str, float]:
        return evaluate(runner, params, eval_batches)

    try:
        if start_step == 0 and eval_batches:
            # Beside the untrained model: what predicting token frequencies alone scores
            # (this host's share of the eval split), the plateau a run has to leave.
            initial = {**run_eval(state.params, 0),
                       **data.unigram_baseline(prepared, eval_batches)}
            writer.write(0, initial, prefix="eval_")
            logging.info("eval at step 0: %s", trainer.format_metrics(initial))
        result = trainer.fit(
            runner=runner, loop=trainer.LoopConfig.from_config(config), manager=manager,
            writer=writer, state=state, start_step=start_step, meta=meta,
            train_batches=train_batches, schedule=learning_rate_schedule(optimizer),
            evaluate=run_eval if eval_batches else None, desc="pretrain")
    finally:
        manager.close()
        writer.close()
    if result.stopped_by:
        return {}
    if not result.final_eval and eval_batches:
        return run_eval(result.state.params, result.step)
    return result.final_eval


def define_flags() -> None:
    """Only when run as a command (bert.demo reuses them)."""
    cli.define_run_flags("directory (or gs:// URL) for checkpoints, metrics and data")


def main(argv: list[str]) -> None:
    cli.run_command("pretrain", argv, validate, pretraining_config, train_and_evaluate)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
