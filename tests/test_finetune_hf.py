"""A few fine-tuning steps equal transformers' PyTorch fine-tuning from the same weights.

Every head starts from one random transformers model (imported through bert.convert), dropout
off, and takes four steps on the same batches with the paper's optimizer on both sides: AdamW
(eps 1e-6, weight decay 0.01 on everything but biases and LayerNorm), global-norm clip 1.0,
linear decay. The losses of every step, and so the updates between them, must agree: this covers
each head's loss (cross-entropy, MSE for regression, first sub-tokens only for tagging, the mean
of start and end losses, softmax over choices) and the optimizer recipe.

Then the whole command: `python -m bert.finetune` on a TSV against transformers' own reading,
tokenization, schedule and evaluation of the same file, step by step.
"""
import csv
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable

import jax
import numpy as np
import pytest
import torch
import transformers

from bert import convert, train
from bert.heads import TaskHead
from bert.metrics import read_metrics
from bert.model import BertConfig
from bert.optim import OptimizerSettings, make_optimizer
from bert.tasks import registry
from tests import hf_reference

VOCAB_SIZE = 100
CONFIG = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=64, num_layers=2, num_heads=4,
                    intermediate_size=128, max_position_embeddings=64, dropout_rate=0.0,
                    attention_dropout_rate=0.0)
HEADS = {
    "sequence_classification": TaskHead("sequence_classification", ("a", "b", "c")),
    "regression": TaskHead("regression"),
    "token_classification": TaskHead("token_classification", ("O", "B-X", "I-X")),
    "question_answering": TaskHead("question_answering"),
    "multiple_choice": TaskHead("multiple_choice"),
}
STEPS, LEARNING_RATE, WEIGHT_DECAY, EPS = 4, 1e-3, 0.01, 1e-6


def _batch(kind: str, seed: int) -> dict[str, np.ndarray]:
    """Padded rows and the labels of `kind`; multiple choice as (4 questions, 2 choices, T)."""
    rng = np.random.default_rng(seed)
    rows = 8 if kind == "multiple_choice" else 4
    batch = hf_reference.random_batch(VOCAB_SIZE, batch_size=rows, seq_len=12, seed=seed)
    del batch["masked_lm_positions"]
    batch["example_weights"] = np.ones(rows, np.float32)
    if kind == "sequence_classification":
        batch["label_ids"] = rng.integers(0, 3, rows).astype(np.int32)
    elif kind == "regression":
        batch["label_values"] = rng.uniform(0, 5, rows).astype(np.float32)
    elif kind == "token_classification":
        first_pieces = (rng.random(batch["input_ids"].shape) < 0.6) & (batch["input_mask"] > 0)
        first_pieces[:, 0] = False  # [CLS] is never labelled
        batch["label_weights"] = first_pieces.astype(np.float32)
        batch["label_ids"] = (rng.integers(0, 3, first_pieces.shape) * first_pieces).astype(np.int32)
    elif kind == "question_answering":  # whole rows: padding is outside our softmax, not theirs
        batch["input_mask"][:] = 1
        batch["input_ids"][batch["input_ids"] == 0] = 7
        lengths = batch["input_mask"].sum(1)
        batch["start_positions"] = rng.integers(0, lengths // 2).astype(np.int32)
        batch["end_positions"] = (batch["start_positions"] + rng.integers(0, 3, rows)).astype(np.int32)
    else:
        questions = {k: v.reshape(4, 2, -1) for k, v in batch.items() if v.ndim == 2}
        return {**questions, "label_ids": rng.integers(0, 2, 4).astype(np.int32),
                "example_weights": np.ones(4, np.float32)}
    return batch


def _torch_loss(model: torch.nn.Module, kind: str, batch: dict[str, np.ndarray]) -> torch.Tensor:
    tensor = lambda name: torch.from_numpy(batch[name]).long()  # noqa: E731
    inputs = dict(input_ids=tensor("input_ids"), token_type_ids=tensor("segment_ids"),
                  attention_mask=tensor("input_mask"))
    if kind == "regression":
        inputs["labels"] = torch.from_numpy(batch["label_values"])
    elif kind == "token_classification":  # transformers ignores label -100
        labels = np.where(batch["label_weights"] > 0, batch["label_ids"], -100)
        inputs["labels"] = torch.from_numpy(labels).long()
    elif kind == "question_answering":
        inputs["start_positions"] = tensor("start_positions")
        inputs["end_positions"] = tensor("end_positions")
    else:
        inputs["labels"] = tensor("label_ids")
    return model(**inputs).loss


def _torch_losses(model: torch.nn.Module, step_losses: Iterable[Callable[[], torch.Tensor]], *,
                  learning_rate: float, warmup: int, total: int) -> list[float]:
    """transformers' fine-tuning recipe, one step per loss closure: AdamW with the usual no-decay
    groups, clip 1.0, linear warmup over `warmup` steps then linear decay to 0 at `total`."""
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=learning_rate, eps=EPS)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup, total)
    model.train()
    losses = []
    for step_loss in step_losses:
        loss = step_loss()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses


