"""Time to accuracy: held-out masked-LM accuracy against wall-clock seconds, for a fixed budget.

    python -m benchmarks.time_to_accuracy --budget_s 600 --workdir runs/tta \
        --output results/time_to_accuracy.json [--arms paper,hf_flax,CONFIG.py] [--tokenizer DIR]

Arms, all at the demo's model size (2 layers, hidden 128), batch 32 x 128 tokens, on the same
corpus (data/sotu/train) and the same uncased WordPiece vocabulary (trained once here, outside
every budget, or --tokenizer):
    paper    python -m bert.pretrain --config experiments/pretrain/demo.py: the paper's recipe
             (post-LN, 15% masking 80/10/10, MLM + NSP, linear warmup and decay, AdamW) at the
             demo's size and learning rate
    CONFIG.py  python -m bert.pretrain --config CONFIG.py, any other recipe (the arm is named by
             the file's stem)
    hf_flax  transformers' FlaxBertForMaskedLM trained as its run_mlm_flax.py example does
             (benchmarks/run_mlm_flax.py), with the paper arm's learning rate, warmup and batch

Each arm's command is started with the clock (imports, data preparation and compilation are
inside the budget) and sent SIGTERM when the budget is spent; the step it saves then is its last
point. Points along the way are its checkpoints, timed when they appear on disk. Every point is
exported to a Hugging Face folder (`bert.convert at-step` + `to-hf` for ours) and scored by ONE
scorer, benchmarks/mlm_scorer.py (transformers' PyTorch BertForMaskedLM on data/sotu/eval with
fixed masks). Arms run one after another, so they never share the cores. Needs the bench venv
(transformers 4.x for the Flax model): `make install-bench`.

Writes OUTPUT (JSON: machine, load, budget, each arm's points) and OUTPUT with .png (accuracy
against seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import mlm_scorer

TRAIN_FILES = "data/sotu/train/*.txt"
EVAL_FILES = "data/sotu/eval/*.txt"
PAPER_CONFIG = "experiments/pretrain/demo.py"


def arm_name(arm: str) -> str:
    return Path(arm).stem if arm.endswith(".py") else arm


def train_vocab(directory: Path, vocab_size: int = 8000) -> Path:
    """The uncased WordPiece vocabulary every arm shares (bert.wordpiece, on the train text)."""
    if (directory / "vocab.txt").exists():
        return directory
    import glob

    from bert.wordpiece import train_wordpiece

    def lines():
        for path in sorted(glob.glob(TRAIN_FILES)):
            with open(path, encoding="utf-8") as f:
                yield from (line.strip() for line in f if line.strip())

    train_wordpiece(lines(), vocab_size).save(directory)
    return directory


def _run_with_budget(command: list[str], budget_s: float, start: float, log: Path,
                     poll: Any) -> None:
    """Run `command` until it exits or the budget ends (then SIGTERM, and wait for its save);
    `poll()` is called about twice a second, to time checkpoints as they appear."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        signalled = False
        while process.poll() is None:
            poll()
            if not signalled and time.time() - start >= budget_s:
                process.send_signal(signal.SIGTERM)
                signalled = True
            time.sleep(0.5)
        poll()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}: see {log}")


def run_ours(config_file: str, workdir: Path, vocab: Path, budget_s: float, save_every: int,
             overrides: list[str]) -> list[dict[str, Any]]:
    from bert import convert

    checkpoints = workdir / "checkpoints"
    seen: dict[int, float] = {}
    start = time.time()

    def poll() -> None:
        if checkpoints.is_dir():
            for entry in checkpoints.iterdir():
                if re.fullmatch(r"\d+", entry.name) and int(entry.name) not in seen:
                    seen[int(entry.name)] = time.time() - start

    command = [sys.executable, "-m", "bert.pretrain", "--config", config_file,
               "--workdir", str(workdir), f"--config.data.tokenizer={vocab}",
               f"--config.checkpoint_every={save_every}", "--config.keep_checkpoints=1000",
               *overrides]
    _run_with_budget(command, budget_s, start, workdir.parent / f"{workdir.name}.log", poll)
    points = []
    for step in sorted(seen):
        model_dir, hf_dir = workdir / "models" / str(step), workdir / "hf" / f"step_{step}"
        if not hf_dir.exists():
            convert.model_at_step(str(workdir), step, str(model_dir))
            convert.export_hf(str(model_dir), str(hf_dir))
        points.append({"step": step, "seconds": seen[step], "model": str(hf_dir)})
    return points


