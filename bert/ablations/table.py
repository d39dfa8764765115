"""The data of an ablation table and of its plan: what a table config
(experiments/ablations/*.py) returns, and the commands bert/ablations/sweep.py plans for each arm
and bert/ablations/results.py reads back. No logic of either lives here, so both import it."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Eval:
    """One fine-tuning task: its config file, overrides, and the metric read from its
    eval_results.json (times `scale`, so that every column is in percent)."""

    name: str  # the work directory's name under DIR/<arm>/
    config: str  # experiments/finetune/<task>.py
    overrides: Mapping[str, Any]  # config key -> value; "{data}" in a value is DIR/data
    metric: str  # key in eval_results.json: accuracy, f1, ...
    scale: float = 100.0  # 0-1 metrics as percent; SQuAD's are 0-100 already
    proxy: str = ""  # what stands in for the paper's task, said in the table header


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of the paper's table: a fine-tuned metric, or one of the pretraining run
    (`pretrain_metric`, the last evaluation's, exp() of it for a perplexity)."""

    name: str
    eval: Eval | None = None
    pretrain_metric: str = ""  # e.g. eval_mlm_loss
    exp: bool = False  # report exp(metric): perplexity from a loss


@dataclasses.dataclass(frozen=True)
class Table:
    name: str  # file stem of the plot
    title: str
    paper: str  # which table of the paper, which model and sets
    pretrain_config: str  # experiments/pretrain/<name>.py every arm starts from
    pretrain_overrides: Mapping[str, Any]
    columns: tuple[Column, ...]
    reference: str = ""  # the arm the others are compared with (default: the first)
    notes: tuple[str, ...] = ()
    steps: bool = False  # arms are checkpoints along runs: plot curves against `step`


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    label: str
    paper: Mapping[str, float]
    pretrain: Mapping[str, Any]
    finetune: Mapping[str, Any]
    evals: Mapping[str, Eval]
    pretrain_from: str
    step: int | None
    group: str
    pretrain_seed: int = 0  # added to the pretraining config's seed (replicas: 1, 2, ...)
    replica_of: str = ""  # the arm whose results this replica's runs pool into

    def eval_of(self, column: Column) -> Eval | None:
        return self.evals.get(column.name, column.eval)


@dataclasses.dataclass(frozen=True)
class Job:
    """One command of an arm, and the file or folder that exists once it has finished."""

    kind: str  # pretrain, at_step or finetune
    argv: tuple[str, ...]
    workdir: str
    done_path: str
    launch: tuple[str, ...] = ()  # --scale paper: how the command is started on a cluster


@dataclasses.dataclass(frozen=True)
class ArmPlan:
    arm: Arm
    jobs: tuple[Job, ...]
    pretrain_dir: str  # where this arm's pretraining is (its own or pretrain_from's)
    finetune_dirs: Mapping[str, str]  # eval name -> work directory
    step: int  # the pretraining step its fine-tuning starts from
