"""A classification fine-tuning run in lockstep with transformers' PyTorch: the same start, the
same batches (the ones `bert.finetune` builds from the config's files), dropout off, and each side
its own optimizer and schedule with the config's recipe. Prints both losses every few steps and,
at the end, both dev accuracies and the share of dev predictions that agree. Where a run here
and a transformers run of the same recipe end differently, this tells whether the training
differs or only the data order and dropout draws do (README "Against transformers").

    python -m bert.convert to-hf --input MODEL_DIR --output HF_DIR
    python scripts/lockstep_transformers.py --config experiments/finetune/demo_trec.py \\
        --hf_model HF_DIR --config.init_checkpoint=MODEL_DIR [--steps N] [--config.key=value ...]

Sequence classification configs only (classify and the GLUE tasks but STS-B). Needs torch and
transformers (requirements-bench.txt); the library never imports them.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bert import checkpoint, cli, convert, train  # noqa: E402
from bert.config import length_buckets  # noqa: E402
from bert.finetune import optimizer_settings  # noqa: E402
from bert.optim import make_optimizer  # noqa: E402
from bert.tasks import batches, registry  # noqa: E402


def torch_inputs(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    tensor = lambda key: torch.from_numpy(np.asarray(batch[key])).long()  # noqa: E731
    return dict(input_ids=tensor("input_ids"), token_type_ids=tensor("segment_ids"),
                attention_mask=tensor("input_mask"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiments/finetune/<task>.py")
    parser.add_argument("--hf_model", required=True, help="to-hf export of init_checkpoint")
    parser.add_argument("--steps", type=int, default=0, help="0: the whole run")
    parser.add_argument("--print_every", type=int, default=50)
    args, overrides = parser.parse_known_args()
    config = cli.load_config(args.config, [*overrides, "--config.dropout_rate=0.0"])
    source = config.init_checkpoint
    bert_config = dataclasses.replace(checkpoint.read_model_config(source), dropout_rate=0.0,
                                      attention_dropout_rate=0.0)
    family = registry.family(config, checkpoint.load_tokenizer(source))
    family.set_labels(config.train_file)
    train_split = family.load("train", config.train_file)
    dev = family.load("eval", config.eval_file).features
    plan = batches.TrainPlan(num_rows=train_split.num_rows, batch_size=int(config.batch_size),
                             num_epochs=float(config.num_train_epochs), seed=int(config.seed),
                             buckets=length_buckets(config))
    model = family.model(bert_config)
    if not hasattr(model, "num_labels") or model.num_labels < 2:
        raise SystemExit(f"{args.config}: not a sequence classification task")
    task = family.task(model)
    recipe = optimizer_settings(config, plan.steps)
    tx = make_optimizer(recipe)
    params, _ = family.initial_params(source, model, jax.random.split(jax.random.key(config.seed))[0])
    state = train.create_train_state(task, tx, jax.random.key(0), params)
    step = jax.jit(train.make_train_step(task, tx))

    # The transformers model starts from the same encoder and the same freshly drawn head.
    hf_config = transformers.BertConfig.from_pretrained(
        args.hf_model, num_labels=model.num_labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    hf = transformers.BertForSequenceClassification(hf_config)
    tensors = convert.params_to_hf(jax.device_get(params), bert_config, family.task_head(model))
    hf.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in tensors.items()})
    no_decay = ("bias", "LayerNorm.weight")
    named = list(hf.named_parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if not n.endswith(no_decay)],
          "weight_decay": recipe.weight_decay},
         {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0}],
        lr=recipe.learning_rate, betas=(recipe.b1, recipe.b2), eps=recipe.eps)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, recipe.warmup_steps,
                                                            plan.steps)
    hf.train()
    steps = args.steps or plan.steps
    max_seq_len = int(config.max_seq_len)
    for i, batch in enumerate(batches.train_batches(train_split.features, plan, start_step=0,
                                                    max_seq_len=max_seq_len), start=1):
        if i > steps:
            break
        state, sums = step(state, batch, jax.random.key(1))
        loss = hf(**torch_inputs(batch), labels=torch.from_numpy(batch["label_ids"]).long()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), recipe.clip_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if i % args.print_every == 0 or i in (1, steps):
            ours = float(sums["loss_sum"] / sums["count"])
            print(f"step {i:6d}  loss bert-jax {ours:.6f}  transformers {loss.item():.6f}", flush=True)

    apply = jax.jit(model.apply)
    hf.eval()
    logits, hf_logits = [], []
    for first in range(0, len(dev["label_ids"]), 256):
        rows = {key: value[first:first + 256] for key, value in dev.items()}
        logits.append(np.asarray(apply({"params": state.params}, rows["input_ids"],
                                       rows["segment_ids"], rows["input_mask"])))
        with torch.no_grad():
            hf_logits.append(hf(**torch_inputs(rows)).logits.numpy())
    logits, hf_logits = np.concatenate(logits), np.concatenate(hf_logits)
    ours, theirs, gold = logits.argmax(-1), hf_logits.argmax(-1), dev["label_ids"]
    print(f"dev accuracy bert-jax {np.mean(ours == gold):.4f}  transformers "
          f"{np.mean(theirs == gold):.4f}  same predictions {np.mean(ours == theirs):.4f}  "
          f"largest logit difference {np.abs(logits - hf_logits).max():.2e}")


if __name__ == "__main__":
    main()
