"""A finished sweep's results: DIR/results.csv, DIR/results.md and DIR/<table>.png.

results.csv has one row per run (an arm's fine-tuning seed on one task, or its pretraining for a
pretraining column). results.md puts each arm's mean ± spread (population std over fine-tuning
seeds, as bert.finetune reports it) beside the paper's number, and marks each arm against the
table's reference arm:

    ✓  the measured difference has the paper's sign
    ✗  it has the opposite sign
    ≈  within noise: |difference| < the larger of the two arms' spreads

then counts, per column, the pairs of arms whose order agrees with the paper's.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import statistics
from typing import Any, Sequence

from bert.ablations.table import ArmPlan, Table
from bert.files import write_atomically
from bert.finetune import RESULTS_FILE

CSV_FIELDS = ("table", "arm", "label", "column", "task", "proxy", "step", "pretrain_seed", "seed",
              "value", "paper")
AGREE, DISAGREE, NOISE, REFERENCE = "✓", "✗", "≈", "ref"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One arm in one column: a value per run, and the paper's number."""

    values: tuple[float, ...]
    paper: float | None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def spread(self) -> float:
        return statistics.pstdev(self.values) if len(self.values) > 1 else 0.0


def finetune_runs(run_dir: str, metric: str) -> list[tuple[int, float]]:
    """(seed, metric) of every run in a bert.finetune work directory (several seeds or one)."""
    path = os.path.join(run_dir, RESULTS_FILE)
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    runs = results.get("runs") or [{"seed": _single_seed(run_dir), "metrics": results}]
    try:
        return [(int(run["seed"]), float(run["metrics"][metric])) for run in runs]
    except KeyError:
        raise ValueError(f"{path} has no metric {metric!r}") from None


def _single_seed(run_dir: str) -> int:
    path = os.path.join(run_dir, "experiment_config.json")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return int(json.load(f).get("seed", 0))


