"""Fine-tuning entry point: one pretrained encoder, one small head per task, the paper's recipe.

    python -m bert.finetune --config experiments/finetune/<task>.py --workdir DIR \
        --config.init_checkpoint=MODEL_DIR_OR_WORKDIR --config.train_file=F --config.eval_file=F \
        [--config.test_file=F] [--config.key=value ...]

Writes DIR/eval_results.json (the dev metrics of the final checkpoint, or of the one best on
dev with config.select_on_dev), DIR/eval_predictions.<ext> and, with a test file,
DIR/test_predictions.<ext> in the task's customary format (GLUE submission TSV, CoNLL columns,
SQuAD {id: answer} JSON), plus metrics.jsonl, TensorBoard, checkpoints and
experiment_config.json as pretraining does. Training runs on the same step, runner and loop as
pretraining (bert.trainer), so resume after a kill, SIGTERM saves, the non-finite-step policy
and every parallel layout behave the same. Rerunning the same command resumes.

Every input is read and checked before anything is written or compiled (README "Checked before
training"). DIR/run.json records what defines the run; a rerun that differs from it is refused,
naming each differing key, unless config.overwrite moves the old run aside. init_checkpoint may
also be a Hugging Face BERT folder, converted in memory as `bert.convert from-hf` converts it.

With config.lr_grid and/or config.seeds, every (learning rate, seed) run gets its own work
directory under DIR/runs/; DIR/eval_results.json then lists every run, the mean and spread of
each metric, and the run selected on dev, whose prediction files are copied into DIR.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
from typing import Any, Callable, Mapping

import jax
import numpy as np
from absl import app
from etils import epath
from ml_collections import ConfigDict

from bert import checkpoint, cli, convert, files, heads, trainer
from bert.config import finetuning_config, learning_rates, length_buckets, seeds
from bert.files import write_atomically
from bert.metrics import MetricsWriter
from bert.optim import OptimizerSettings, learning_rate_schedule, make_optimizer
from bert.partitioning import Runner, build_runner
from bert.tasks import TaskDataError, batches, registry

RESULTS_FILE = "eval_results.json"
BEST_DIR = "best"  # with select_on_dev: params of the checkpoint best on dev, and best.json
FEATURE_CACHE_DIR = "feature_cache"  # default config.feature_cache_dir, under DIR


def optimizer_settings(config: ConfigDict, train_steps: int) -> OptimizerSettings:
    """The optimizer of a fine-tuning run of `train_steps` steps: warmup over warmup_proportion
    of them (rounded down, as the original code), then linear decay to 0."""
    return OptimizerSettings(
        learning_rate=float(config.learning_rate), total_steps=int(train_steps),
        warmup_steps=int(train_steps * config.warmup_proportion), name=config.optim.name,
        b1=config.optim.b1, b2=config.optim.b2, eps=config.optim.eps,
        weight_decay=config.weight_decay, clip_norm=config.optim.clip_norm)


def predict(runner: Runner, params: Any, split: registry.Split, config: ConfigDict
            ) -> dict[str, np.ndarray]:
    """The task's per-row predictions of every row of `split`, in row order."""
    collected = []
    for batch in batches.eval_batches(
            split.features, batch_size=int(config.batch_size), buckets=length_buckets(config),
            max_seq_len=int(config.max_seq_len), process_index=jax.process_index(),
            process_count=jax.process_count()):
        _, predictions = runner.eval_step(params, batch.host_batch)
        collected.append((batch.rows, jax.device_get(predictions)))
    return batches.gather_predictions(collected, split.num_rows)


FILE_KEYS = ("train_file", "eval_file", "eval_mismatched_file", "test_file",
             "test_mismatched_file")
# Keys that change neither the trajectory nor the results (how often to log and save, the
# device layout, which accumulation equals the one big batch exactly), and those recorded as
# what they name rather than as text: the data files (by content) and init_checkpoint.
_NOT_FINGERPRINTED = ("log_every", "checkpoint_every", "keep_checkpoints", "host_allocator",
                      "parallelism", "mesh", "grad_accum_steps", "on_nonfinite", "overwrite",
                      "feature_cache_dir", "init_checkpoint", *FILE_KEYS)


def _location(path: str) -> str:
    """`path` as the fingerprint and the work-directory checks compare it: absolute, resolved."""
    return path.rstrip("/") if files.is_remote(path) else os.path.realpath(path)


def _fingerprint(config: ConfigDict, **facts: Any) -> dict[str, Any]:
    """What defines a fine-tuning run (bert.trainer.claim_workdir compares it on a rerun)."""
    return trainer.run_fingerprint(
        config, ignored=_NOT_FINGERPRINTED, command="finetune",
        init_checkpoint=_location(config.init_checkpoint),
        **{key: trainer.file_identity(config[key]) for key in FILE_KEYS}, **facts)