def run_hf_flax(workdir: Path, vocab: Path, budget_s: float, save_every: int,
                overrides: list[str]) -> list[dict[str, Any]]:
    start = time.time()
    command = [sys.executable, "-m", "benchmarks.run_mlm_flax", "--vocab", str(vocab),
               "--train_files", TRAIN_FILES, "--output", str(workdir),
               f"--save_every={save_every}", f"--start_time={start}", *overrides]
    workdir.mkdir(parents=True, exist_ok=True)
    _run_with_budget(command, budget_s, start, workdir.parent / "hf_flax.log", lambda: None)
    with open(workdir / "points.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return [{**row, "model": str(workdir / f"step_{row['step']}")} for row in rows]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, run in results["arms"].items():
        ax.plot([p["seconds"] for p in run["points"]], [p["mlm_accuracy"] for p in run["points"]],
                marker="o", label=arm)
    ax.axhline(results["unigram_accuracy"], color="gray", linestyle=":", label="unigram")
    ax.axvline(results["budget_s"], color="black", linewidth=0.8)
    ax.set_xlabel("wall-clock seconds (imports, data preparation and compilation included)")
    ax.set_ylabel("held-out masked-LM accuracy")
    ax.set_title(f"Time to accuracy, {results['machine']['cpus']} CPU cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget_s", type=float, default=600.0)
    parser.add_argument("--workdir", default="runs/time_to_accuracy")
    parser.add_argument("--output", default="results/time_to_accuracy.json")
    parser.add_argument("--arms", default="paper,hf_flax",
                        help="paper, hf_flax, or paths of pretraining config files")
    parser.add_argument("--tokenizer", default="", help="WordPiece folder; '' = train one")
    parser.add_argument("--save_every", type=int, default=500, help="steps between points")
    parser.add_argument("--override", action="append", default=[],
                        help="ARM:FLAG passed to that arm's command, e.g. paper:--config.seed=1")
    args = parser.parse_args()
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)  # each arm's log lands here, a given vocabulary too
    vocab = Path(args.tokenizer) if args.tokenizer else train_vocab(root / "vocab")
    windows = mlm_scorer.masked_windows(str(vocab), EVAL_FILES)
    results: dict[str, Any] = {
        "budget_s": args.budget_s, "eval_files": EVAL_FILES, "masked_positions":
        int((windows["labels"] >= 0).sum()), "unigram_accuracy": mlm_scorer.unigram_accuracy(windows),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "arms": {}}
    for arm in args.arms.split(","):
        name = arm_name(arm)
        overrides = [o.split(":", 1)[1] for o in args.override if o.startswith(name + ":")]
        load_before = os.getloadavg()
        workdir = root / name
        if arm == "hf_flax":
            points = run_hf_flax(workdir, vocab, args.budget_s, args.save_every, overrides)
        else:
            config_file = PAPER_CONFIG if arm == "paper" else arm
            points = run_ours(config_file, workdir, vocab, args.budget_s, args.save_every,
                              overrides)
        for point in points:
            point.update(mlm_scorer.score(point["model"], windows))
        results["arms"][name] = {"points": points, "overrides": overrides,
                                "load_before": load_before, "load_after": os.getloadavg()}
        final = points[-1]
        print(f"{name}: step {final['step']} at {final['seconds']:.0f}s: "
              f"held-out MLM accuracy {final['mlm_accuracy']:.3f}", flush=True)
        output = Path(args.output)  # after every arm, so a failing arm keeps the others
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
        plot(results, output.with_suffix(".png"))


if __name__ == "__main__":
    main()