def last_logged(metrics_file: str, key: str) -> float:
    """The last value of `key` in a metrics.jsonl."""
    value = None
    with open(metrics_file, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if key in row:
                value = float(row[key])
    if value is None:
        raise ValueError(f"{metrics_file} never logged {key}")
    return value


def logged_curve(metrics_file: str, key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    with open(metrics_file, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if key in row:
                steps.append(int(row["step"]))
                values.append(float(row[key]))
    return steps, values


def collect(table: Table, plans: Sequence[ArmPlan]
            ) -> tuple[dict[tuple[str, str], Cell], list[dict[str, Any]]]:
    """Cells by (arm, column) and the CSV rows; a task not run yet is left out. A replica's
    runs (another pretraining seed) pool into its arm's cell."""
    cells: dict[tuple[str, str], Cell] = {}
    rows = []
    for arm_plan in plans:
        arm = arm_plan.arm
        name = arm.replica_of or arm.name
        for column in table.columns:
            task = arm.eval_of(column)
            if column.pretrain_metric:
                metrics_file = os.path.join(arm_plan.pretrain_dir, "metrics.jsonl")
                if not os.path.exists(metrics_file):
                    continue
                value = last_logged(metrics_file, column.pretrain_metric)
                runs, task_name, proxy = [(0, math.exp(value) if column.exp else value)], \
                    "pretrain", ""
            elif task is not None:
                run_dir = arm_plan.finetune_dirs[task.name]
                if not os.path.exists(os.path.join(run_dir, RESULTS_FILE)):
                    continue
                runs = [(seed, value * task.scale)
                        for seed, value in finetune_runs(run_dir, task.metric)]
                task_name, proxy = task.name, task.proxy
            else:
                continue
            paper = arm.paper.get(column.name)
            pooled = cells[name, column.name].values if (name, column.name) in cells else ()
            cells[name, column.name] = Cell((*pooled, *(v for _, v in runs)), paper)
            for seed, value in runs:
                rows.append(dict(table=table.name, arm=name, label=arm.label,
                                 column=column.name, task=task_name, proxy=proxy,
                                 step=arm_plan.step, pretrain_seed=arm.pretrain_seed, seed=seed,
                                 value=round(value, 4), paper="" if paper is None else paper))
    return cells, rows


def mark(cell: Cell, reference: Cell) -> str:
    """How an arm's difference to the reference compares with the paper's (module docstring)."""
    if cell is reference:
        return REFERENCE
    if cell.paper is None or reference.paper is None:
        return ""
    difference = cell.mean - reference.mean
    if abs(difference) < max(cell.spread, reference.spread):
        return NOISE
    paper_difference = cell.paper - reference.paper
    return AGREE if math.copysign(1, difference) == math.copysign(1, paper_difference) \
        and paper_difference != 0 else DISAGREE


def pair_agreement(cells: Sequence[Cell]) -> tuple[int, int, int]:
    """(agreeing, within noise, disagreeing) pairs of arms, ordered by measurement vs paper."""
    counts = [0, 0, 0]
    for a, b in itertools.combinations([c for c in cells if c.paper is not None], 2):
        result = mark(a, b)
        counts[(AGREE, NOISE, DISAGREE).index(result)] += 1
    return counts[0], counts[1], counts[2]


def _cell_text(cell: Cell | None, reference: Cell | None) -> str:
    if cell is None:
        return "not yet run"
    text = f"{cell.mean:.2f}" + (f" ± {cell.spread:.2f}" if len(cell.values) > 1 else "")
    if cell.paper is not None:
        text += f" (paper {cell.paper:g})"
    marked = mark(cell, reference) if reference is not None else ""
    return f"{text} {marked}".rstrip()


def markdown(table: Table, plans: Sequence[ArmPlan], cells: dict[tuple[str, str], Cell], *,
             command: str, plot: str, pretrain_seeds: int = 1) -> str:
    """results.md (see the module docstring)."""
    reference_name = table.reference or plans[0].arm.name
    lines = [f"# {table.title}", "", f"Paper: {table.paper}.", "", f"Command: `{command}`", ""]
    proxies = {}
    for column in table.columns:
        task = column.eval
        if task is not None and task.proxy:
            proxies.setdefault(f"{task.name}: {task.proxy}", []).append(column.name)
    if proxies:
        lines.append("Proxies (the paper's task has no local copy):")
        lines += [f"- {', '.join(columns)} → {text}" for text, columns in proxies.items()]
        lines.append("")
    header = ["Arm", *(["Step"] if table.steps else []), *(c.name for c in table.columns)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm_plan in plans:
        arm = arm_plan.arm
        row = [arm.label, *([str(arm_plan.step)] if table.steps else [])]
        for column in table.columns:
            reference = cells.get((reference_name, column.name))
            row.append(_cell_text(cells.get((arm.name, column.name)), reference))
        lines.append("| " + " | ".join(row) + " |")
    over = "fine-tuning seeds" + (f" of {pretrain_seeds} pretraining seeds each"
                                  if pretrain_seeds > 1 else "")
    lines += ["", f"Mean ± spread (population std) over {over}. Marks against "
              f"{reference_name}: {AGREE} the difference has the paper's sign, {DISAGREE} the "
              f"opposite sign, {NOISE} within noise (|difference| < the larger spread of the "
              f"two arms)."]
    counted = []
    for column in table.columns:
        column_cells = [cells[a.arm.name, column.name] for a in plans
                        if (a.arm.name, column.name) in cells]
        if sum(c.paper is not None for c in column_cells) >= 2:
            counted.append((column.name, *pair_agreement(column_cells)))
    if counted:
        lines += ["", "Order of every pair of arms against the paper's:", "",
                  "| Column | agree | within noise | disagree |", "|---|---|---|---|"]
        lines += [f"| {name} | {a} | {n} | {d} |" for name, a, n, d in counted]
    if table.notes:
        lines += ["", *(f"- {note}" for note in table.notes)]
    lines += ["", f"![{table.title}]({plot})", ""]
    return "\n".join(lines)


def write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, buffer.getvalue())


def plot(table: Table, plans: Sequence[ArmPlan], cells: dict[tuple[str, str], Cell],
         path: str) -> None:
    """Bars per column (seed spread as error bars, the paper's numbers on a second axis), or
    for a steps table, the fine-tuned metric and the pretraining loss against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if table.steps:
        figure = _plot_steps(plt, table, plans, cells)
    else:
        figure = _plot_bars(plt, table, plans, cells)
    figure.suptitle(table.title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    write_atomically(path, buffer.getvalue())


def _plot_bars(plt: Any, table: Table, plans: Sequence[ArmPlan],
               cells: dict[tuple[str, str], Cell]) -> Any:
    columns = table.columns
    figure, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns) + 1, 4.2),
                                squeeze=False)
    labels = [p.arm.label for p in plans]
    positions = range(len(plans))
    for ax, column in zip(axes[0], columns):
        found = [cells.get((p.arm.name, column.name)) for p in plans]
        means = [c.mean if c else float("nan") for c in found]
        spreads = [c.spread if c else 0.0 for c in found]
        ax.bar([x - 0.2 for x in positions], means, 0.4, yerr=spreads, capsize=3,
               color="tab:blue", label="measured (mean ± spread)")
        ax.set_title(column.name, fontsize=9)
        ax.set_xticks(list(positions), labels, rotation=60, ha="right", fontsize=7)
        finite = [m for m in means if not math.isnan(m)]
        if finite:
            low, high = min(finite), max(finite)
            ax.set_ylim(max(0.0, low - (high - low) - 1), high + (high - low) * 0.5 + 1)
        papers = [p.arm.paper.get(column.name) for p in plans]
        if any(v is not None for v in papers):
            twin = ax.twinx()
            twin.bar([x + 0.2 for x in positions],
                     [float("nan") if v is None else v for v in papers], 0.4,
                     color="none", edgecolor="tab:orange", hatch="//", label="paper")
            known = [v for v in papers if v is not None]
            span = max(known) - min(known)
            twin.set_ylim(min(known) - span - 0.5, max(known) + span * 0.5 + 0.5)
            twin.tick_params(labelsize=7, colors="tab:orange")
        ax.tick_params(axis="y", labelsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color="tab:blue"),
               plt.Rectangle((0, 0), 1, 1, facecolor="none", edgecolor="tab:orange", hatch="//")]
    figure.legend(handles, ["measured, left axis (mean ± spread)", "paper, right axis"],
                  loc="lower center", ncol=2, fontsize=8)
    figure.subplots_adjust(bottom=0.3)
    return figure


def _plot_steps(plt: Any, table: Table, plans: Sequence[ArmPlan],
                cells: dict[tuple[str, str], Cell]) -> Any:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    groups = sorted({p.arm.group for p in plans})
    column = table.columns[0]
    for group in groups:
        members = sorted((p for p in plans if p.arm.group == group and
                          (p.arm.name, column.name) in cells), key=lambda p: p.step)
        left.errorbar([p.step for p in members],
                      [cells[p.arm.name, column.name].mean for p in members],
                      yerr=[cells[p.arm.name, column.name].spread for p in members],
                      marker="o", capsize=3, label=group)
        owner = next(p for p in plans if p.arm.group == group and p.arm.pretrain_from == p.arm.name)
        metrics_file = os.path.join(owner.pretrain_dir, "metrics.jsonl")
        if os.path.exists(metrics_file):
            key = "ltr_loss" if owner.arm.pretrain.get("objective") == "ltr" else "mlm_loss"
            right.plot(*logged_curve(metrics_file, key), label=f"{group} ({key}, train)")
    left.set(xlabel="pretraining step", ylabel=f"{column.name} dev (%)",
             title="fine-tuned from checkpoints")
    right.set(xlabel="pretraining step", ylabel="loss (nats per predicted token)",
              title="pretraining convergence")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    return figure


def write_results(table: Table, plans: Sequence[ArmPlan], workdir: str, *, command: str) -> str:
    """results.csv, <table>.png and results.md in `workdir`; returns results.md's path."""
    cells, rows = collect(table, plans)
    write_csv(os.path.join(workdir, "results.csv"), rows)
    plot_file = f"{table.name}.png"
    arms = [p for p in plans if not p.arm.replica_of]  # replicas are pooled into these
    plot(table, arms, cells, os.path.join(workdir, plot_file))
    path = os.path.join(workdir, "results.md")
    pretrain_seeds = 1 + max(p.arm.pretrain_seed for p in plans)
    write_atomically(path, markdown(table, arms, cells, command=command, plot=plot_file,
                                    pretrain_seeds=pretrain_seeds))
    return path