def _our_losses(params, kind: str, batches: list) -> list[float]:
    task = registry.objective(HEADS[kind].model(CONFIG))
    tx = make_optimizer(OptimizerSettings(
        learning_rate=LEARNING_RATE, total_steps=STEPS, warmup_steps=0, name="adamw", b1=0.9,
        b2=0.999, eps=EPS, weight_decay=WEIGHT_DECAY, clip_norm=1.0))
    state = train.create_train_state(task, tx, jax.random.key(0), params)
    step = jax.jit(train.make_train_step(task, tx))
    losses = []
    for batch in batches:
        state, sums = step(state, batch, jax.random.key(1))
        losses.append(float(sums["loss_sum"] / sums["count"]))
    return losses


@pytest.mark.parametrize("kind", list(HEADS))
def test_steps_from_the_same_weights_give_transformers_losses(kind):
    head = HEADS[kind]
    labels = dict(id2label=dict(enumerate(head.labels))) if head.labels else {}
    if kind == "regression":
        labels = dict(num_labels=1)
    hf_config = hf_reference.hf_config(VOCAB_SIZE, hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0, **labels)
    model = hf_reference.task_model(kind, hf_config, seed=3)
    params, _ = convert.params_from_hf(hf_reference.state_dict_numpy(model), CONFIG,
                                       jax.random.key(0), head=head)
    batches = [_batch(kind, seed) for seed in range(STEPS)]
    ours = _our_losses(params, kind, batches)
    theirs = _torch_losses(model, [functools.partial(_torch_loss, model, kind, b) for b in batches],
                           learning_rate=LEARNING_RATE, warmup=0, total=STEPS)
    assert ours[-1] != pytest.approx(ours[0], rel=1e-3)  # the steps moved the weights
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)


# --- the command against transformers' own pipeline ------------------------------------------

_WORDS = ["the", "cat", "dog", "sat", "ran", "on", "mat", "park", "in", "paris", "big", "quick",
          "brown", "fox", "i", "like", "tea", "coffee", "and", "it", "was", "small", "old", "man",
          "Playing", "jumped", "quickly", "Café", "naïve", "zebra", "New", "York"]
_SEED = 3


def _word_salad(rng: np.random.Generator, most: int) -> list[str]:
    """Words of the test vocabulary, some capitalised, accented, split into pieces or unknown,
    so that each side's tokenizer has work to do."""
    return [str(w) for w in rng.choice(_WORDS, rng.integers(3, most + 1))]


def _hf_start(tmp_path, kind: str, labels: tuple[str, ...]) -> tuple[torch.nn.Module, str]:
    """A random transformers model with the head of `kind` over `labels`, saved with the uncased
    test vocabulary and imported by bert.convert (task.json keeps its head, so the command
    starts from these very weights); the model and the imported folder."""
    hf_dir, model_dir = tmp_path / "hf", tmp_path / "model"
    vocab = hf_reference.write_vocab(str(hf_dir), cased=False)
    config = hf_reference.hf_config(len(vocab), hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0,
                                    id2label=dict(enumerate(labels)))
    model = hf_reference.task_model(kind, config, seed=5)
    model.save_pretrained(hf_dir)
    convert.import_hf(str(hf_dir), str(model_dir))
    return model, str(model_dir)


def _run_command(tmp_path, config: str, model_dir: str, *flags: str) -> Path:
    """`python -m bert.finetune` on tmp_path's train and dev files, dropout off, a loss logged
    every step; its work directory."""
    from scripts.kill_resume import REPO, pretrain_env, run_to_end

    workdir = tmp_path / "run"
    suffix = ".conll" if config == "tag" else ".tsv"
    run_to_end([sys.executable, "-m", "bert.finetune",
                "--config", str(REPO / "experiments" / "finetune" / f"{config}.py"),
                f"--workdir={workdir}", f"--config.init_checkpoint={model_dir}",
                f"--config.train_file={tmp_path / ('train' + suffix)}",
                f"--config.eval_file={tmp_path / ('dev' + suffix)}", "--config.dropout_rate=0.0",
                "--config.log_every=1", f"--config.seed={_SEED}", *flags],
               pretrain_env(tmp_path / "cache"))
    return workdir


