"""The reference side of README "Against transformers on real data": transformers' PyTorch
fine-tuning of a sentence classifier, the training loop its Trainer runs written out with the
paper's recipe, on a TSV with a header. Prints the dev accuracy as one JSON line.

    python scripts/transformers_finetune.py --model HF_DIR --train data/trec/train.tsv \\
        --dev data/trec/dev.tsv --text text --label coarse --max_len 32 --lr 1e-4 --epochs 3 --seed 1

HF_DIR is what `python -m bert.convert to-hf` writes from the model `bert.finetune` starts
from. The recipe: AdamW (eps 1e-6, weight decay 0.01 except biases and LayerNorm), gradient
clip 1.0, linear warmup over 10% of the steps then linear decay, dropout 0.1 (hidden, attention
and classifier), batch 32 reshuffled every epoch with the last partial batch kept (the Trainer's
step count, ceil(rows / 32) per epoch), padding to each batch's longest row. Needs torch and
transformers (requirements-bench.txt); the library never imports them.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time

import numpy as np
import torch
import transformers


def read_tsv(path: str, text: str, label: str, pair: str | None, encoding: str
             ) -> tuple[list[str], list[str] | None, list[str]]:
    with open(path, encoding=encoding, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return ([r[text] for r in rows], [r[pair] for r in rows] if pair else None,
            [r[label] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a transformers BERT folder")
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--text", required=True, help="column of the (first) text")
    parser.add_argument("--label", required=True, help="column of the label")
    parser.add_argument("--pair", default=None, help="column of the second text of a pair")
    parser.add_argument("--encoding", default="utf-8")
    parser.add_argument("--max_len", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    train_text, train_pair, train_labels = read_tsv(args.train, args.text, args.label, args.pair,
                                                    args.encoding)
    dev_text, dev_pair, dev_labels = read_tsv(args.dev, args.text, args.label, args.pair,
                                              args.encoding)
    labels = sorted(set(train_labels))
    tokenizer = transformers.BertTokenizerFast.from_pretrained(args.model)
    train = tokenizer(train_text, train_pair, truncation=True, max_length=args.max_len)
    dev = tokenizer(dev_text, dev_pair, truncation=True, max_length=args.max_len)
    targets = torch.tensor([labels.index(y) for y in train_labels])
    model = transformers.BertForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels), hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout, classifier_dropout=args.dropout)

    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": 0.01},
         {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0}],
        lr=args.lr, eps=1e-6)
    rows = len(targets)
    total = math.ceil(math.ceil(rows / args.batch_size) * args.epochs)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * total), total)

    def batch(encoded: transformers.BatchEncoding, indices: list[int]) -> dict[str, torch.Tensor]:
        keys = ("input_ids", "token_type_ids", "attention_mask")
        return tokenizer.pad([{k: encoded[k][i] for k in keys} for i in indices],
                             return_tensors="pt")

    order = torch.Generator().manual_seed(args.seed)
    step, losses, start = 0, [], time.time()
    model.train()
    while step < total:
        permutation = torch.randperm(rows, generator=order).tolist()
        for first in range(0, rows, args.batch_size):
            if step == total:
                break
            indices = permutation[first:first + args.batch_size]
            loss = model(**batch(train, indices), labels=targets[indices]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            step += 1
    model.eval()
    predicted = []
    with torch.no_grad():
        for first in range(0, len(dev_labels), 128):
            indices = list(range(first, min(first + 128, len(dev_labels))))
            predicted += model(**batch(dev, indices)).logits.argmax(-1).tolist()
    accuracy = float(np.mean([labels[p] == y for p, y in zip(predicted, dev_labels)]))
    print(json.dumps({"accuracy": accuracy, "steps": total, "seed": args.seed,
                      "final_train_loss": float(np.mean(losses[-50:])),
                      "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
