"""transformers' FlaxBertForMaskedLM pretrained the way its `run_mlm_flax.py` example does, for
the time-to-accuracy benchmark (needs transformers 4.x, the last with Flax models: the bench venv).

    python -m benchmarks.run_mlm_flax --vocab DIR --train_files 'data/sotu/train/*.txt' \
        --output DIR [--batch_size 32 --max_seq_len 128 --learning_rate 1e-3 ...]

What the example does, kept: every line tokenized with [CLS] ... [SEP], all of it concatenated and
cut into max_seq_len blocks (its `group_texts`), blocks shuffled each epoch, 15% of the non-special
tokens masked 80/10/10 by a numpy collator (its FlaxDataCollatorForLanguageModeling), the
decoder run on every position and the loss averaged over the masked ones, optax AdamW without
gradient clipping, weight decay off biases and LayerNorm scales, linear warmup then linear decay.
The model is built from a config (no download), MLM only (the example has no NSP).

`--save_every` steps (and on SIGTERM, after the current step) it writes a Hugging Face folder
`OUTPUT/step_<N>` and appends {"step", "seconds"} to OUTPUT/points.jsonl, seconds counted from
`--start_time` (the driver's clock, so imports and compilation are inside the budget).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import time

import numpy as np


def blocks(tokenizer, pattern: str, max_seq_len: int) -> np.ndarray:
    ids: list[int] = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
        for enc in tokenizer(lines)["input_ids"]:
            ids.extend(enc)
    usable = len(ids) // max_seq_len * max_seq_len
    return np.asarray(ids[:usable], np.int32).reshape(-1, max_seq_len)


def mask_tokens(rows: np.ndarray, tokenizer, rng: np.random.Generator,
                mlm_probability: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """The example's collator: (inputs, labels) with labels -100 where nothing is predicted."""
    labels = rows.copy()
    special = np.isin(rows, tokenizer.all_special_ids)
    chosen = (rng.random(rows.shape) < mlm_probability) & ~special
    labels[~chosen] = -100
    inputs = rows.copy()
    replaced = (rng.random(rows.shape) < 0.8) & chosen
    inputs[replaced] = tokenizer.mask_token_id
    randomised = (rng.random(rows.shape) < 0.5) & chosen & ~replaced
    inputs[randomised] = rng.integers(0, len(tokenizer), rows.shape)[randomised]
    return inputs, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--train_files", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_heads", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup_steps", type=int, default=100)
    parser.add_argument("--train_steps", type=int, default=4800)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_epsilon", type=float, default=1e-8)
    parser.add_argument("--save_every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start_time", type=float, default=0.0)
    args = parser.parse_args()
    start = args.start_time or time.time()
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    import jax
    import jax.numpy as jnp
    import optax
    from flax import traverse_util
    from transformers import BertConfig, BertTokenizerFast, FlaxBertForMaskedLM

    tokenizer = BertTokenizerFast(os.path.join(args.vocab, "vocab.txt"), do_lower_case=True)
    data = blocks(tokenizer, args.train_files, args.max_seq_len)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=args.hidden_size,
                        num_hidden_layers=args.num_layers, num_attention_heads=args.num_heads,
                        intermediate_size=4 * args.hidden_size, hidden_dropout_prob=args.dropout,
                        attention_probs_dropout_prob=args.dropout,
                        pad_token_id=tokenizer.pad_token_id)
    model = FlaxBertForMaskedLM(config, seed=args.seed, dtype=jnp.float32)
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, args.learning_rate, args.warmup_steps),
         optax.linear_schedule(args.learning_rate, 0.0, args.train_steps - args.warmup_steps)],
        boundaries=[args.warmup_steps])

    def decay_mask(params):
        flat = traverse_util.flatten_dict(params)
        names = {("LayerNorm", "scale"), ("layer_norm", "scale"), ("ln_f", "scale")}
        return traverse_util.unflatten_dict(
            {path: path[-1] != "bias" and path[-2:] not in names for path in flat})

    tx = optax.adamw(schedule, b1=0.9, b2=args.adam_beta2, eps=args.adam_epsilon,
                     weight_decay=args.weight_decay, mask=decay_mask)
    params = model.params
    opt_state = tx.init(params)

    def train_step(params, opt_state, inputs, labels, dropout_rng):
        def loss_fn(params):
            logits = model(inputs, attention_mask=jnp.ones_like(inputs), params=params,
                           dropout_rng=dropout_rng, train=True)[0]
            label_mask = labels >= 0
            loss = optax.softmax_cross_entropy(
                logits, jax.nn.one_hot(jnp.maximum(labels, 0), logits.shape[-1]))
            return (loss * label_mask).sum() / label_mask.sum()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step_fn = jax.jit(train_step, donate_argnums=(0, 1))
    rng = np.random.default_rng(args.seed)
    dropout_rng = jax.random.PRNGKey(args.seed)
    os.makedirs(args.output, exist_ok=True)

    def save(step: int) -> None:
        model.save_pretrained(os.path.join(args.output, f"step_{step}"), params=params)
        with open(os.path.join(args.output, "points.jsonl"), "a") as f:
            f.write(json.dumps({"step": step, "seconds": time.time() - start}) + "\n")

    step, order = 0, np.empty(0, np.int64)
    while step < args.train_steps and not stop["now"]:
        if len(order) < args.batch_size:
            order = rng.permutation(len(data))
        picked, order = order[:args.batch_size], order[args.batch_size:]
        inputs, labels = mask_tokens(data[picked], tokenizer, rng)
        dropout_rng, key = jax.random.split(dropout_rng)
        params, opt_state, loss = step_fn(params, opt_state, inputs, labels, key)
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {float(loss):.3f} {time.time() - start:.0f}s", flush=True)
        if step % args.save_every == 0:
            save(step)
    if step % args.save_every:
        save(step)


if __name__ == "__main__":
    main()