def _logged_losses(workdir: Path) -> list[float]:
    return [row["loss"] for row in read_metrics(workdir / "metrics.jsonl") if "learning_rate" in row]


def _plan(rows: int, batch_size: int, epochs: float, max_len: int):
    from bert.tasks import batches

    return batches.TrainPlan(num_rows=rows, batch_size=batch_size, num_epochs=epochs, seed=_SEED,
                             buckets=(max_len,))


def _write_sentiment(tmp_path) -> dict[str, list[tuple[str, str]]]:
    """train.tsv and dev.tsv (text, label): "pos" when "good" is in the sentence, else "neg"."""
    rng = np.random.default_rng(1)
    examples = {}
    for split, rows in (("train", 44), ("dev", 13)):
        examples[split] = []
        for _ in range(rows):
            words = _word_salad(rng, 13)
            if rng.random() < 0.5:
                words.insert(int(rng.integers(0, len(words))), str(rng.choice(["good", "bad"])))
            text = " ".join(words) + str(rng.choice([".", "!", " ?"]))
            examples[split].append((text, "pos" if "good" in words else "neg"))
        (tmp_path / f"{split}.tsv").write_text(
            "text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in examples[split]), encoding="utf-8")
    return examples


def test_finetune_command_classifies_as_transformers_does(tmp_path):
    """`python -m bert.finetune` (classify) against transformers' fine-tuning from the same
    converted model on the same TSV, dropout off: each side reads and tokenizes the file itself
    and runs its own optimizer and schedule (the paper's recipe on both), taking the rows of each
    step in the order of the command's plan. Every step's loss and every dev prediction must
    agree, so the reader, tokenizer, batching, warmup and decay, optimizer and evaluation of the
    command are transformers' too, not only its step."""
    labels = ("neg", "pos")  # the command's order: sorted labels of the training file
    model, model_dir = _hf_start(tmp_path, "sequence_classification", labels)
    examples = _write_sentiment(tmp_path)
    batch_size, epochs, learning_rate, max_len = 8, 2.0, 1e-3, 16

    workdir = _run_command(tmp_path, "classify", model_dir, f"--config.batch_size={batch_size}",
                           f"--config.num_train_epochs={epochs}",
                           f"--config.learning_rate={learning_rate}",
                           f"--config.max_seq_len={max_len}")
    with open(workdir / "eval_predictions.tsv", encoding="utf-8") as f:
        our_predictions = [row["prediction"] for row in csv.DictReader(f, delimiter="\t")]

    tokenizer = transformers.BertTokenizer.from_pretrained(str(tmp_path / "hf"))

    def inputs(split: str, rows) -> dict[str, torch.Tensor]:
        return tokenizer([examples[split][r][0] for r in rows], truncation=True,
                         max_length=max_len, padding=True, return_tensors="pt")

    def step_loss(rows) -> Callable[[], torch.Tensor]:
        targets = torch.tensor([labels.index(examples["train"][r][1]) for r in rows])
        return lambda: model(**inputs("train", rows), labels=targets).loss

    plan = _plan(len(examples["train"]), batch_size, epochs, max_len)
    theirs = _torch_losses(model, [step_loss(plan.global_rows(s)) for s in range(1, plan.steps + 1)],
                           learning_rate=learning_rate, warmup=int(0.1 * plan.steps),
                           total=plan.steps)
    model.eval()
    with torch.no_grad():
        logits = model(**inputs("dev", range(len(examples["dev"])))).logits
    their_predictions = [labels[i] for i in logits.argmax(-1).tolist()]

    ours = _logged_losses(workdir)
    assert len(ours) == plan.steps == 11
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)
    assert ours[-1] < 0.85 * ours[0]  # it learnt: the comparison is not of two idle runs
    assert our_predictions == their_predictions


def _tagged(rng: np.random.Generator) -> list[tuple[str, str]]:
    """(word, IOB2 tag): Paris and New York are LOC, man is PER; most sentences name one."""
    words = _word_salad(rng, 10)
    if rng.random() < 0.8:
        at = int(rng.integers(0, len(words) + 1))
        words[at:at] = [["paris"], ["New", "York"], ["man"]][int(rng.integers(0, 3))]
    tags = []
    for i, word in enumerate(words):
        if word == "York" and i and words[i - 1] == "New":
            tags.append("I-LOC")
        elif word in ("paris", "New"):
            tags.append("B-LOC")
        else:
            tags.append("B-PER" if word == "man" else "O")
    return list(zip(words, tags))