def _check_workdir(config: ConfigDict, workdir: str) -> None:
    """Refuses a work directory that is the model folder training starts from (or inside what
    makes it one), where task.json, bert_config.json and checkpoints would replace its own; and
    config.overwrite on a work directory holding that folder, which would move it aside."""
    init, work = _location(config.init_checkpoint), _location(workdir)
    owned = [f"{init}/{name}" for name in (checkpoint.PARAMS_DIR, checkpoint.TOKENIZER_DIR,
                                           checkpoint.CHECKPOINTS_DIR, checkpoint.SET_ASIDE_DIR)]
    if work == init or any(work == folder or work.startswith(folder + "/") for folder in owned):
        raise ValueError(f"--workdir={workdir} is (inside) the model folder "
                         f"config.init_checkpoint={config.init_checkpoint}: the run would write "
                         "its task.json, bert_config.json and checkpoints over the model's; "
                         "choose another --workdir")
    if config.overwrite and init.startswith(work + "/"):
        raise ValueError(f"config.overwrite would move config.init_checkpoint="
                         f"{config.init_checkpoint}, inside --workdir={workdir}, aside with the "
                         "old run; choose another --workdir")


def _check_model_fits(config: ConfigDict, pretrained: heads.Pretrained) -> None:
    """Rows the model can read: positions within its table, token ids within its embedding
    (beyond either, every step is NaN)."""
    model, where = pretrained.config, f"{pretrained.location} ({checkpoint.CONFIG_FILE})"
    if config.max_seq_len > model.max_position_embeddings:
        raise ValueError(f"config.max_seq_len={config.max_seq_len} does not fit the position "
                         f"table of config.init_checkpoint: max_position_embeddings="
                         f"{model.max_position_embeddings} in {where}; set config.max_seq_len "
                         f"<= {model.max_position_embeddings}")
    vocab_size = pretrained.tokenizer.vocab_size
    if vocab_size > model.vocab_size:
        raise ValueError(f"config.init_checkpoint={pretrained.location}: its tokenizer has "
                         f"{vocab_size} tokens but the embedding table {model.vocab_size} rows "
                         f"(vocab_size in {where}); the tokenizer is not the model's")


def _check_usable(split: registry.Split) -> None:
    """A split with no examples, or one most of whose records were skipped, stops the run
    before training, naming the file, the counts and why they were skipped."""
    key = f"config.{split.name}_file"
    total = len(split.examples) + split.skipped
    why = f": {split.skipped.reason}" if split.skipped else ""
    if not split.examples:
        found = (f"all {total} records were skipped{why}" if split.skipped
                 else "the file is empty or has only a header")
        raise TaskDataError(f"{split.path} ({key}): no usable examples: {found}")
    if 2 * split.skipped > total:
        raise TaskDataError(f"{split.path} ({key}): {split.skipped} of {total} records were "
                            f"skipped{why}")


def _splits(config: ConfigDict) -> list[tuple[str, str]]:
    """(name, file) of the evaluation and prediction splits this run has."""
    named = (("eval", config.eval_file), ("eval_mismatched", config.eval_mismatched_file),
             ("test", config.test_file), ("test_mismatched", config.test_mismatched_file))
    return [(name, path) for name, path in named if path]


