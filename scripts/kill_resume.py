"""Kill a tiny pretraining run at random steps and check that it ends as if it had never stopped.

    python scripts/kill_resume.py [--kills 20] [--steps 90] [--seed 0] [--workdir DIR]

Trains the tiny config (BERT L=2 H=128 on 7 State of the Union addresses, 4 sequences of 32
tokens per step) once without interruption, then again in a second work directory, killing
the process with SIGKILL at `--kills` random steps and rerunning the same command after each
kill. It then compares the two runs: params and optimizer state bit for bit, and every
metrics.jsonl row with every field but the timings. Prints a report and exits 1 on any
difference. About 15 s per restart on 2 CPU cores (most of it starting Python and JAX).

tests/test_reliability.py runs the same functions with three kills.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Fields that measure the machine, not the run.
TIMING_FIELDS = ("tokens_per_sec", "steps_per_sec", "input_wait_fraction")
CHECKPOINT_EVERY = 3  # not a multiple of LOG_EVERY: restarts then begin inside a metrics window
LOG_EVERY = 2
FIRST_STEP_MARK = "first step (compilation included)"  # logged by bert.pretrain after step 1


def pretrain_command(workdir: Path, cache_dir: Path, steps: int) -> list[str]:
    """The tiny run that every restart repeats word for word."""
    return [
        sys.executable, "-m", "bert.pretrain", "--config", "experiments/pretrain/tiny.py",
        f"--workdir={workdir}", f"--config.train_steps={steps}",
        "--config.data.train_files=data/sotu/train/191*.txt",
        "--config.data.eval_files=data/sotu/eval/19[24]*.txt",
        f"--config.data.cache_dir={cache_dir}",
        "--config.model.vocab_size=1000", "--config.batch_size=4", "--config.max_seq_len=32",
        "--config.max_predictions_per_seq=5", "--config.warmup_steps=2",
        "--config.schedule_steps=1000",  # the step compiles the same whatever train_steps is
        f"--config.log_every={LOG_EVERY}", f"--config.checkpoint_every={CHECKPOINT_EVERY}",
        "--config.keep_checkpoints=2", "--config.eval_every=10", "--config.eval_batches=1",
    ]


def pretrain_env(compile_cache: Path) -> dict[str, str]:
    """One CPU device, and a compilation cache shared by all runs: a restart then spends its
    time starting up, not compiling. Optimisation level 0 halves the first compilation."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0",
               JAX_COMPILATION_CACHE_DIR=str(compile_cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def run_to_end(command: list[str], env: dict[str, str]) -> str:
    """Runs `command` to completion; returns its log (stderr), raising if it failed."""
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return done.stderr


def last_logged_step(workdir: Path) -> int:
    """The step of the newest complete row of workdir/metrics.jsonl (0 before there is one)."""
    try:
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            continue
    return 0


def run_until(command: list[str], env: dict[str, str], workdir: Path, step: int,
              signum: int, delay: float) -> tuple[int, str]:
    """Starts `command`, waits until it has logged `step` or later, waits `delay` seconds more
    (so that the signal lands anywhere in a step, a save included) and sends `signum`.

    Returns (exit status, log). Raises if the run ends before it gets there.
    """
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                   stderr=log, text=True)
        try:
            # metrics.jsonl holds rows of the killed run until this one has restored its
            # checkpoint and dropped them, which is done before its first step.
            while FIRST_STEP_MARK not in Path(log.name).read_text() or (
                    last_logged_step(workdir) < step):
                if process.poll() is not None:
                    raise RuntimeError(f"the run ended (status {process.returncode}) before step "
                                       f"{step}:\n{Path(log.name).read_text()[-3000:]}")
                time.sleep(0.02)
            time.sleep(delay)
            process.send_signal(signum)
            status = process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        return status, Path(log.name).read_text()


def resumed_step(log: str) -> int:
    """The step a run's log says it resumed from (0 for a fresh start)."""
    marker = "resumed from step "
    if marker not in log:
        return 0
    return int(log.split(marker, 1)[1].split()[0])