def test_finetune_command_tags_as_transformers_does(tmp_path):
    """The same for `tag` on a CoNLL file against transformers' token classification as its
    examples do it: words tokenized with is_split_into_words, each word's first sub-token
    labelled (-100 elsewhere), a word's prediction read at its first sub-token."""
    labels = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    model, model_dir = _hf_start(tmp_path, "token_classification", labels)
    rng = np.random.default_rng(2)
    sentences = {split: [_tagged(rng) for _ in range(rows)]
                 for split, rows in (("train", 36), ("dev", 11))}
    for split, tagged in sentences.items():
        (tmp_path / f"{split}.conll").write_text("".join(
            "".join(f"{w} {t}\n" for w, t in sentence) + "\n" for sentence in tagged),
            encoding="utf-8")
    batch_size, epochs, learning_rate, max_len = 6, 4.0, 4e-3, 32

    workdir = _run_command(tmp_path, "tag", model_dir, f"--config.batch_size={batch_size}",
                           f"--config.num_train_epochs={epochs}",
                           f"--config.learning_rate={learning_rate}",
                           f"--config.max_seq_len={max_len}", f"--config.labels={','.join(labels)}")
    predicted = (workdir / "eval_predictions.conll").read_text(encoding="utf-8").split("\n\n")
    our_predictions = [[line.split()[-1] for line in block.splitlines()]
                       for block in predicted if block.strip()]

    tokenizer = transformers.BertTokenizer.from_pretrained(str(tmp_path / "hf"))

    def encoded(split: str, rows) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Inputs, and each token's label id: the tag at a word's first sub-token, else -100."""
        chosen = [sentences[split][r] for r in rows]
        inputs = tokenizer([[w for w, _ in s] for s in chosen], is_split_into_words=True,
                           truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        targets = torch.full(inputs["input_ids"].shape, -100)
        for i, sentence in enumerate(chosen):
            seen = set()
            for position, word in enumerate(inputs.word_ids(i)):
                if word is not None and word not in seen:
                    seen.add(word)
                    targets[i, position] = labels.index(sentence[word][1])
        return inputs, targets

    def step_loss(rows) -> Callable[[], torch.Tensor]:
        inputs, targets = encoded("train", rows)
        return lambda: model(**inputs, labels=targets).loss

    plan = _plan(len(sentences["train"]), batch_size, epochs, max_len)
    theirs = _torch_losses(model, [step_loss(plan.global_rows(s)) for s in range(1, plan.steps + 1)],
                           learning_rate=learning_rate, warmup=int(0.1 * plan.steps),
                           total=plan.steps)
    model.eval()
    inputs, targets = encoded("dev", range(len(sentences["dev"])))
    with torch.no_grad():
        best = model(**inputs).logits.argmax(-1)
    their_predictions = [[labels[int(t)] for t in best[i][targets[i] != -100]]
                         for i in range(len(sentences["dev"]))]

    ours = _logged_losses(workdir)
    assert len(ours) == plan.steps == 24
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5)
    assert ours[-1] < 0.85 * ours[0]
    assert our_predictions == their_predictions


def test_reference_scripts_run_the_recipe_and_agree_in_lockstep(tmp_path):
    """scripts/transformers_finetune.py (the README's transformers column) trains and scores a
    TSV; scripts/lockstep_transformers.py runs a config in lockstep and finds every dev
    prediction equal."""
    from scripts.kill_resume import REPO, pretrain_env, run_to_end

    _, model_dir = _hf_start(tmp_path, "sequence_classification", ("neg", "pos"))
    _write_sentiment(tmp_path)
    env = pretrain_env(tmp_path / "cache")
    files = [f"--train={tmp_path / 'train.tsv'}", f"--dev={tmp_path / 'dev.tsv'}"]
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "transformers_finetune.py"),
         f"--model={tmp_path / 'hf'}", *files, "--text=text", "--label=label", "--max_len=16",
         "--batch_size=8", "--epochs=1", "--lr=1e-3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] == 6 and 0.0 <= result["accuracy"] <= 1.0
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "lockstep_transformers.py"),
         "--config", str(REPO / "experiments" / "finetune" / "classify.py"),
         f"--hf_model={tmp_path / 'hf'}", f"--config.init_checkpoint={model_dir}",
         f"--config.train_file={tmp_path / 'train.tsv'}",
         f"--config.eval_file={tmp_path / 'dev.tsv'}", "--config.batch_size=8",
         "--config.max_seq_len=16", "--config.learning_rate=1e-3", "--print_every=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    steps = [line.split() for line in lines if line.startswith("step")]
    assert len(steps) >= 3
    for words in steps:
        np.testing.assert_allclose(float(words[4]), float(words[6]), rtol=2e-4)
    assert "same predictions 1.0000" in lines[-1]