def finetune_one(config: ConfigDict, workdir: str, *,
                 on_checked: Callable[[], None] | None = None) -> dict[str, Any]:
    """One fine-tuning run; returns what it writes to eval_results.json ({} if stopped early).

    Every input is read and checked (each file, the model against max_seq_len and the
    tokenizer, the work directory against the run it may hold) and the checkpoint restored
    before anything is written; then `on_checked()`, if given.
    """
    _check_workdir(config, workdir)
    source = config.init_checkpoint
    pretrained = convert.open_pretrained(source)
    tokenizer = pretrained.tokenizer
    _check_model_fits(config, pretrained)
    bert_config = dataclasses.replace(
        pretrained.config, dropout_rate=float(config.dropout_rate),
        attention_dropout_rate=float(config.dropout_rate), dtype=config.dtype,
        top_bilstm=pretrained.config.top_bilstm or bool(config.top_bilstm))
    family = registry.family(config, tokenizer, pretrained)
    family.set_labels(config.train_file)
    train_split = family.load("train", config.train_file)
    splits = [family.load(name, path) for name, path in _splits(config)]
    dev = [s for s in splits if s.name.startswith("eval")]
    for split in (train_split, *splits):
        logging.info("%s: %d examples, %d rows (%s)%s", split.name, len(split.examples),
                     split.num_rows, split.path,
                     f", {split.skipped} skipped as the original recipe does" if split.skipped else "")
        _check_usable(split)

    plan = batches.TrainPlan(num_rows=train_split.num_rows,
                             batch_size=int(config.batch_size),
                             num_epochs=float(config.num_train_epochs), seed=int(config.seed),
                             buckets=length_buckets(config))
    if plan.steps < 1:
        raise ValueError(f"{config.train_file}: {plan.num_rows} training rows make no step of "
                         f"config.batch_size={config.batch_size} in "
                         f"config.num_train_epochs={config.num_train_epochs}")
    model = family.model(bert_config)
    task = family.task(model)
    optimizer = optimizer_settings(config, plan.steps)
    runner = build_runner(config, task, make_optimizer(optimizer))
    head = family.task_head(model)
    fingerprint = _fingerprint(config, head=head.kind if head else None,
                               labels=list(family.labels))
    trainer.claim_workdir(workdir, fingerprint, overwrite=config.overwrite,
                          keep=(FEATURE_CACHE_DIR,))

    files.path(workdir).mkdir(parents=True, exist_ok=True)
    manager = checkpoint.CheckpointManager(workdir, keep=config.keep_checkpoints)
    init_rng = jax.random.split(jax.random.key(config.seed))[0]

    def init() -> Any:
        if config.random_init:
            logging.info("random_init: fresh weights in the architecture of %s", source)
            return runner.init_state(init_rng)
        params, origin = family.initial_params(pretrained, model, init_rng)
        logging.info("%s", origin)
        return runner.init_state(init_rng, params)

    try:
        state, start_step, meta = trainer.restore_or_init(runner, manager, init)
    except BaseException:
        manager.close()
        raise
    if on_checked is not None:
        on_checked()
    if jax.process_index() == 0 and head is not None:
        checkpoint.write_model_description(workdir, bert_config, tokenizer)
        heads.save_task_head(workdir, head)
    trainer.record_run(config, workdir, fingerprint)
    best = _Best(files.path(workdir) / BEST_DIR, family.selection_metric, config.select_on_dev)
    last: dict[str, Any] = {}

    def evaluate(params: Any, step: int) -> dict[str, float]:
        predictions = {s.name: predict(runner, params, s, config) for s in dev}
        metrics: dict[str, float] = {}
        for split in dev:
            metrics.update(family.score(split, predictions[split.name]))
        last.update(step=step, predictions=predictions, metrics=metrics)
        best.offer(step, metrics, params)
        return metrics

    writer = MetricsWriter(workdir, resume_step=start_step)
    loop = trainer.LoopConfig.from_config(
        config, train_steps=plan.steps,
        eval_steps=plan.epoch_end_steps() if config.eval_every == 0 else ())
    logging.info("%s: %d steps of %d rows (%.2f epochs of %d rows), warmup %d, lr %g",
                 config.task, plan.steps, plan.batch_size, plan.num_epochs, plan.num_rows,
                 optimizer.warmup_steps, config.learning_rate)
    try:
        result = trainer.fit(runner=runner, loop=loop, manager=manager, writer=writer,
                             state=state, start_step=start_step, meta=meta,
                             train_batches=batches.train_batches(
                                 train_split.features, plan, start_step=start_step,
                                 max_seq_len=int(config.max_seq_len),
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count()),
                             schedule=learning_rate_schedule(optimizer),
                             evaluate=evaluate if dev else None, desc=config.task)
    finally:
        manager.close()
        writer.close()
    if result.stopped_by:
        return {}

    params, step, scored = result.state.params, result.step, f"final checkpoint (step {result.step})"
    if config.select_on_dev and best.step is not None:
        params, step = best.params(), best.step
        scored = f"step {best.step}, best on dev by {family.selection_metric}"
    if dev and not (last.get("step") == step and not config.select_on_dev):
        evaluate(params, step)
    results: dict[str, Any] = {"task": config.task, "checkpoint": scored, "step": step,
                               "train_steps": plan.steps, "train_examples": len(train_split.examples),
                               "selection_metric": family.selection_metric}
    if train_split.skipped:
        results["train_skipped"] = train_split.skipped
    results.update(last.get("metrics", {}))
    outputs = {}
    with files.staged_directory(workdir) as local_workdir:  # task writers write local files
        for split in splits:
            predictions = last["predictions"].get(split.name) if split in dev else None
            if predictions is None:
                predictions = predict(runner, params, split, config)
            outputs[split.name] = family.write(local_workdir, split, predictions)
            results[f"{split.name}_examples"] = len(split.examples)
            if split.skipped:
                results[f"{split.name}_skipped"] = split.skipped
    results["prediction_files"] = {k: [os.path.basename(p) for p in v]
                                   for k, v in outputs.items()}
    if jax.process_index() == 0:
        write_atomically(files.path(workdir) / RESULTS_FILE,
                         files.strict_json(results, indent=2) + "\n")
    logging.info("%s: %s", scored, trainer.format_metrics(
        {k: v for k, v in results.items() if isinstance(v, float)}))
    return results


