"""`make demo`: pretrain a small BERT on the shipped corpus on the CPU, show what it learned, then
fine-tune it on the shipped labelled sets next to the same model from random weights.

    python -m bert.demo --workdir runs/demo [--config experiments/pretrain/fast.py]
        [--finetune=experiments/finetune/demo_sentiment.py,...]   # "" skips fine-tuning

Pretrains with the small-budget recipe (experiments/pretrain/fast.py: the demo config's model,
data and schedule with the start and masking rate that leave the unigram plateau; --config
experiments/pretrain/demo.py gives the paper's recipe at the same size). Prints the held-out MLM
loss/accuracy and NSP accuracy before and after training beside the unigram baseline, fills in
masked words of held-out sentences with the model's top predictions, and then, for each
fine-tuning config, the dev metric of a run started from the pretrained model and of one
started from fresh weights (config.random_init), under DIR/finetune/<task>/{pretrained,random}.
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import ConfigDict

from bert import allocator, checkpoint, cli, files
from bert.config import pretraining_config, validate
from bert.finetune import finetune
from bert.metrics import read_metrics, setup_logging
from bert.model import BertForPreTraining
from bert.pretrain import define_flags, train_and_evaluate
from bert.tokenizer import Tokenizer

FINETUNE_CONFIGS = ("experiments/finetune/demo_sentiment.py", "experiments/finetune/demo_trec.py",
                    "experiments/finetune/demo_wnut.py")
STARTS = (("pretrained", False), ("random", True))  # (name, config.random_init)


def _held_out_sentences(pattern: str, count: int, rng: np.random.Generator) -> list[str]:
    """Medium-length lines of the eval files, split at sentence ends."""
    sentences = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            for line in f:
                for sentence in line.strip().split(". "):
                    if 8 <= len(sentence.split()) <= 20:
                        sentences.append(sentence.rstrip(".") + ".")
    picks = rng.choice(len(sentences), size=min(count, len(sentences)), replace=False)
    return [sentences[i] for i in sorted(picks)]


def fill_in_masks(model: BertForPreTraining, params, tokenizer: Tokenizer, sentence: str,
                  rng: np.random.Generator, top_k: int = 3) -> str:
    """Mask about 15% of the sentence's whole words and show the model's top guesses."""
    ids = tokenizer.encode(sentence)
    word_start = tokenizer.word_start_mask()
    starts = [i for i, t in enumerate(ids) if word_start[t]]
    words = [(s, (starts + [len(ids)])[k + 1]) for k, s in enumerate(starts)]
    chosen = rng.choice(len(words), size=max(1, round(0.15 * len(words))), replace=False)
    positions = sorted(p for k in chosen for p in range(*words[k]))
    masked = list(ids)
    for p in positions:
        masked[p] = tokenizer.mask_id
    input_ids = np.asarray([[tokenizer.cls_id] + masked + [tokenizer.sep_id]], np.int32)
    logits, _ = model.apply(
        {"params": params},
        input_ids=jnp.asarray(input_ids),
        segment_ids=jnp.zeros_like(input_ids),
        input_mask=jnp.ones_like(input_ids),
        masked_lm_positions=jnp.asarray([[p + 1 for p in positions]], jnp.int32),
    )
    top = np.argsort(-np.asarray(logits[0]), axis=-1)[:, :top_k]
    shown = []
    for p, guesses in zip(positions, top):
        options = "/".join(tokenizer.id_to_token(int(g)) for g in guesses)
        shown.append(f"{tokenizer.id_to_token(ids[p])} -> [{options}]")
    text = _with_masks_shown(tokenizer, ids, set(positions))
    return f"  {text}\n      " + "; ".join(shown)


def _with_masks_shown(tokenizer: Tokenizer, ids: list[int], masked: set[int]) -> str:
    """The sentence with each masked word as [MASK] (decoding drops the mask token itself)."""
    parts, run = [], []
    for i, token in enumerate(ids):
        if i in masked:
            if run:
                parts.append(tokenizer.decode(run))
                run = []
            if i - 1 not in masked:
                parts.append("[MASK]")
        else:
            run.append(token)
    if run:
        parts.append(tokenizer.decode(run))
    return " ".join(parts)


def summarize(config: ConfigDict, workdir: str, examples: int = 6) -> str:
    """Before/after eval metrics and filled-in masks, read back from the work directory."""
    records = read_metrics(files.path(workdir) / "metrics.jsonl")
    evals = [r for r in records if "eval_mlm_loss" in r]
    first, last = evals[0], evals[-1]
    train = [r for r in records if "tokens_per_sec" in r]
    # The unigram baseline predicts every masked token from training-token frequencies; NSP's
    # is chance (half the pairs are IsNext).
    unigram = {"mlm_loss": first.get("eval_unigram_mlm_loss", float("nan")),
               "mlm_accuracy": first.get("eval_unigram_mlm_accuracy", float("nan")),
               "nsp_accuracy": 0.5}
    lines = [
        "",
        f"held-out evaluation          step {first['step']:>6}   step {last['step']:>6}"
        "   unigram baseline",
        *(f"  {label:<27}{first['eval_' + key]:>11.3f}   {last['eval_' + key]:>11.3f}"
          f"   {unigram[key]:>16.3f}"
          for label, key in (("MLM loss", "mlm_loss"), ("MLM accuracy", "mlm_accuracy"),
                             ("NSP accuracy", "nsp_accuracy"))),
        f"  training speed             {np.median([r['tokens_per_sec'] for r in train]):.0f} tokens/s (median)",
        "",
        "held-out sentences, masked words -> the model's top 3 guesses:",
    ]
    tokenizer = checkpoint.load_tokenizer(workdir)
    model = BertForPreTraining(checkpoint.read_model_config(workdir))
    params = checkpoint.load_params(workdir)
    rng = np.random.default_rng(config.seed)
    eval_pattern = str(config.data.eval_files).split(",")[0]
    for sentence in _held_out_sentences(eval_pattern, examples, rng):
        lines.append(fill_in_masks(model, params, tokenizer, sentence, rng))
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One fine-tuning task's dev metric from the pretrained start and from random weights."""

    name: str  # the config file's name without "demo_"
    task: str  # config.task
    metric: str  # the task's selection metric
    pretrained: float
    random: float
    train_steps: int


