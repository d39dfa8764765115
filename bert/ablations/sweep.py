"""The paper's ablations as sweeps: one command turns a table config into a finished table.

    python -m bert.sweep experiments/ablations/<table>.py --workdir DIR
        [--scale tiny|paper] [--seeds 3] [--pretrain_seeds 1] [--dry-run] [--launcher slurm|tpu]

A table config (experiments/ablations/*.py) is data: `get_config(scale)` returns a `Table` (the
pretraining recipe every arm starts from, the columns with their evaluation tasks, the paper's
source) and `get_arms(scale)` a list of arm dicts, each the overrides that make one row:

    dict(name="no_nsp", label="No NSP", pretrain={"data.nsp_weight": 0.0},
         paper={"MNLI-m": 83.9, "SST-2": 92.6})

Arm keys: name, label, paper (column -> the paper's number), pretrain (pretraining overrides),
finetune (overrides of every fine-tuning run of the arm), evals (column -> an `Eval` replacing
that column's task for this arm), pretrain_from (fine-tune the pretraining of another arm
instead of pretraining), step (fine-tune that checkpoint of it, not the last), group (the curve
an arm belongs to in a steps table).

Each arm runs in DIR/<arm>/: pretrain/ (python -m bert.pretrain), model/ (with a step: that
checkpoint as a model folder, python -m bert.convert at-step) and one fine-tuning work
directory per evaluation task (python -m bert.finetune with --config.seeds=1..N). A finished
command (its last checkpoint, model folder or eval_results.json is there) is skipped, and a
killed one resumes from its checkpoint when rerun, so rerunning the sweep continues it. Proxy
datasets are built into DIR/data (bert/ablations/data.py). Then DIR/results.md, DIR/results.csv
and DIR/<table>.png are written (bert/ablations/results.py).

`--pretrain_seeds K` (default 1: each arm pretrains once, as the paper did) adds K - 1 replicas
of every arm, DIR/<arm>.pseed<k>/, pretrained with config.seed raised by k and fine-tuned like
the arm; results pool each arm's runs over pretraining and fine-tuning seeds. Replicas run after
every original arm, so an interrupted sweep has whole tables at one pretraining seed first.

`--dry-run` prints every arm's commands; `--scale paper` prints the pretraining of each arm as a
launch through launch/slurm_gpu.sbatch (or launch/tpu_vm_pod.sh) and the fine-tuning commands
after it, and runs nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from typing import Any, Callable, Mapping, Sequence

from bert.ablations.table import Arm, ArmPlan, Job, Table

SCALES = ("tiny", "paper")
LAUNCHERS = ("slurm", "tpu")
PYTHON = "python"  # as printed; runs use this interpreter (sys.executable)


# -------------------------------------------------------------------------- the table config


_ARM_KEYS = {"name", "label", "paper", "pretrain", "finetune", "evals", "pretrain_from", "step",
             "group"}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def arm_from_dict(values: Mapping[str, Any], table: Table, source: str) -> Arm:
    """An arm dict checked against its table; errors name `source` and the arm."""
    name = values.get("name")
    where = f"{source}: arm {name!r}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{where}: name must be letters, digits, _ . or -")
    unknown = sorted(set(values) - _ARM_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)} (known: "
                         f"{', '.join(sorted(_ARM_KEYS))})")
    columns = {c.name for c in table.columns}
    for key in ("paper", "evals"):
        stray = sorted(set(values.get(key, {})) - columns)
        if stray:
            raise ValueError(f"{where}: {key} names columns {', '.join(stray)} the table lacks "
                             f"({', '.join(sorted(columns))})")
    step = values.get("step")
    if step is not None and (not isinstance(step, int) or step < 1):
        raise ValueError(f"{where}: step must be a positive integer, got {step!r}")
    return Arm(name=name, label=str(values.get("label", name)), paper=dict(values.get("paper", {})),
               pretrain=dict(values.get("pretrain", {})), finetune=dict(values.get("finetune", {})),
               evals=dict(values.get("evals", {})),
               pretrain_from=values.get("pretrain_from") or name,
               step=step, group=str(values.get("group", "")))


def load_table(path: str, scale: str) -> tuple[Table, list[Arm]]:
    """The Table and arms of a table config file at `scale`."""
    if not os.path.isfile(path):
        raise ValueError(f"table config {path} does not exist")
    spec = importlib.util.spec_from_file_location("ablation_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for function in ("get_config", "get_arms"):
        if not callable(getattr(module, function, None)):
            raise ValueError(f"{path} defines no {function}(scale)")
    table = module.get_config(scale)
    if not isinstance(table, Table):
        raise ValueError(f"{path}: get_config() returned {type(table).__name__}, not a Table")
    arms = [arm_from_dict(values, table, path) for values in module.get_arms(scale)]
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names) or not arms:
        raise ValueError(f"{path}: arm names must be unique and at least one, got {names}")
    for arm in arms:
        owner = next((a for a in arms if a.name == arm.pretrain_from), None)
        if owner is None or owner.pretrain_from != owner.name:
            raise ValueError(f"{path}: arm {arm.name!r}: pretrain_from={arm.pretrain_from!r} is "
                             "no arm that pretrains")
        if arm.pretrain_from != arm.name and arm.pretrain:
            raise ValueError(f"{path}: arm {arm.name!r} shares {arm.pretrain_from!r}'s "
                             "pretraining, so it cannot override it")
    if table.reference and table.reference not in names:
        raise ValueError(f"{path}: reference {table.reference!r} is not an arm")
    return table, arms


# -------------------------------------------------------------------------------- the plan


REPLICA = ".pseed"  # DIR/<arm>.pseed<k>/: the arm pretrained with seed + k


def with_pretraining_seeds(arms: Sequence[Arm], pretrain_seeds: int) -> list[Arm]:
    """`arms`, then for k = 1 .. pretrain_seeds - 1 a replica of each, pretrained with seed + k
    (or fine-tuning replica k of the arm it shares a pretraining with)."""
    replicas = [dataclasses.replace(arm, name=f"{arm.name}{REPLICA}{k}",
                                    pretrain_from=f"{arm.pretrain_from}{REPLICA}{k}",
                                    pretrain_seed=k, replica_of=arm.name)
                for k in range(1, pretrain_seeds) for arm in arms]
    return [*arms, *replicas]


def override_args(overrides: Mapping[str, Any], data_dir: str) -> list[str]:
    """--config.key=value arguments; "{data}" in a string value becomes `data_dir`."""
    args = []
    for key, value in overrides.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = value.replace("{data}", data_dir)
        else:
            text = repr(value) if isinstance(value, float) else str(value)
        args.append(f"--config.{key}={text}")
    return args


def _pretraining(config_path: str, overrides: Sequence[str]) -> Any:
    """A pretraining config with overrides (checked keys and types)."""
    from bert import cli  # only planning needs it; keeps `--help` light

    return cli.load_config(config_path, overrides)


def seed_list(seeds: int) -> str:
    return ",".join(str(seed) for seed in range(1, seeds + 1))


def pretrain_launch(launcher: str, config: str, workdir: str, overrides: Sequence[str]
                    ) -> tuple[str, ...]:
    """The launch/ command that runs `python -m bert.pretrain` on a cluster."""
    if launcher == "tpu":
        return ("launch/tpu_vm_pod.sh", "--name", "$TPU_NAME", "--zone", "$TPU_ZONE", config,
                workdir, *overrides)
    return ("sbatch", "launch/slurm_gpu.sbatch", config, workdir, *overrides)


def plan(table: Table, arms: Sequence[Arm], workdir: str, *, seeds: int = 3,
         launcher: str = "slurm") -> list[ArmPlan]:
    """Every arm's commands, in the order they must run (an arm's pretraining before any arm
    that fine-tunes it)."""
    from bert.finetune import RESULTS_FILE  # only planning needs it; keeps `--help` light

    data_dir = os.path.join(workdir, "data")
    pretrain_args, last_step = {}, {}
    for arm in arms:
        if arm.pretrain_from != arm.name:
            continue
        args = override_args({**table.pretrain_overrides, **arm.pretrain}, data_dir)
        config = _pretraining(table.pretrain_config, args)
        if arm.pretrain_seed:
            args += override_args({"seed": int(config.seed) + arm.pretrain_seed}, data_dir)
        pretrain_args[arm.name] = args
        last_step[arm.name] = int(config.train_steps)
    plans = []
    for arm in arms:
        jobs = []
        pretrain_dir = os.path.join(workdir, arm.pretrain_from, "pretrain")
        if arm.pretrain_from == arm.name:
            overrides = pretrain_args[arm.name]
            argv = (PYTHON, "-m", "bert.pretrain", "--config", table.pretrain_config,
                    "--workdir", pretrain_dir, *overrides)
            jobs.append(Job("pretrain", argv, pretrain_dir,
                            os.path.join(pretrain_dir, "checkpoints", str(last_step[arm.name])),
                            pretrain_launch(launcher, table.pretrain_config, pretrain_dir,
                                            overrides)))
        model_dir = pretrain_dir
        if arm.step is not None:
            model_dir = os.path.join(workdir, arm.name, "model")
            argv = (PYTHON, "-m", "bert.convert", "at-step", "--input", pretrain_dir,
                    "--step", str(arm.step), "--output", model_dir)
            jobs.append(Job("at_step", argv, model_dir, os.path.join(model_dir, "params")))
        finetune_dirs = {}
        for column in table.columns:
            task = arm.eval_of(column)
            if task is None or task.name in finetune_dirs:
                continue
            run_dir = os.path.join(workdir, arm.name, task.name)
            finetune_dirs[task.name] = run_dir
            overrides = override_args({**task.overrides, **arm.finetune,
                                       "init_checkpoint": model_dir,
                                       "seeds": seed_list(seeds)}, data_dir)
            argv = (PYTHON, "-m", "bert.finetune", "--config", task.config, "--workdir", run_dir,
                    *overrides)
            jobs.append(Job("finetune", argv, run_dir, os.path.join(run_dir, RESULTS_FILE)))
        plans.append(ArmPlan(arm, tuple(jobs), pretrain_dir, finetune_dirs,
                             arm.step or last_step[arm.pretrain_from]))
    return plans


# ------------------------------------------------------------------------------ running it


_BARE = re.compile(r"[\w@%+=:,./${}-]+")


def _quote(arg: str) -> str:
    if _BARE.fullmatch(arg):
        return arg
    if "$" in arg and not re.search(r'["\\`]', arg):
        return f'"{arg}"'  # $CORPUS expands, a glob after it stays for bert.pretrain to expand
    return shlex.quote(arg)


def shell_line(argv: Sequence[str]) -> str:
    """argv as one shell line; $VARIABLES (paths the user sets) are left to expand."""
    return " ".join(_quote(arg) for arg in argv)


def describe_plan(plans: Sequence[ArmPlan], workdir: str, *, scale: str) -> str:
    """What --dry-run prints: per arm, its commands (at paper scale, pretraining as a launch)."""
    lines = []
    if scale == "tiny":
        lines += ["# proxy datasets (the sweep builds them itself)",
                  shell_line((PYTHON, "-m", "bert.ablation_data", "--output",
                              os.path.join(workdir, "data")))]
    for arm_plan in plans:
        arm = arm_plan.arm
        lines.append(f"# arm {arm.name}: {arm.label}")
        for job in arm_plan.jobs:
            paper_launch = scale == "paper" and job.launch
            lines.append(shell_line(job.launch if paper_launch else job.argv))
    return "\n".join(lines)


Runner = Callable[[Sequence[str]], None]


def run_command(argv: Sequence[str]) -> None:
    """Runs one planned command with this interpreter; a failure stops the sweep."""
    command = [sys.executable, *argv[1:]] if argv[0] == PYTHON else list(argv)
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise ValueError(f"exit status {completed.returncode}: {shell_line(argv)} (rerun the "
                         "sweep to resume once it is fixed)")


def run_plan(plans: Sequence[ArmPlan], runner: Runner = run_command) -> list[str]:
    """Runs every job whose result is not there yet; returns the commands that ran."""
    ran = []
    for arm_plan in plans:
        for job in arm_plan.jobs:
            if os.path.exists(job.done_path):
                continue
            print(f"bert.sweep: {arm_plan.arm.name}: {job.kind} -> {job.workdir}", flush=True)
            runner(job.argv)
            if not os.path.exists(job.done_path):
                raise ValueError(f"arm {arm_plan.arm.name}: {job.kind} ended without "
                                 f"{job.done_path} (stopped early?); rerun the sweep to resume")
            ran.append(shell_line(job.argv))
    return ran


def sweep(table_path: str, workdir: str, *, scale: str = "tiny", seeds: int = 3,
          pretrain_seeds: int = 1, dry_run: bool = False, launcher: str = "slurm",
          runner: Runner = run_command, command: str = "") -> str:
    """Runs (or, with dry_run or at paper scale, prints) a table; returns what it printed or
    the path of results.md."""
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if seeds < 1 or pretrain_seeds < 1:
        raise ValueError(f"--seeds and --pretrain_seeds must be at least 1, got {seeds} and "
                         f"{pretrain_seeds}")
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    table, arms = load_table(table_path, scale)
    arms = with_pretraining_seeds(arms, pretrain_seeds)
    plans = plan(table, arms, workdir, seeds=seeds, launcher=launcher)
    if dry_run or scale == "paper":
        text = describe_plan(plans, workdir, scale=scale)
        print(text)
        return text
    from bert.ablations import data, results  # only a run needs them; keeps `--help` light

    data.build(os.path.join(workdir, "data"))
    run_plan(plans, runner)
    return results.write_results(table, plans, workdir, command=command or shell_line(
        (PYTHON, "-m", "bert.sweep", table_path, "--workdir", workdir, "--scale", scale,
         "--seeds", str(seeds), *(("--pretrain_seeds", str(pretrain_seeds))
                                  if pretrain_seeds > 1 else ()))))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bert.sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="experiments/ablations/<table>.py")
    parser.add_argument("--workdir", required=True, help="one folder per arm, results, plots")
    parser.add_argument("--scale", default="tiny", choices=SCALES,
                        help="tiny: run on this machine; paper: print the cluster launches")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per task")
    parser.add_argument("--pretrain_seeds", "--pretrain-seeds", type=int, default=1,
                        help="pretraining seeds per arm (1: each arm pretrains once)")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="print every arm's commands, run nothing")
    parser.add_argument("--launcher", default="slurm", choices=LAUNCHERS,
                        help="--scale paper: launch/slurm_gpu.sbatch or launch/tpu_vm_pod.sh")
    args = parser.parse_args(argv)
    try:
        result = sweep(args.table, args.workdir, scale=args.scale, seeds=args.seeds,
                       pretrain_seeds=args.pretrain_seeds, dry_run=args.dry_run,
                       launcher=args.launcher)
    except (ValueError, OSError) as error:
        raise SystemExit(f"bert.sweep: error: {' '.join(str(error).split())}") from None
    if not (args.dry_run or args.scale == "paper"):
        print(f"wrote {result}")


if __name__ == "__main__":
    main()