def compare_runs(reference: Path, interrupted: Path) -> list[str]:
    """Differences between two finished work directories: the final step's arrays (bit for bit,
    params through their bytes, optimizer state through the saved fingerprints) and every
    metrics row (all fields but the timings). Empty when they are the same."""
    import numpy as np

    from bert.checkpoint import CHECKPOINTS_DIR, FINGERPRINTS_KEY, load_params
    from bert.metrics import read_metrics

    differences = []
    steps = [max(int(p.name) for p in (run / CHECKPOINTS_DIR).iterdir() if p.name.isdigit())
             for run in (reference, interrupted)]
    if steps[0] != steps[1]:
        return [f"final checkpoints differ: step {steps[0]} and step {steps[1]}"]
    import jax

    params = [jax.tree_util.tree_flatten_with_path(load_params(str(run)))[0]
              for run in (reference, interrupted)]
    for (path, ours), (_, theirs) in zip(*params):
        if np.asarray(ours).tobytes() != np.asarray(theirs).tobytes():
            differences.append(f"param {jax.tree_util.keystr(path)} differs")
    fingerprints = [json.loads((run / CHECKPOINTS_DIR / str(steps[0]) / "meta" / "metadata")
                               .read_text())[FINGERPRINTS_KEY] for run in (reference, interrupted)]
    differences += [f"saved array {key} differs" for key in sorted(fingerprints[0])
                    if fingerprints[0][key] != fingerprints[1].get(key)]
    rows = [[{k: v for k, v in row.items() if k not in TIMING_FIELDS}
             for row in read_metrics(run / "metrics.jsonl")] for run in (reference, interrupted)]
    if [r["step"] for r in rows[0]] != [r["step"] for r in rows[1]]:
        differences.append(f"metrics rows are for steps {[r['step'] for r in rows[0]]} and "
                           f"{[r['step'] for r in rows[1]]}")
    differences += [f"metrics row of step {a['step']} differs: {a} vs {b}"
                    for a, b in zip(*rows) if a != b]
    return differences


@dataclasses.dataclass
class Interruption:
    signal_name: str
    target_step: int  # the signal was sent once this step was logged
    exit_status: int
    started_from: int  # the step the interrupted process had resumed from (0: a fresh start)


def random_targets(rng: random.Random, count: int, first: int, last: int) -> list[int]:
    """`count` increasing steps in [first, last], one drawn from each of `count` equal slices,
    so that every restart makes progress."""
    edges = [first + (last - first + 1) * i // count for i in range(count + 1)]
    return [rng.randrange(lo, max(hi, lo + 1)) for lo, hi in zip(edges, edges[1:])]


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the kill steps; random if unset")
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards if given")
    args = parser.parse_args()
    seed = random.SystemRandom().randrange(2**31) if args.seed is None else args.seed
    rng = random.Random(seed)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="kill_resume_"))
    root.mkdir(parents=True, exist_ok=True)
    env = pretrain_env(root / "compile_cache")
    reference, interrupted = root / "reference", root / "interrupted"
    started = time.time()
    print(f"seed {seed}; uninterrupted run of {args.steps} steps in {reference}", flush=True)
    run_to_end(pretrain_command(reference, root / "data", args.steps), env)
    command = pretrain_command(interrupted, root / "data", args.steps)
    # From the third checkpoint on, so that a kill during a save always has an older one to use.
    targets = random_targets(rng, args.kills, 3 * CHECKPOINT_EVERY, args.steps - 2)
    interruptions = []
    for number, target in enumerate(targets, 1):
        status, log = run_until(command, env, interrupted, target, signal.SIGKILL,
                                delay=rng.uniform(0, 0.3))
        interruptions.append(Interruption("SIGKILL", target, status, resumed_step(log)))
        print(f"kill {number:2d}: SIGKILL once step {target} was logged (that process had "
              f"resumed from step {interruptions[-1].started_from}; exit status {status})",
              flush=True)
    final_log = run_to_end(command, env)
    differences = compare_runs(reference, interrupted)
    restarts = [i.started_from for i in interruptions[1:]] + [resumed_step(final_log)]
    print(f"\n{len(targets)} kills at steps {targets}; the restarts resumed from steps "
          f"{restarts} (checkpoints every {CHECKPOINT_EVERY} steps)")
    print(f"{time.time() - started:.0f}s in all")
    if differences:
        print(f"FAILED: {len(differences)} difference(s) from the uninterrupted run:")
        for line in differences[:20]:
            print("  " + line)
        return 1
    print("OK: final params and optimizer state are bit-identical to the uninterrupted run's, "
          "and every metrics row matches (timings aside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
