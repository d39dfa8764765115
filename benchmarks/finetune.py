"""The fine-tuning benchmark: what `python -m benchmarks.step --task classify|squad|eval` times.

classify  the fine-tuning step of sentence classification, 2 labels, as the SST-2 recipe
          (experiments/finetune/sst2.py: 128 tokens, batch 32) runs it: bert-jax's
          `make_train_step` with the task's `FineTuneTask` and optimizer, against transformers'
          BertForSequenceClassification (PyTorch, torch AdamW, the same clip) and
          FlaxBertForSequenceClassification (optax adamw).
squad     the same for span QA (experiments/finetune/squad_v1.py: 384 tokens, batch 32):
          BertForQuestionAnswering / FlaxBertForQuestionAnswering.
eval      bert-jax's evaluation (`bert.finetune.predict`: length buckets, sorted by length) of
          the classifier on real sentences (--eval_files, tokenized with --eval_tokenizer), and
          the same evaluation padded to max_seq_len always (the `fixed_length` arm): sentences/s.
          A "step" is one pass over all the sentences.

This module holds what those tasks add to the step benchmark (benchmarks/step.py, which runs the
workers, rounds and reports): each task's recipe and shapes, synthetic batches, FLOPs, the
peers' heads and losses, and the evaluation pass with its real sentences.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from benchmarks.measure import encoder_matmuls, jax_peak_memory, time_steps

TASKS = ("classify", "squad")  # the fine-tuning steps; "eval" times evaluation passes
# The fine-tuning recipe each task times (and eval evaluates): shapes, head, optimizer.
RECIPES = {"classify": "sst2.py", "squad": "squad_v1.py", "eval": "sst2.py"}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_TOKENIZER_FILES = "data/sotu/train/*.txt"
EVAL_VOCAB_SIZE = 8000
# transformers' PyTorch class of each task's head; the Flax one is "Flax" + the same name.
HF_MODELS = {"classify": "BertForSequenceClassification", "squad": "BertForQuestionAnswering"}


def recipe(task: str, s: dict[str, Any] | None = None) -> Any:
    """The fine-tuning recipe `task` times, at the benchmark's shapes when `s` is given."""
    from bert import cli

    config = cli.load_config(os.path.join(REPO, "experiments", "finetune", RECIPES[task]))
    if s is not None:
        config.batch_size, config.max_seq_len = s["batch_size"], s["seq_len"]
        config.dropout_rate, config.dtype = s["dropout"], s["dtype"]
    return config


def shapes(task: str, batch_size: int | None, seq_len: int | None) -> dict[str, Any]:
    """Batch size and sequence length (the recipe's unless given) and, for a classifier, its
    number of labels."""
    from bert.tasks import classification

    config = recipe(task)
    s: dict[str, Any] = dict(batch_size=batch_size or config.batch_size,
                             seq_len=seq_len or config.max_seq_len)
    if task != "squad":
        s["num_labels"] = len(classification.glue_task(config.task).labels)
    return s


def flops_per_step(task: str, batch: int, seq: int, layers: int, hidden: int,
                   num_labels: int = 2) -> float:
    """Training FLOPs of a fine-tuning step: the encoder over every token, and the head: pooler
    and classifier on [CLS] (classify), or start and end logits of every token (squad)."""
    if task == "squad":
        head = batch * seq * hidden * 2
    else:
        head = batch * (hidden**2 + hidden * num_labels)
    return 6.0 * (encoder_matmuls(batch, seq, layers, hidden) + head)


