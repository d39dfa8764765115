"""Training-step benchmark: this codebase side by side with the implementations researchers use.

    python -m benchmarks.step --config experiments/pretrain/base.py [--vs torch,hf_flax] --output FILE.json
        [--task pretrain|classify|squad|eval] [--seq_len 128] [--batch_size 8] [--steps 20]
        [--warmup_steps 3] [--repeats 1] [--dtype float32] [--config.key=value ...]

`--config` names the model (a pretraining config; its keys can be set as for bert.pretrain,
bert/cli.py); `--task` the step that is timed: `pretrain`, MLM + NSP (below), whose shapes
default to the config's, or one of the fine-tuning benchmark's (benchmarks/finetune.py):
`classify` and `squad`, the fine-tuning steps of the SST-2 and SQuAD recipes, and `eval`,
bert-jax's evaluation of real sentences with length buckets against max_seq_len.

Each implementation runs in its own subprocess (clean peak memory, no thread pools fighting),
on identical shapes, with AdamW and dropout 0.1, timing full steps (forward MLM+NSP, backward,
optimizer update) after compilation. The peers (`transformers`' BertForPreTraining in PyTorch and
FlaxBertForPreTraining) are imported only inside their worker functions; the library never
imports them. Model FLOPs per step follow the usual count of useful matmul work:

    6 · (B·S·(12·L·H² + H² + 2·L·S·H) + B·P·(H² + H·V))

(P masked positions per sequence); a fine-tuning step counts the encoder the same way and its
head (`benchmarks.finetune.flops_per_step`). MFU divides achieved FLOP/s by the best matmul rate
this benchmark itself measures on the machine in the same dtype (JAX or PyTorch, whichever is
higher).
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import ConfigDict

from benchmarks import finetune
from benchmarks.measure import (encoder_matmuls, jax_peak_memory, machine, measure_peak_flops,
                                time_steps)
from bert import allocator, cli
from bert.config import model_config, pretraining_config
from bert.files import write_atomically

FLAGS = flags.FLAGS
COMMAND = "benchmarks.step"


def define_flags() -> None:
    """Only when run as a command: other CLIs define --config/--output too, and tests import
    several of them into one process."""
    cli.define_config_flags()
    flags.DEFINE_list("vs", [], "peers to run as well: torch, hf_flax")
    flags.DEFINE_string("output", None, "JSON file for the results")
    flags.DEFINE_integer("seq_len", None, "tokens per sequence (default: config.max_seq_len)")
    flags.DEFINE_integer("batch_size", None, "sequences per step (default: config.batch_size)")
    flags.DEFINE_integer("steps", 20, "timed steps per implementation")
    flags.DEFINE_integer("warmup_steps", 3, "untimed steps after compilation")
    flags.DEFINE_integer(
        "repeats", 1, "rounds over all implementations (ours, peers, ours, peers, ...), each in a "
        "fresh process; step times are pooled, so load that comes and goes hits every "
        "implementation alike")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
    flags.DEFINE_list("ablations", [], "bert-jax variants that each undo one optimization, run in "
                      f"the same rounds: {', '.join(ABLATIONS)}")
    flags.DEFINE_enum("allocator", "auto", ["auto", "tuned", "system"],
                      "host allocator of every worker: bert.allocator's settings, glibc's "
                      "defaults, or auto: what the bert-jax commands use on this host (tuned "
                      "for CPU runs, the system's on GPU and TPU hosts)")
    flags.DEFINE_enum("task", "pretrain", list(TASKS), "the step timed: " + "; ".join(
        f"{name}: {what}" for name, what in TASKS.items()))
    flags.DEFINE_list("eval_files", ["data/sotu/eval/*.txt"],
                      "eval: text files (globs) whose sentences are evaluated")
    flags.DEFINE_string("eval_tokenizer", "", "eval: tokenizer folder or *.model file; empty: a "
                        f"SentencePiece model of {finetune.EVAL_VOCAB_SIZE} pieces trained on "
                        f"{finetune.EVAL_TOKENIZER_FILES}, as the demo's")
    flags.DEFINE_integer("eval_sentences", 512, "eval: sentences drawn (seed 0) from --eval_files; "
                         "0 = all")
    flags.DEFINE_string("worker", None, "internal: run one implementation and print JSON")
    flags.DEFINE_string("eval_features", None, "internal: the eval worker's features (.npz)")


IMPLS = ("bert-jax", "torch", "hf_flax")

TASKS = {
    "pretrain": "MLM + NSP pretraining step",
    "classify": "fine-tuning step, sentence classification (2 labels)",
    "squad": "fine-tuning step, span QA",
    "eval": "bert-jax evaluation of real sentences, length buckets vs max_seq_len",
}

# bert-jax with one optimization undone (or one option turned on), for before/after tables.
# Each runs as the implementation "bert-jax/<name>"; MFU still counts only the useful FLOPs.
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_donate": {"donate": False},  # params and optimizer state copied, not updated in place
    "full_mlm_head": {"full_mlm_head": True},  # MLM decoder over all S positions, as the peers
    # the last block computes every row, not only the masked ones and [CLS]
    "full_last_layer": {"prune_last_layer": False},
    # optax.clip_by_global_norm: a second pass for the norm, the clipped gradients written out
    "optax_clip": {"optax_clip": True},
    "remat_full": {"model.remat": "full"},  # recompute every block in the backward pass
    "remat_dots": {"model.remat": "dots"},  # keep matmul outputs, recompute the rest
    "bf16": {"model.dtype": "bfloat16"},  # bf16 compute, fp32 master weights
    "no_attention_dropout": {"model.attention_dropout_rate": 0.0},  # fused attention path
    # glibc's default malloc: XLA's step scratch buffer mapped and zero-filled anew every step
    "system_allocator": {"allocator": "system"},
    "fixed_length": {"fixed_length": True},  # evaluation padded to max_seq_len, no buckets
}
# The tasks an ablation applies to (all training steps unless listed).
ABLATION_TASKS: dict[str, tuple[str, ...]] = {
    "full_mlm_head": ("pretrain",),
    "full_last_layer": ("pretrain",),
    "bf16": ("pretrain", *finetune.TASKS, "eval"),
    "system_allocator": ("pretrain", *finetune.TASKS, "eval"),
    "fixed_length": ("eval",),
}
# transformers' PyTorch class of each task; the Flax one is "Flax" + the same name.
HF_MODELS = {"pretrain": "BertForPreTraining", **finetune.HF_MODELS}


def ablation_tasks(name: str) -> tuple[str, ...]:
    return ABLATION_TASKS.get(name, ("pretrain", *finetune.TASKS))


def model_flops_per_step(batch: int, seq: int, layers: int, hidden: int, vocab: int,
                         predictions: int) -> float:
    dense = encoder_matmuls(batch, seq, layers, hidden) + batch * seq * hidden**2
    head = batch * predictions * (hidden**2 + hidden * vocab)
    return 6.0 * (dense + head)


def step_flops(s: dict[str, Any]) -> float:
    if s["task"] == "pretrain":
        return model_flops_per_step(s["batch_size"], s["seq_len"], s["num_layers"],
                                    s["hidden_size"], s["vocab_size"], s["predictions"])
    return finetune.flops_per_step(s["task"], s["batch_size"], s["seq_len"], s["num_layers"],
                                   s["hidden_size"], s.get("num_labels", 2))


def _shapes(config: ConfigDict) -> dict[str, Any]:
    model = model_config(config)
    task = FLAGS.task
    s: dict[str, Any] = dict(task=task)
    if task == "pretrain":
        seq = FLAGS.seq_len or config.max_seq_len
        s.update(batch_size=FLAGS.batch_size or config.batch_size, seq_len=seq,
                 predictions=(config.max_predictions_per_seq if seq == config.max_seq_len
                              else math.ceil(0.15 * seq)))
    else:
        s.update(finetune.shapes(task, FLAGS.batch_size, FLAGS.seq_len))
    s.update(
        num_layers=model.num_layers, hidden_size=model.hidden_size, num_heads=model.num_heads,
        intermediate_size=model.intermediate_size, vocab_size=model.vocab_size,
        dtype=FLAGS.dtype, dropout=0.1,
    )
    return s


def synthetic_batch(s: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Full-length pairs with P distinct masked positions per row (what pretraining feeds), or
    with a label (classify) or answer span (squad) per row for a fine-tuning step."""
    task = s.get("task", "pretrain")
    if task != "pretrain":
        return finetune.synthetic_batch(s, task, seed)
    rng = np.random.default_rng(seed)
    b, t, p = s["batch_size"], s["seq_len"], s["predictions"]
    positions = np.sort(np.stack([rng.choice(np.arange(1, t - 1), p, replace=False) for _ in range(b)]), 1)
    return dict(
        input_ids=rng.integers(5, s["vocab_size"], (b, t)).astype(np.int32),
        input_mask=np.ones((b, t), np.int32),
        segment_ids=(np.arange(t)[None] >= t // 2).repeat(b, 0).astype(np.int32),
        masked_lm_positions=positions.astype(np.int32),
        masked_lm_ids=rng.integers(5, s["vocab_size"], (b, p)).astype(np.int32),
        masked_lm_weights=np.ones((b, p), np.float32),
        next_sentence_labels=rng.integers(0, 2, b).astype(np.int32),
        next_sentence_weights=np.ones(b, np.float32),
    )


def hf_labels(task: str, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch's targets under the names transformers' PyTorch heads take them."""
    if task != "pretrain":
        return finetune.hf_labels(task, batch)
    labels = np.full(batch["input_ids"].shape, -100, np.int64)
    np.put_along_axis(labels, batch["masked_lm_positions"], batch["masked_lm_ids"], axis=1)
    return dict(labels=labels, next_sentence_label=batch["next_sentence_labels"])


def _apply_variant(config: ConfigDict, s: dict[str, Any], ablation: str | None) -> dict[str, Any]:
    """Sets the model keys of `s` and of the ablation in `config`; returns the ablation's
    other options (donate, clip, ...)."""
    config.model.dtype = s["dtype"]
    config.model.dropout_rate = config.model.attention_dropout_rate = s["dropout"]
    variant = dict(ABLATIONS[ablation]) if ablation else {}
    variant.pop("allocator", None)  # the parent set the worker's environment (`_spawn`)
    options = {key: variant.pop(key) for key in list(variant) if "." not in key}
    for key, value in variant.items():
        section, name = key.split(".")
        config[section][name] = value
    return options


def run_bert_jax(config: ConfigDict, s: dict[str, Any], steps: int, warmup: int,
                 ablation: str | None = None) -> dict[str, Any]:
    import jax
    import optax

    from bert import train
    from bert.model import BertForPreTraining
    from bert.optim import OptimizerSettings, clip_by_global_norm, make_optimizer

    options = _apply_variant(config, s, ablation)
    if s["task"] == "eval":
        return finetune.run_eval(config, s, steps, warmup,
                                 fixed_length=options.get("fixed_length", False),
                                 features_file=FLAGS.eval_features, eval_files=FLAGS.eval_files)
    clip = optax.clip_by_global_norm if options.get("optax_clip") else clip_by_global_norm
    if s["task"] == "pretrain":
        model = BertForPreTraining(model_config(config),
                                   prune_last_layer=options.get("prune_last_layer", True))
        tx = make_optimizer(OptimizerSettings.from_config(config), clip)
        task: train.Task = train.PretrainingTask(model, nsp_weight=1.0)
    else:  # the fine-tuning task's own model, loss and optimizer, as bert.finetune builds them
        task, optimizer = finetune.bert_jax_task(config, s, train_steps=1 + warmup + steps)
        tx = make_optimizer(optimizer, clip)
    state = train.create_train_state(task, tx, jax.random.key(0))
    step_fn = jax.jit(train.make_train_step(task, tx),
                      donate_argnums=(0,) if options.get("donate", True) else ())
    batch = synthetic_batch(s)
    if options.get("full_mlm_head"):  # every position through the decoder; the loss still reads the masked ones
        batch = all_positions(batch)
    batch = jax.device_put(batch)
    rng = jax.random.key(1)
    holder = {"state": state}

    def step() -> None:
        holder["state"], sums = step_fn(holder["state"], batch, rng)
        jax.block_until_ready(sums)

    return dict(time_steps(step, steps, warmup), peak_memory_bytes=jax_peak_memory())


def all_positions(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch with all S positions gathered for the MLM head, weight 0 off the masked ones."""
    b, t = batch["input_ids"].shape
    ids = np.zeros((b, t), np.int32)
    weights = np.zeros((b, t), np.float32)
    np.put_along_axis(ids, batch["masked_lm_positions"], batch["masked_lm_ids"], axis=1)
    np.put_along_axis(weights, batch["masked_lm_positions"], batch["masked_lm_weights"], axis=1)
    return dict(batch, masked_lm_positions=np.tile(np.arange(t, dtype=np.int32), (b, 1)),
                masked_lm_ids=ids, masked_lm_weights=weights)


def run_torch(config: ConfigDict, s: dict[str, Any], steps: int, warmup: int) -> dict[str, Any]:
    import torch
    import transformers

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_class = getattr(transformers, HF_MODELS[s["task"]])
    model = model_class(_hf_config(transformers.BertConfig, s)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6,
                                  weight_decay=0.01)
    batch = synthetic_batch(s)
    arrays = dict(input_ids=batch["input_ids"], attention_mask=batch["input_mask"],
                  token_type_ids=batch["segment_ids"], **hf_labels(s["task"], batch))
    inputs = {k: torch.from_numpy(v).long().to(device) for k, v in arrays.items()}
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=s["dtype"] == "bfloat16")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        else:
            loss.item()

    timed = time_steps(step, steps, warmup)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return dict(timed, peak_memory_bytes=peak)


def run_hf_flax(config: ConfigDict, s: dict[str, Any], steps: int, warmup: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import optax
    import transformers

    dtype = jnp.bfloat16 if s["dtype"] == "bfloat16" else jnp.float32
    model_class = getattr(transformers, "Flax" + HF_MODELS[s["task"]])
    model = model_class(_hf_config(transformers.BertConfig, s), seed=0, dtype=dtype)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01))
    params = model.params
    opt_state = tx.init(params)
    batch = jax.device_put(synthetic_batch(s))

    def loss_fn(params: Any, rng: jax.Array) -> jax.Array:
        out = model(batch["input_ids"], batch["input_mask"], batch["segment_ids"], params=params,
                    dropout_rng=rng, train=True)
        return _flax_loss(s["task"], out, batch)

    @jax.jit
    def _step(params: Any, opt_state: Any, rng: jax.Array) -> tuple:
        loss, grads = jax.value_and_grad(loss_fn)(params, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    train_step = jax.jit(_step, donate_argnums=(0, 1))
    holder = {"params": params, "opt_state": opt_state, "rng": jax.random.key(1)}

    def step() -> None:
        holder["rng"], rng = jax.random.split(holder["rng"])
        holder["params"], holder["opt_state"], loss = train_step(holder["params"], holder["opt_state"], rng)
        jax.block_until_ready(loss)

    return dict(time_steps(step, steps, warmup), peak_memory_bytes=jax_peak_memory())


def _flax_loss(task: str, out: Any, batch: dict[str, Any]) -> Any:
    """The mean loss of transformers' Flax head outputs, as its example scripts compute it."""
    if task != "pretrain":
        return finetune.flax_loss(task, out, batch)
    import jax.numpy as jnp
    import optax

    cross_entropy = optax.softmax_cross_entropy_with_integer_labels
    # The decoder ran over every position, as in run_mlm_flax; the loss reads the masked ones.
    logits = jnp.take_along_axis(out.prediction_logits, batch["masked_lm_positions"][..., None], 1)
    mlm = cross_entropy(logits, batch["masked_lm_ids"]).mean()
    return mlm + cross_entropy(out.seq_relationship_logits, batch["next_sentence_labels"]).mean()


def _hf_config(config_class: Any, s: dict[str, Any]) -> Any:
    return config_class(
        vocab_size=s["vocab_size"], hidden_size=s["hidden_size"], num_hidden_layers=s["num_layers"],
        num_attention_heads=s["num_heads"], intermediate_size=s["intermediate_size"],
        hidden_dropout_prob=s["dropout"], attention_probs_dropout_prob=s["dropout"],
        max_position_embeddings=max(512, s["seq_len"]), hidden_act="gelu",
        num_labels=s.get("num_labels", 2),
    )


_RUNNERS = {"bert-jax": run_bert_jax, "torch": run_torch, "hf_flax": run_hf_flax}
# The worker that measures the peak matmul rate and describes the machine. The parent never
# starts an accelerator runtime itself: on a GPU, JAX would take most of the device's memory
# (and PyTorch keep its cache) for the whole run, under every worker.
PROBE = "probe"


def _run_worker(impl: str, config: ConfigDict) -> None:
    if allocator.is_tuned(os.environ):  # as the commands run under these settings
        allocator.keep_dispatch_inline()
    s = _shapes(config)
    if impl == PROBE:
        probe = dict(peak_flops_by_impl=measure_peak_flops(s["dtype"]), machine=machine())
        print("BENCH_RESULT " + json.dumps(probe))
        return
    base, _, ablation = impl.partition("/")
    if ablation:
        raw = run_bert_jax(config, s, FLAGS.steps, FLAGS.warmup_steps, ablation)
    else:
        raw = _RUNNERS[base](config, s, FLAGS.steps, FLAGS.warmup_steps)
    if raw["peak_memory_bytes"] is None:  # CPU: the worker's peak resident set
        raw["peak_memory_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    raw["allocator"] = "tuned" if allocator.is_tuned(os.environ) else "system"
    print("BENCH_RESULT " + json.dumps(raw))


def worker_allocator(impl: str) -> str:
    """"tuned" or "system": --allocator, unless impl is an ablation that sets its own."""
    _, _, ablation = impl.partition("/")
    setting = ABLATIONS.get(ablation, {}).get("allocator", FLAGS.allocator)
    if setting == "auto":
        # The parent may already run tuned (re-exec), so ask whether the settings apply here.
        return "tuned" if allocator.applies(os.environ) else "system"
    return setting


def _spawn(impl: str, argv: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", COMMAND, *argv, f"--worker={impl}"]
    # Every implementation, peers included, runs under the same allocator settings.
    environment = (allocator.tuned_environment if worker_allocator(impl) == "tuned"
                   else allocator.system_environment)(os.environ)
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    raise RuntimeError(f"benchmark of {impl} failed:\n{done.stderr[-4000:]}")


_PARENT_FLAGS = ("--vs", "--ablations", "--output", "--allocator")  # not passed to workers


def worker_args(args: list[str]) -> list[str]:
    """The command line minus the flags only the parent uses (`_PARENT_FLAGS`)."""
    kept, skip_value = [], False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        if arg in _PARENT_FLAGS:
            skip_value = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in _PARENT_FLAGS)):
            kept.append(arg)
    return kept


def summarize(impl: str, raws: list[dict[str, Any]], s: dict[str, Any],
              peak_flops: float) -> dict[str, Any]:
    """One result row from the worker outputs of every round of `impl` (for eval, a "step" is
    one pass over all the sentences)."""
    times = np.concatenate([r["step_times"] for r in raws])
    step_s = float(np.median(times))
    memory = [r["peak_memory_bytes"] for r in raws if r["peak_memory_bytes"] is not None]
    row: dict[str, Any] = dict(impl=impl)
    if s["task"] == "eval":
        row.update(finetune.eval_rates(raws[0], step_s))
    else:
        flops = step_flops(s)
        row.update(tokens_per_sec=s["batch_size"] * s["seq_len"] / step_s,
                   model_flops_per_step=flops, mfu=flops / step_s / peak_flops)
    row.update(
        step_ms=1e3 * step_s,
        step_ms_p10=1e3 * float(np.percentile(times, 10)),
        step_ms_p90=1e3 * float(np.percentile(times, 90)),
        step_ms_min=1e3 * float(times.min()),
        step_ms_round_medians=[1e3 * float(np.median(r["step_times"])) for r in raws],
        steps_timed=len(times),
        compile_s=raws[0]["compile_s"],
        peak_memory_bytes=max(memory) if memory else None,
        allocator=raws[0].get("allocator"),
        page_faults_per_step=float(np.mean([r["page_faults_per_step"] for r in raws])),
        config=s,
    )
    return row


def _model_builds(config: ConfigDict) -> None:
    """The check of --config before any worker starts: its model must build (the benchmark
    reads no data, so the training files may be empty)."""
    model_config(config)


def main(argv: list[str]) -> None:
    config = cli.config_from_flags(COMMAND, argv, _model_builds, pretraining_config)
    if FLAGS.worker:
        _run_worker(FLAGS.worker, config)
        return
    unknown = sorted(set(FLAGS.vs) - set(IMPLS[1:]))
    if unknown:
        raise app.UsageError(f"--vs: unknown peer(s) {', '.join(unknown)}; choose from torch, hf_flax")
    if FLAGS.vs and FLAGS.task == "eval":
        raise app.UsageError("--vs: --task eval measures bert-jax alone (its fixed-length "
                             "evaluation is the comparison)")
    unknown = sorted(set(FLAGS.ablations) - set(ABLATIONS))
    if unknown:
        raise app.UsageError(f"--ablations: unknown {', '.join(unknown)}; choose from "
                             f"{', '.join(ABLATIONS)}")
    elsewhere = [name for name in FLAGS.ablations if FLAGS.task not in ablation_tasks(name)]
    if elsewhere:
        raise app.UsageError(f"--ablations: {', '.join(elsewhere)} do not apply to --task "
                             f"{FLAGS.task}; choose from "
                             f"{', '.join(n for n in ABLATIONS if FLAGS.task in ablation_tasks(n))}")
    if FLAGS.repeats < 1 or FLAGS.steps < 1:
        raise app.UsageError(f"--repeats and --steps must be at least 1 (got {FLAGS.repeats}, "
                             f"{FLAGS.steps})")
    if FLAGS.output:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    s = _shapes(config)
    passthrough = worker_args(sys.argv[1:])
    extra: dict[str, Any] = dict(task=FLAGS.task)
    with tempfile.TemporaryDirectory() as scratch:
        if FLAGS.task == "eval":  # tokenized once, here: the workers time the model alone
            tokenizer, extra["tokenizer"] = finetune.eval_tokenizer(FLAGS.eval_tokenizer, scratch)
            features, extra["eval_data"] = finetune.eval_features(
                FLAGS.eval_files, tokenizer, s["seq_len"], FLAGS.eval_sentences)
            np.savez(os.path.join(scratch, "features.npz"), **features)
            passthrough.append(f"--eval_features={os.path.join(scratch, 'features.npz')}")
        _run_rounds(s, passthrough, extra)


def _run_rounds(s: dict[str, Any], passthrough: list[str], extra: dict[str, Any]) -> None:
    impls = ("bert-jax", *(f"bert-jax/{name}" for name in FLAGS.ablations), *FLAGS.vs)
    raws: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
    peaks: dict[str, float] = {}
    errors: dict[str, str] = {}
    probed: dict[str, Any] = {}
    for round_index in range(FLAGS.repeats):
        probe = _spawn(PROBE, passthrough)
        probed = probed or probe["machine"]
        # The best rate seen in any round: a peak measured under load would flatter the MFU.
        for name, rate in probe["peak_flops_by_impl"].items():
            peaks[name] = max(rate, peaks.get(name, 0.0))
        for impl in impls:
            if impl in errors:
                continue
            print(f"running {impl} (round {round_index + 1}/{FLAGS.repeats}) ...", flush=True)
            try:
                raws[impl].append(_spawn(impl, passthrough))
            except RuntimeError as error:  # one implementation failing keeps the others' rows
                errors[impl] = str(error)
                print(error, file=sys.stderr, flush=True)
            # Written after every worker, so a run cut short (a job or time limit running
            # out) still leaves what it measured; "complete" says whether it is the whole run.
            report = _report(raws, s, peaks, probed, errors, extra)
            if FLAGS.output:
                write_atomically(FLAGS.output, json.dumps(report, indent=2))
    if raws["bert-jax"]:
        print(finetune.format_eval_table(report) if s["task"] == "eval" else format_table(report))
    if errors:
        raise SystemExit(f"failed: {', '.join(errors)} (messages above and in the JSON)")


def _report(raws: dict[str, list[dict[str, Any]]], s: dict[str, Any], peaks: dict[str, float],
            probed: dict[str, Any], errors: dict[str, str],
            extra: dict[str, Any]) -> dict[str, Any]:
    peak = max(peaks.values())
    results = [summarize(impl, runs, s, peak) for impl, runs in raws.items() if runs]
    complete = not errors and all(len(runs) == FLAGS.repeats for runs in raws.values())
    report = dict(extra, peak_flops=peak, peak_flops_by_impl=peaks, results=results,
                  machine=probed, load_average_at_end=os.getloadavg(), complete=complete,
                  errors=errors)
    rates = {r["impl"]: r.get("sentences_per_sec") for r in results}
    if rates.get("bert-jax") and rates.get("bert-jax/fixed_length"):
        report["eval_speedup"] = rates["bert-jax"] / rates["bert-jax/fixed_length"]
    return report


def format_table(report: dict[str, Any]) -> str:
    base = report["results"][0]["tokens_per_sec"]
    width = max(10, *(len(r["impl"]) for r in report["results"]))
    lines = [f"peak matmul: {report['peak_flops'] / 1e9:.0f} GFLOP/s",
             f"{'impl':<{width}} {'tokens/s':>10} {'step ms':>9} {'p10-p90 ms':>15} {'min ms':>7} "
             f"{'steps':>6} {'MFU':>6} {'peak MiB':>9} {'bert-jax is':>12}"]
    for r in report["results"]:
        mem = (r["peak_memory_bytes"] or 0) / 2**20
        lines.append(
            f"{r['impl']:<{width}} {r['tokens_per_sec']:>10.1f} {r['step_ms']:>9.0f} "
            f"{r['step_ms_p10']:>7.0f}-{r['step_ms_p90']:<7.0f} {r['step_ms_min']:>7.0f} "
            f"{r['steps_timed']:>6} {r['mfu']:>6.1%} {mem:>9.0f} "
            f"{base / r['tokens_per_sec']:>11.2f}x"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    # The parent measures the peak matmul rate under the allocator the bert-jax commands use.
    allocator.reexec_with_tuned_allocator()
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
