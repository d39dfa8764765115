"""One masked-LM scorer for every arm of the time-to-accuracy benchmark.

It knows nothing of bert-jax: it loads a Hugging Face folder into transformers' PyTorch
`BertForMaskedLM`, reads held-out text with transformers' `BertTokenizerFast` over a WordPiece
vocab.txt, and masks it with a fixed seed, so every model is scored on the same positions:

    python -m benchmarks.mlm_scorer --model HF_DIR --vocab DIR --eval_files 'data/sotu/eval/*.txt'

Each document (one file) is tokenized line by line, concatenated, and cut into windows of
max_seq_len - 2 tokens between [CLS] and [SEP]; mask_prob of each window's tokens (at least
one) are replaced by [MASK] and predicted. Accuracy is the share whose top prediction is the
original token; the unigram baseline is the share a model predicting the most frequent token of
the held-out text would get.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Any

import numpy as np


def masked_windows(vocab_dir: str, pattern: str, *, max_seq_len: int = 128,
                   mask_prob: float = 0.15, seed: int = 0) -> dict[str, np.ndarray]:
    """input_ids (N, T) with [MASK]s, input_mask (N, T), labels (N, T) (-100 where not masked)."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(f"{vocab_dir}/vocab.txt", do_lower_case=True)
    rng = np.random.default_rng(seed)
    width = max_seq_len - 2
    rows, labels = [], []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
        ids = [i for enc in tokenizer(lines, add_special_tokens=False)["input_ids"] for i in enc]
        for start in range(0, len(ids), width):
            window = ids[start:start + width]
            count = max(1, round(mask_prob * len(window)))
            chosen = rng.choice(len(window), size=count, replace=False)
            row = [tokenizer.cls_token_id, *window, tokenizer.sep_token_id]
            label = [-100] * len(row)
            for k in chosen:
                label[k + 1] = row[k + 1]
                row[k + 1] = tokenizer.mask_token_id
            rows.append(row)
            labels.append(label)
    n, t = len(rows), max(len(r) for r in rows)
    out = dict(input_ids=np.zeros((n, t), np.int64), input_mask=np.zeros((n, t), np.int64),
               labels=np.full((n, t), -100, np.int64))
    for i, (row, label) in enumerate(zip(rows, labels)):
        out["input_ids"][i, :len(row)] = row
        out["input_mask"][i, :len(row)] = 1
        out["labels"][i, :len(row)] = label
    return out


def unigram_accuracy(windows: dict[str, np.ndarray]) -> float:
    targets = windows["labels"][windows["labels"] >= 0]
    return float(np.bincount(targets).max() / targets.size)


def _load(model_dir: str):
    """BertForMaskedLM from a folder; one with only Flax weights (what transformers' Flax peer
    saves) is converted by transformers' own Flax-to-PyTorch loader."""
    from transformers import BertConfig, BertForMaskedLM

    flax_file = os.path.join(model_dir, "flax_model.msgpack")
    if not os.path.exists(flax_file) or any(
            os.path.exists(os.path.join(model_dir, name))
            for name in ("model.safetensors", "pytorch_model.bin")):
        return BertForMaskedLM.from_pretrained(model_dir)
    from flax.serialization import msgpack_restore
    from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model

    model = BertForMaskedLM(BertConfig.from_pretrained(model_dir))
    with open(flax_file, "rb") as f:
        model = load_flax_weights_in_pytorch_model(model, msgpack_restore(f.read()))
    model.tie_weights()  # the decoder reads the loaded word embeddings and output bias
    return model


def score(model_dir: str, windows: dict[str, np.ndarray], batch_size: int = 64) -> dict[str, Any]:
    """Masked-LM accuracy and mean loss of the folder's BertForMaskedLM on `windows`."""
    import torch

    model = _load(model_dir).eval()
    correct = total = 0
    loss_sum = 0.0
    with torch.no_grad():
        for start in range(0, len(windows["input_ids"]), batch_size):
            part = {k: torch.from_numpy(v[start:start + batch_size]) for k, v in windows.items()}
            logits = model(input_ids=part["input_ids"], attention_mask=part["input_mask"],
                           token_type_ids=torch.zeros_like(part["input_ids"])).logits
            chosen = part["labels"] >= 0
            targets = part["labels"][chosen]
            picked = logits[chosen]
            correct += int((picked.argmax(-1) == targets).sum())
            loss_sum += float(torch.nn.functional.cross_entropy(picked, targets, reduction="sum"))
            total += int(targets.numel())
    return {"mlm_accuracy": correct / total, "mlm_loss": loss_sum / total, "masked": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, nargs="+", help="Hugging Face BERT folder(s)")
    parser.add_argument("--vocab", required=True, help="folder with the WordPiece vocab.txt")
    parser.add_argument("--eval_files", default="data/sotu/eval/*.txt")
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    windows = masked_windows(args.vocab, args.eval_files, max_seq_len=args.max_seq_len,
                             seed=args.seed)
    for model in args.model:
        print(json.dumps({"model": model, **score(model, windows),
                          "unigram_accuracy": unigram_accuracy(windows)}))


if __name__ == "__main__":
    main()