def synthetic_batch(s: dict[str, Any], task: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Full-length pairs with a label (classify) or an answer span in the second segment
    (squad) per row."""
    rng = np.random.default_rng(seed)
    b, t = s["batch_size"], s["seq_len"]
    batch = dict(
        input_ids=rng.integers(5, s["vocab_size"], (b, t)).astype(np.int32),
        input_mask=np.ones((b, t), np.int32),
        segment_ids=(np.arange(t)[None] >= t // 2).repeat(b, 0).astype(np.int32),
        example_weights=np.ones(b, np.float32),
    )
    if task == "squad":
        starts = rng.integers(t // 2, t - 1, b)
        batch.update(start_positions=starts.astype(np.int32),
                     end_positions=np.minimum(starts + rng.integers(0, 30, b), t - 1).astype(np.int32))
    else:
        batch["label_ids"] = rng.integers(0, s["num_labels"], b).astype(np.int32)
    return batch


def hf_labels(task: str, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch's targets under the names transformers' PyTorch heads take them."""
    if task == "classify":
        return dict(labels=batch["label_ids"])
    return dict(start_positions=batch["start_positions"], end_positions=batch["end_positions"])


def flax_loss(task: str, out: Any, batch: dict[str, Any]) -> Any:
    """The mean loss of transformers' Flax head outputs, as its example scripts compute it."""
    import optax

    cross_entropy = optax.softmax_cross_entropy_with_integer_labels
    if task == "classify":
        return cross_entropy(out.logits, batch["label_ids"]).mean()
    return (cross_entropy(out.start_logits, batch["start_positions"]).mean()
            + cross_entropy(out.end_logits, batch["end_positions"]).mean()) / 2


def bert_jax_task(config: Any, s: dict[str, Any], train_steps: int) -> tuple[Any, Any]:
    """The fine-tuning task's own model and loss (a bert.train.Task), and the optimizer
    settings for `train_steps` steps, as bert.finetune builds them."""
    from bert.config import model_config
    from bert.finetune import optimizer_settings
    from bert.tasks import registry

    task_recipe = recipe(s["task"], s)
    family = registry.family(task_recipe, tokenizer=None)  # the step reads no text
    task = family.task(family.model(model_config(config)))
    return task, optimizer_settings(task_recipe, train_steps=train_steps)


def run_eval(config: Any, s: dict[str, Any], passes: int, warmup: int, *, fixed_length: bool,
             features_file: str, eval_files: list[str]) -> dict[str, Any]:
    """Passes of `bert.finetune.predict` over the sentences the parent featurized (saved in
    `features_file`), with the recipe's length buckets or, `fixed_length`, at max_seq_len."""
    import jax

    from bert.config import length_buckets, model_config
    from bert.finetune import optimizer_settings, predict
    from bert.optim import make_optimizer
    from bert.partitioning import build_runner
    from bert.tasks import batches, registry

    eval_recipe = recipe("eval", s)
    if fixed_length:
        eval_recipe.length_buckets = str(s["seq_len"])
    with np.load(features_file) as saved:
        features = dict(saved)
    family = registry.family(eval_recipe, tokenizer=None)
    task = family.task(family.model(model_config(config)))
    # One device, as the step rows run (a test session's CPU may be split into several).
    runner = build_runner(eval_recipe, task,
                          make_optimizer(optimizer_settings(eval_recipe, train_steps=1)),
                          devices=jax.devices()[:1])
    params = runner.init_state(jax.random.key(0)).params
    split = registry.Split("eval", ",".join(eval_files), (), features)
    computed = sum(b.host_batch["input_ids"].size for b in batches.eval_batches(
        features, batch_size=s["batch_size"], buckets=length_buckets(eval_recipe),
        max_seq_len=s["seq_len"]))

    def one_pass() -> None:
        predict(runner, params, split, eval_recipe)  # returns host arrays: the pass is complete

    return dict(time_steps(one_pass, passes, warmup), peak_memory_bytes=jax_peak_memory(),
                sentences=len(features["input_ids"]), real_tokens=int(features["input_mask"].sum()),
                computed_tokens=int(computed), buckets=list(length_buckets(eval_recipe)))


def eval_features(files: list[str], tokenizer: Any, max_seq_len: int, count: int,
                  seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The classifier's features of `count` sentences drawn from `files` (all when 0), in file
    order, and a description of their lengths."""
    from bert.data.corpus import read_documents
    from bert.tasks import classification

    documents, _ = read_documents(files, key="--eval_files")
    sentences = [sentence for document in documents for sentence in document]
    if 0 < count < len(sentences):
        chosen = np.sort(np.random.default_rng(seed).choice(len(sentences), count, replace=False))
        sentences = [sentences[i] for i in chosen]
    examples = [classification.Example(str(i), text, None, None) for i, text in enumerate(sentences)]
    features = classification.featurize(examples, tokenizer, max_seq_len,
                                        classification.glue_task("sst2"))
    lengths = features["input_mask"].sum(-1)
    info = dict(files=files, sentences=len(sentences), max_seq_len=max_seq_len,
                tokens_mean=float(lengths.mean()), tokens_median=float(np.median(lengths)),
                tokens_p90=float(np.percentile(lengths, 90)), tokens_max=int(lengths.max()),
                rows_cut_at_max_seq_len=int((lengths == max_seq_len).sum()))
    return features, info


def eval_tokenizer(path: str, directory: str) -> tuple[Any, str]:
    """The tokenizer at `path`, or (empty) a SentencePiece model trained on
    EVAL_TOKENIZER_FILES in `directory`; and what it is, for the report."""
    from bert.data.corpus import read_sentences
    from bert.tokenizer import load_tokenizer, train_sentencepiece

    if path:
        return load_tokenizer(path), path
    print(f"training a {EVAL_VOCAB_SIZE}-piece SentencePiece model on {EVAL_TOKENIZER_FILES} "
          "...", flush=True)
    tokenizer = train_sentencepiece(read_sentences(EVAL_TOKENIZER_FILES), EVAL_VOCAB_SIZE,
                                    os.path.join(directory, "sentencepiece"))
    return tokenizer, (f"SentencePiece (unigram), {EVAL_VOCAB_SIZE} pieces, trained on "
                       f"{EVAL_TOKENIZER_FILES}")


def eval_rates(first: dict[str, Any], pass_s: float) -> dict[str, Any]:
    """A result row's rates from an eval worker's output and the median pass time."""
    return dict(
        sentences_per_sec=first["sentences"] / pass_s,
        tokens_per_sec=first["real_tokens"] / pass_s,  # real tokens, padding not counted
        computed_tokens_per_sec=first["computed_tokens"] / pass_s,  # padding counted
        padding_fraction=1.0 - first["real_tokens"] / first["computed_tokens"],
        sentences=first["sentences"], buckets=first["buckets"])


def format_eval_table(report: dict[str, Any]) -> str:
    base = report["results"][0]["sentences_per_sec"]
    data = report["eval_data"]
    width = max(10, *(len(r["impl"]) for r in report["results"]))
    lines = [f"{data['sentences']} sentences, {data['tokens_mean']:.1f} tokens on average "
             f"(max_seq_len {data['max_seq_len']})",
             f"{'impl':<{width}} {'sentences/s':>12} {'tokens/s':>10} {'pass s':>8} "
             f"{'padding':>8} {'passes':>7} {'bert-jax is':>12}"]
    for r in report["results"]:
        lines.append(
            f"{r['impl']:<{width}} {r['sentences_per_sec']:>12.1f} {r['tokens_per_sec']:>10.1f} "
            f"{r['step_ms'] / 1e3:>8.1f} {r['padding_fraction']:>8.1%} {r['steps_timed']:>7} "
            f"{base / r['sentences_per_sec']:>11.2f}x")
    return "\n".join(lines)