def compare_starts(config_path: str, workdir: str) -> Comparison | None:
    """Fine-tunes `config_path` from the pretrained `workdir` and from fresh weights of its
    architecture, each in DIR/finetune/<name>/<start>; None if a signal stopped a run."""
    config = cli.load_config(config_path)
    name = os.path.splitext(os.path.basename(config_path))[0].removeprefix("demo_")
    results = {}
    for start, random_init in STARTS:
        run = config.copy_and_resolve_references()
        run.init_checkpoint, run.random_init = workdir, random_init
        results[start] = finetune(run, os.path.join(workdir, "finetune", name, start))
        if not results[start]:
            return None
    metric = results["pretrained"]["selection_metric"]
    return Comparison(name, config.task, metric, results["pretrained"][metric],
                      results["random"][metric], results["pretrained"]["train_steps"])


def comparison_table(rows: list[Comparison]) -> str:
    lines = ["", "fine-tuning, dev metric       metric      pretrained   random init   steps"]
    for row in rows:
        lines.append(f"  {row.name + ' (' + row.task + ')':<28}{row.metric:<12}"
                     f"{row.pretrained:>10.3f}{row.random:>14.3f}{row.train_steps:>8}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    setup_logging()
    config = cli.config_from_flags("demo", argv, validate, pretraining_config)
    workdir = flags.FLAGS.workdir
    allocator.configure(config.get("host_allocator", "auto"))  # before devices are touched
    logging.info("devices: %s", jax.devices())
    try:
        if not train_and_evaluate(config, workdir):
            return  # stopped by a signal: rerunning resumes
        summary = summarize(config, workdir, flags.FLAGS.examples)
        print(summary)
        rows = []
        for path in flags.FLAGS.finetune:
            row = compare_starts(path, workdir)
            if row is None:
                return  # stopped by a signal: rerunning resumes
            rows.append(row)
    except (ValueError, OSError, FloatingPointError) as error:
        raise SystemExit(f"bert.demo: error: {error}") from None
    if rows:  # again, below the fine-tuning logs
        print(summary + comparison_table(rows))


if __name__ == "__main__":
    # bert.pretrain owns --config and --workdir; the demo only changes their defaults.
    define_flags()
    flags.DEFINE_integer("examples", 6, "held-out sentences to fill in")
    flags.DEFINE_list("finetune", list(FINETUNE_CONFIGS),
                      "fine-tuning configs run from the pretrained model and from random weights")
    flags.FLAGS.set_default("config", "experiments/pretrain/fast.py")
    flags.FLAGS.set_default("workdir", "runs/demo")
    app.run(main, flags_parser=cli.parse_flags)