class _Best:
    """With select_on_dev: the params of the evaluation best by the task's selection metric,
    kept as a model folder's params/ under DIR/best with best.json naming the step."""

    def __init__(self, directory: epath.Path, metric: str, enabled: bool) -> None:
        self.directory, self.metric, self.enabled = directory, metric, enabled
        self.step: int | None = None
        self.value = -np.inf
        summary = directory / "best.json"
        if enabled and summary.exists():
            saved = json.loads(summary.read_text())
            self.step, self.value = int(saved["step"]), float(saved["value"])

    def offer(self, step: int, metrics: Mapping[str, float], params: Any) -> None:
        if not self.enabled or not metrics.get(self.metric, -np.inf) > self.value:  # NaN: not
            return
        self.step, self.value = step, float(metrics[self.metric])
        checkpoint.save_params(self.directory, params)
        if jax.process_index() == 0:
            write_atomically(self.directory / "best.json", files.strict_json(
                {"step": step, "metric": self.metric, "value": self.value}))

    def params(self) -> Any:
        return checkpoint.load_params(self.directory)


def _run_name(learning_rate: float, seed: int) -> str:
    return f"lr{learning_rate:g}_seed{seed}"


def finetune(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """The run config describes: one run in `workdir`, or the grid of config.lr_grid x
    config.seeds in workdir/runs/ with a summary (finished runs are not redone)."""
    registry.validate(config)
    if not config.feature_cache_dir:  # one cache for every run under workdir
        config = config.copy_and_resolve_references()
        config.feature_cache_dir = str(files.path(workdir) / FEATURE_CACHE_DIR)
    runs = [(lr, seed) for lr in learning_rates(config) for seed in seeds(config)]
    if len(runs) == 1:
        single = config.copy_and_resolve_references()
        single.learning_rate, single.seed = runs[0]
        return finetune_one(single, workdir)
    # The grid's own fingerprint guards the finished runs, which are not redone (so not
    # checked again); it is recorded once the first run to start has checked its inputs.
    _check_workdir(config, workdir)
    fingerprint = _fingerprint(config)
    trainer.claim_workdir(workdir, fingerprint, overwrite=config.overwrite,
                          keep=(FEATURE_CACHE_DIR,))

    def record() -> None:
        if not (files.path(workdir) / trainer.RUN_FILE).exists():
            trainer.record_run(config, workdir, fingerprint)

    summaries = []
    for learning_rate, seed in runs:
        run_dir = str(files.path(workdir) / "runs" / _run_name(learning_rate, seed))
        run_config = config.copy_and_resolve_references()
        run_config.learning_rate, run_config.seed = learning_rate, seed
        run_config.lr_grid, run_config.seeds = "", ""
        run_config.overwrite = False  # the grid's work directory was moved aside whole
        done = files.path(run_dir) / RESULTS_FILE
        if done.exists():
            result = json.loads(done.read_text())
            logging.info("%s: finished earlier, not redone", run_dir)
        else:
            result = finetune_one(run_config, run_dir, on_checked=record)
            if not result:
                return {}  # stopped by a signal: rerun to resume
        summaries.append(dict(learning_rate=learning_rate, seed=seed, workdir=run_dir,
                              metrics={k: v for k, v in result.items() if isinstance(v, float)},
                              prediction_files=result.get("prediction_files", {})))
    return _summarize(config, workdir, summaries, result.get("selection_metric", ""))


def _summarize(config: ConfigDict, workdir: str, runs: list[dict[str, Any]],
               metric: str) -> dict[str, Any]:
    names = sorted(set.intersection(*(set(r["metrics"]) for r in runs)))
    mean = {k: statistics.fmean(r["metrics"][k] for r in runs) for k in names}
    std = {k: statistics.pstdev([r["metrics"][k] for r in runs]) for k in names}
    selected = max(runs, key=lambda r: r["metrics"].get(metric, -np.inf))
    summary = {"task": config.task, "selection_metric": metric,
               "selected": {k: selected[k] for k in ("learning_rate", "seed", "workdir")},
               **selected["metrics"], "mean": mean, "std": std, "runs": runs}
    if jax.process_index() == 0:
        for file in (name for names in selected["prediction_files"].values() for name in names):
            files.copy_file(files.path(selected["workdir"]) / file, files.path(workdir) / file)
        write_atomically(files.path(workdir) / RESULTS_FILE,
                         files.strict_json(summary, indent=2) + "\n")
    logging.info("%d runs; selected %s on dev %s; mean %s", len(runs),
                 files.path(selected["workdir"]).name, metric, trainer.format_metrics(mean))
    return summary


def define_flags() -> None:
    cli.define_run_flags("directory (or gs:// URL) for checkpoints, metrics and predictions")


def main(argv: list[str]) -> None:
    cli.run_command("finetune", argv, registry.validate, finetuning_config, finetune)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
