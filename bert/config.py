"""Pretraining configuration: every key, its meaning and unit, and validation before compiling.

Experiment files under experiments/pretrain/ call `pretraining_config()` and override what they
change, so every key is documented here once and a typo in an experiment file is an error.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, Callable

from ml_collections import ConfigDict, config_dict

from bert.model import PRESETS, BertConfig
from bert.optim import OPTIMIZERS, SCHEDULES


def pretraining_config() -> ConfigDict:
    """Defaults for every pretraining key (the BERT-base recipe of the paper, phase 1)."""
    c = ConfigDict()
    # Seed and length of the run.
    c.seed = 0  # every PRNG key and the data order derive from (seed, step)
    c.train_steps = 1_000_000  # optimizer steps
    c.batch_size = 256  # GLOBAL sequences per optimizer step, over all hosts and devices
    c.grad_accum_steps = 1  # micro-batches per step; batch_size must divide by it × data shards
    c.max_seq_len = 128  # tokens per sequence, [CLS] and [SEP]s included
    c.max_predictions_per_seq = 20  # masked positions per sequence the MLM head is run on
    c.objective = "mlm"  # "mlm": masked LM (+ NSP by data.nsp_weight); "ltr": left-to-right
    #                      next-token LM with causal attention over the unmasked text, no NSP

    # Optimizer.
    c.learning_rate = 1e-4  # peak, reached after warmup
    c.warmup_steps = 10_000  # linear warmup, then linear decay to 0 at schedule_steps
    c.lr_schedule = "linear"  # shape after warmup: "linear" (the paper's), "one_cycle", "cosine",
    #                           "inverse_sqrt" (bert/optim.py learning_rate_schedule)
    c.schedule_steps = 0  # learning-rate horizon; 0 = train_steps (>0 lets a run stop early and
    #                       a second phase, e.g. at longer max_seq_len, continue the same schedule)
    c.optim = ConfigDict()
    c.optim.name = "adamw"  # "adamw" or "lamb"
    c.optim.b1 = 0.9  # decay rate of the gradient's running mean
    c.optim.b2 = 0.999  # decay rate of the squared gradient's running mean
    c.optim.eps = 1e-6  # added to the root of the squared-gradient mean, for stability
    c.optim.weight_decay = 0.01  # not applied to LayerNorm params and biases
    c.optim.clip_norm = 1.0  # global gradient-norm clip; 0 disables

    # Logging, evaluation and checkpoints (all "every N steps").
    c.log_every = 100  # steps per metrics row and log line
    c.eval_every = 10_000  # steps between evaluations (and after the last step)
    c.eval_batches = 0  # eval batches per evaluation; 0 = the whole eval split
    c.checkpoint_every = 10_000  # steps between checkpoints (and after the last step)
    c.keep_checkpoints = 3  # newest checkpoints kept on disk
    c.overwrite = False  # True: move a work directory's earlier run aside (DIR.replaced-<time>)
    #                      and start over; else a rerun must match its run.json (and resumes)
    c.on_nonfinite = "skip"  # non-finite loss or gradient: "skip" the update, or "stop" after saving
    c.host_allocator = "auto"  # "tuned", "system" or "auto" (BERT_JAX_ALLOCATOR, else tuned on CPU)

    # Parallelism: "jit" places arrays on a Mesh with named shardings; "pmap" replicates params.
    c.parallelism = "jit"  # "jit" (Mesh + named shardings) or "pmap" (replicated params)
    c.mesh = ConfigDict()
    c.mesh.data = -1  # -1 = all devices not used by the other axes
    c.mesh.fsdp = 1  # params and optimizer state sharded over this axis
    c.mesh.tensor = 1  # attention heads and MLP columns split over this axis

    # Model: a preset size, any field of which can be overridden (None keeps the preset's value;
    # placeholders keep the field's type, so that the command line can set them).
    c.model = ConfigDict()
    c.model.preset = "base"  # one of tiny, mini, small, medium, base, large
    c.model.num_layers = config_dict.placeholder(int)  # encoder blocks; None = the preset's
    c.model.hidden_size = config_dict.placeholder(int)  # width of every block; None = the preset's
    c.model.num_heads = config_dict.placeholder(int)  # attention heads; None = the preset's
    c.model.intermediate_size = config_dict.placeholder(int)  # MLP width; None = 4 × hidden_size
    c.model.vocab_size = 30522  # rows of the token embedding; at least the tokenizer's vocabulary;
    #                             0 = the tokenizer's vocabulary, whatever config.data.tokenizer is
    c.model.max_position_embeddings = 512  # rows of the position table: the longest max_seq_len
    c.model.dropout_rate = 0.1  # dropout on embeddings and block outputs
    c.model.attention_dropout_rate = 0.1  # 0 allows fused attention kernels during training
    c.model.dtype = "float32"  # compute dtype; params are always float32
    c.model.remat = "none"  # "none", "full" or "dots" rematerialisation per encoder block
    c.model.norm_position = "post"  # "post" (the paper's) or "pre": LayerNorm before attention and
    #                                 MLP, one final LayerNorm; not exportable to transformers' BERT
    c.model.position_init = "normal"  # position table's start: "normal" (the paper's) or "sinusoidal"
    c.model.attention_init = "normal"  # attention's start: "normal" (the paper's) or "mimetic"
    c.model.initializer_range = 0.02  # std of the truncated-normal init of every kernel and table

    # Data (see bert/data): text files -> tokenizer -> NSP pairs -> masking -> batches.
    c.data = ConfigDict()
    c.data.train_files = ""  # comma-separated files or globs; one document per file by default
    c.data.eval_files = ""  # held-out documents, same format
    c.data.doc_separator = "file"  # "file": one document per file; "blank_line": blank lines split
    c.data.corpus_format = "paragraphs"  # lines are "paragraphs" (split into sentences),
    #                                      "sentences" (one per line), or "jsonl" documents
    c.data.text_field = "text"  # the JSONL field holding a document's text
    c.data.tokenizer = ""  # SentencePiece .model or WordPiece folder; "" = train one on train_files
    c.data.tokenizer_type = "sentencepiece"  # trained when tokenizer is "": or "wordpiece" (uncased)
    c.data.tokenizer_vocab_size = 0  # vocabulary trained when tokenizer is ""; 0 = model.vocab_size
    c.data.part_mb = 32  # MB of text per prepared shard; memory per prep worker grows with it
    c.data.cache_dir = ""  # prepared examples; "" = <workdir>/data
    c.data.local_cache_dir = ""  # this host's copy of a remote (gs://) cache; "" = $TMPDIR/bert-data
    c.data.masking = "dynamic"  # "dynamic": new masks every step; "static": dupe_factor fixed copies
    c.data.mask_prob = 0.15  # fraction of maskable tokens chosen for prediction
    c.data.mask_token_ratio = 0.8  # of the chosen: replaced with [MASK]
    c.data.random_token_ratio = 0.1  # of the chosen: replaced with a random token
    c.data.keep_token_ratio = 0.1  # of the chosen: left unchanged
    c.data.whole_word_mask = False  # choose whole words rather than single word pieces
    c.data.dupe_factor = 1  # passes over the corpus with different NSP pairings (static: masks too)
    c.data.eval_dupe_factor = 1  # pairings of the eval text (more NSP pairs to score)
    c.data.short_seq_prob = 0.1  # probability of a shorter target length, as in the paper
    c.data.nsp_weight = 1.0  # loss = mlm + nsp_weight · nsp; 0 turns NSP off
    c.data.num_workers = 0  # grain worker processes for masking and batching; 0 = in process
    c.data.prep_workers = 0  # processes that read, tokenize and pair the corpus; 0 = one per core
    # Packing: several whole instances per train row (attention kept within each, positions
    # restarting at each [CLS]), so short instances do not pay for padding. Eval is not packed.
    c.data.packing = False  # pack several instances per train row
    c.data.max_instances_per_pack = 3  # instances per packed row, at most
    return c


# The values config.data's choice keys allow; bert/data reads them from here.
MASKING_MODES = ("dynamic", "static")
DOC_SEPARATORS = ("file", "blank_line")
CORPUS_FORMATS = ("paragraphs", "sentences", "jsonl")
TOKENIZER_TYPES = ("sentencepiece", "wordpiece")

# config.data's keys with a rule: (key, what is allowed, kind, test). The kind is checked
# first ("int" is an integer, "number" any real, "bool" True or False, "choice" a string).
_DATA_RULES: tuple[tuple[str, str, str, Callable[[Any], bool]], ...] = (
    ("masking", f"one of {MASKING_MODES}", "choice", lambda v: v in MASKING_MODES),
    ("doc_separator", f"one of {DOC_SEPARATORS}", "choice", lambda v: v in DOC_SEPARATORS),
    ("corpus_format", f"one of {CORPUS_FORMATS}", "choice", lambda v: v in CORPUS_FORMATS),
    ("tokenizer_type", f"one of {TOKENIZER_TYPES}", "choice", lambda v: v in TOKENIZER_TYPES),
    ("mask_prob", "in (0, 1)", "number", lambda v: 0 < v < 1),
    *((key, "in [0, 1]", "number", lambda v: 0 <= v <= 1)
      for key in ("mask_token_ratio", "random_token_ratio", "keep_token_ratio", "short_seq_prob")),
    ("whole_word_mask", "True or False", "bool", lambda v: True),
    ("tokenizer_vocab_size", ">= 0 (0 = config.model.vocab_size)", "int", lambda v: v >= 0),
    ("dupe_factor", ">= 1", "int", lambda v: v >= 1),
    ("eval_dupe_factor", ">= 1", "int", lambda v: v >= 1),
    ("nsp_weight", ">= 0", "number", lambda v: v >= 0),
    ("num_workers", ">= 0 (0 = in process)", "int", lambda v: v >= 0),
    ("prep_workers", ">= 0 (0 = one per core)", "int", lambda v: v >= 0),
    ("packing", "True or False", "bool", lambda v: True),
    ("max_instances_per_pack", ">= 1", "int", lambda v: v >= 1),
    ("part_mb", "> 0", "number", lambda v: v > 0),
)
_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("True or False", lambda v: isinstance(v, bool)),
    "choice": ("a string", lambda v: isinstance(v, str)),
}


def validate_data(data: Any) -> None:
    """The one check of `config.data` (a ConfigDict, mapping or object with its keys): raise
    ValueError naming the first missing or bad key. bert.config.validate runs it before any
    work starts, and the data stage runs it on whatever config reaches it."""
    def get(key: str) -> Any:
        try:
            return data[key] if isinstance(data, Mapping) else getattr(data, key)
        except (KeyError, AttributeError):
            raise ValueError(f"config.data.{key}: is missing; bert.config.pretraining_config() "
                             "describes it and its default") from None

    for key, allowed, kind, ok in _DATA_RULES:
        value = get(key)
        what, is_kind = _KINDS[kind]
        # "an integer" always (1.0 passes a range check but not the kind); "a number" only
        # when the value is not one, so that a range error reads as the range alone.
        named = kind == "int" or (kind == "number" and not is_kind(value))
        rule = f"{what} {allowed}" if named else allowed
        _check(is_kind(value) and ok(value), f"data.{key}", f"must be {rule}, got {value!r}")
    ratios = [get(key) for key in ("mask_token_ratio", "random_token_ratio", "keep_token_ratio")]
    _check(math.isclose(sum(ratios), 1.0, abs_tol=1e-6), "data.mask_token_ratio",
           f"with random_token_ratio and keep_token_ratio it must sum to 1, got "
           f"{' + '.join(map(str, ratios))} = {sum(ratios)}")
    for key in ("train_files", "eval_files", "tokenizer", "text_field", "cache_dir",
                "local_cache_dir"):
        get(key)
    _check(bool(get("train_files")), "data.train_files", "is empty: name the training text files")


# Allowed values of keys that no other check covers: (key, what is allowed, test).
_RANGES: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("seed", ">= 0", lambda v: v >= 0),
    ("learning_rate", "> 0", lambda v: v > 0),
    ("eval_batches", ">= 0 (0 = the whole eval split)", lambda v: v >= 0),
    ("optim.name", "'adamw' or 'lamb'", lambda v: v in OPTIMIZERS),
    ("lr_schedule", "one of " + ", ".join(SCHEDULES), lambda v: v in SCHEDULES),
    ("model.initializer_range", "> 0", lambda v: v > 0),
    ("optim.b1", "in [0, 1)", lambda v: 0 <= v < 1),
    ("optim.b2", "in [0, 1)", lambda v: 0 <= v < 1),
    ("optim.eps", "> 0", lambda v: v > 0),
    ("optim.weight_decay", ">= 0", lambda v: v >= 0),
    ("optim.clip_norm", ">= 0 (0 = no clipping)", lambda v: v >= 0),
    ("mesh.data", "-1 (all devices left) or >= 1", lambda v: v == -1 or v >= 1),
    ("mesh.fsdp", ">= 1", lambda v: v >= 1),
    ("mesh.tensor", ">= 1", lambda v: v >= 1),
    *((f"model.{key}", "None (the preset's) or >= 1", lambda v: v is None or v >= 1)
      for key in ("num_layers", "hidden_size", "num_heads", "intermediate_size")),
    ("model.vocab_size", ">= 0 (0 = the tokenizer's vocabulary)", lambda v: v >= 0),
    ("model.max_position_embeddings", ">= 1", lambda v: v >= 1),
    ("model.dropout_rate", "in [0, 1)", lambda v: 0 <= v < 1),
    ("model.attention_dropout_rate", "in [0, 1)", lambda v: 0 <= v < 1),
)


def _known_keys(config: ConfigDict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        keys.add(prefix + key)
        if isinstance(value, ConfigDict):
            keys |= _known_keys(value, f"{prefix}{key}.")
    return keys


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ValueError(f"config.{key}: {message}")


def _check_known(config: ConfigDict, defaults: ConfigDict) -> None:
    """Every key of `config` is one `defaults` documents: a typo is an error, not a new key."""
    unknown = sorted(_known_keys(config) - _known_keys(defaults))
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join('config.' + k for k in unknown)}")


def _check_layout(config: ConfigDict) -> None:
    """The keys both commands share for how a step runs: batch split, parallelism, failures."""
    _check(config.batch_size % config.grad_accum_steps == 0, "batch_size",
           f"{config.batch_size} is not divisible by config.grad_accum_steps="
           f"{config.grad_accum_steps}")
    _check(config.parallelism in ("jit", "pmap"), "parallelism",
           f"must be 'jit' or 'pmap', got {config.parallelism!r}")
    _check(config.on_nonfinite in ("skip", "stop"), "on_nonfinite",
           f"must be 'skip' or 'stop', got {config.on_nonfinite!r}")


def validate(config: ConfigDict) -> None:
    """Raise ValueError naming the first bad key; runs before any data or compilation work.
    The config is left as it is: what is derived from it (the warmup cut to a short run's
    schedule, bert.optim.OptimizerSettings.from_config) is derived where it is used."""
    _check_known(config, pretraining_config())
    for key in ("train_steps", "batch_size", "grad_accum_steps", "max_seq_len", "log_every",
                "eval_every", "checkpoint_every", "keep_checkpoints"):
        _check(int(config[key]) >= 1, key, f"must be a positive integer, got {config[key]}")
    _check(config.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {config.warmup_steps}")
    _check(config.schedule_steps >= 0, "schedule_steps",
           f"must be >= 0 (0 = train_steps), got {config.schedule_steps}")
    for key, allowed, ok in _RANGES:
        value = functools.reduce(getattr, key.split("."), config)
        _check(ok(value), key, f"must be {allowed}, got {value!r}")
    _check_layout(config)
    _check(config.model.preset in PRESETS, "model.preset",
           f"{config.model.preset!r} is not one of {', '.join(PRESETS)}")
    _check(config.objective in ("mlm", "ltr"), "objective",
           f"must be 'mlm' or 'ltr', got {config.objective!r}")
    _check(config.objective == "mlm" or config.data.nsp_weight == 0, "data.nsp_weight",
           f"must be 0 with config.objective='ltr' (no NSP), got {config.data.nsp_weight}")
    # Raises on heads not dividing hidden, bad dtype or remat; a vocabulary taken from the
    # tokenizer (vocab_size 0) is not known yet and does not change what is checked here.
    model = model_config(config, tokenizer_vocab_size=1)
    _check(config.max_seq_len <= model.max_position_embeddings, "max_seq_len",
           f"{config.max_seq_len} does not fit the position table "
           f"(config.model.max_position_embeddings={model.max_position_embeddings})")
    _check(config.max_seq_len >= 8, "max_seq_len", f"{config.max_seq_len} is too short for a pair")
    # Three special tokens per pair are never masked.
    maskable = config.max_seq_len - 3
    _check(1 <= config.max_predictions_per_seq <= maskable, "max_predictions_per_seq",
           f"{config.max_predictions_per_seq} must be between 1 and the {maskable} maskable tokens "
           f"of config.max_seq_len={config.max_seq_len}")
    validate_data(config.data)
    trained = config.data.tokenizer_vocab_size or config.model.vocab_size
    _check(bool(config.data.tokenizer) or trained >= 6, "data.tokenizer_vocab_size",
           f"the tokenizer trained here (config.data.tokenizer is empty) needs a vocabulary of "
           f"6 or more: set it, or config.model.vocab_size, got {trained}")
    _check(not config.model.vocab_size or trained <= config.model.vocab_size,
           "data.tokenizer_vocab_size", f"{trained} does not fit the embedding table "
           f"(config.model.vocab_size={config.model.vocab_size}); set that to 0 or >= {trained}")
    if config.data.packing:
        # A packed row has at most max_seq_len - 3 maskable tokens, like a full unpacked row;
        # with this many prediction slots its masks are never cut short.
        needed = round((config.max_seq_len - 3) * config.data.mask_prob)
        _check(config.max_predictions_per_seq >= needed, "max_predictions_per_seq",
               f"{config.max_predictions_per_seq} is below the {needed} masks a full packed row "
               f"gets (mask_prob x (max_seq_len - 3)); raise it or turn config.data.packing off")


def model_config(config: ConfigDict, tokenizer_vocab_size: int | None = None) -> BertConfig:
    """The BertConfig described by `config.model`; `config.model.vocab_size` 0 takes
    `tokenizer_vocab_size`, the vocabulary of the tokenizer the data stage loaded or trained.
    Without it, a config that trains its tokenizer (data.tokenizer "") plans for the
    data.tokenizer_vocab_size it asks for: what benchmarks on synthetic batches need."""
    m = config.model
    vocab_size = m.vocab_size or tokenizer_vocab_size
    if not vocab_size and not config.data.tokenizer:
        vocab_size = config.data.tokenizer_vocab_size
    if not vocab_size:
        raise ValueError("config.model.vocab_size: 0 takes the tokenizer's vocabulary, which is "
                         "known once the data stage has loaded the tokenizer")
    overrides: dict[str, Any] = dict(
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        num_heads=m.num_heads,
        vocab_size=vocab_size,
        max_position_embeddings=m.max_position_embeddings,
        dropout_rate=m.dropout_rate,
        attention_dropout_rate=m.attention_dropout_rate,
        dtype=m.dtype,
        remat=m.remat,
        norm_position=m.norm_position,
        position_init=m.position_init,
        attention_init=m.attention_init,
        initializer_range=m.initializer_range,
        causal=config.get("objective", "mlm") == "ltr",  # a next-token model sees only the past
    )
    hidden = m.hidden_size or PRESETS[m.preset][1]
    overrides["intermediate_size"] = m.intermediate_size or 4 * hidden
    return BertConfig.from_preset(m.preset, **overrides)


def paper_recipe(preset: str, phase: str = "128") -> ConfigDict:
    """The paper's pretraining recipe at a model size: 1M steps of 256 sequences, lr 1e-4,
    10k warmup, 90% of steps at 128 tokens (phase "128") then 10% at 512 (phase "512").

    Phase 2 runs in the phase-1 work directory: it resumes that checkpoint and continues the
    same learning-rate schedule to step 1M.
    """
    c = pretraining_config()
    c.model.preset = preset
    c.batch_size = 256
    c.learning_rate = 1e-4
    c.warmup_steps = 10_000
    c.schedule_steps = 1_000_000
    if phase == "128":
        c.max_seq_len, c.max_predictions_per_seq, c.train_steps = 128, 20, 900_000
    elif phase == "512":
        c.max_seq_len, c.max_predictions_per_seq, c.train_steps = 512, 80, 1_000_000
    else:
        raise ValueError(f"unknown phase {phase!r}: use 128 or 512")
    c.data.masking = "static"  # as released: dupe_factor copies, each with its own masks
    c.data.dupe_factor = 10
    # The paper's corpus format (one sentence per line, blank lines between documents) and its
    # uncased WordPiece vocabulary of c.model.vocab_size = 30,522 tokens.
    c.data.corpus_format = "sentences"
    c.data.doc_separator = "blank_line"
    c.data.tokenizer_type = "wordpiece"
    return c


# ------------------------------------------------------------------------------ fine-tuning

# The paper's fine-tuning grid (Appendix A.3), chosen on dev.
PAPER_LR_GRID = (5e-5, 4e-5, 3e-5, 2e-5)


def finetuning_config() -> ConfigDict:
    """Defaults for every fine-tuning key: the paper's GLUE recipe and the original code's
    optimizer. Experiment files under experiments/finetune/ set the task and what differs."""
    c = ConfigDict()
    c.task = "sst2"  # sst2 cola mrpc qqp stsb mnli qnli rte wnli classify squad_v1 squad_v2 ner tag swag ner_features
    c.seed = 0  # head init, dropout and data order derive from (seed, step)
    c.seeds = ""  # comma-separated restarts, e.g. "1,2,3": every run reported, one selected on dev
    c.init_checkpoint = ""  # model folder or pretraining work directory (architecture, tokenizer, params)
    c.random_init = False  # True: init_checkpoint's architecture and tokenizer, fresh weights (a baseline)

    # Files.
    c.train_file = ""  # labelled training file in the task's format
    c.eval_file = ""  # dev set: scored into eval_results.json
    c.eval_mismatched_file = ""  # MNLI's mismatched dev set (accuracy_mm)
    c.test_file = ""  # unlabelled: predictions only
    c.test_mismatched_file = ""  # MNLI's mismatched test set (MNLI-mm.tsv)

    # Length and batch.
    c.max_seq_len = 128  # tokens per row, [CLS] and [SEP]s included
    c.batch_size = 32  # GLOBAL rows per optimizer step (SWAG: questions)
    c.grad_accum_steps = 1  # micro-batches per step
    c.length_buckets = ""  # comma-separated padded lengths; "" = 4 even steps up to max_seq_len

    # Optimizer: AdamW, linear warmup over warmup_proportion of the steps, then linear decay.
    c.learning_rate = 2e-5  # peak
    c.lr_grid = ""  # "paper" = 5e-5,4e-5,3e-5,2e-5 (chosen on dev), or a comma-separated list
    c.num_train_epochs = 3.0  # passes over the training rows (steps = rows / batch_size x epochs)
    c.warmup_proportion = 0.1  # fraction of the steps with linear warmup
    c.weight_decay = 0.01  # not on LayerNorm params and biases
    c.optim = ConfigDict()
    c.optim.name = "adamw"  # "adamw" or "lamb"
    c.optim.b1 = 0.9  # first-moment decay
    c.optim.b2 = 0.999  # second-moment decay
    c.optim.eps = 1e-6  # the original code's
    c.optim.clip_norm = 1.0  # global gradient-norm clip; 0 disables

    # Model.
    c.dropout_rate = 0.1  # hidden, attention and head dropout
    c.dtype = "float32"  # compute dtype; params are always float32
    c.top_bilstm = False  # True: a fresh BiLSTM over the encoder's output, under the head (Table 5)

    # Logging, evaluation, checkpoints.
    c.log_every = 50  # steps
    c.eval_every = 0  # steps between dev evaluations; 0 = at the end of every epoch
    c.select_on_dev = False  # True: score the checkpoint best on dev instead of the final one
    c.checkpoint_every = 1000  # steps (and at the end of training)
    c.keep_checkpoints = 1  # newest checkpoints kept on disk
    c.overwrite = False  # True: move a work directory's earlier run aside (DIR.replaced-<time>)
    #                      and start over; else a rerun must match its run.json (and resumes)
    c.on_nonfinite = "skip"  # "skip" the update, or "stop" after saving
    c.host_allocator = "auto"  # as in pretraining (bert/allocator.py)

    # Parallelism, as in pretraining.
    c.parallelism = "jit"  # "jit" over a Mesh with named shardings, or "pmap"
    c.mesh = ConfigDict()
    c.mesh.data = -1  # -1 = all devices not used by the other axes
    c.mesh.fsdp = 1  # params and optimizer state sharded over this axis
    c.mesh.tensor = 1  # attention heads and MLP columns split over this axis

    # Span QA (squad_v1, squad_v2).
    c.doc_stride = 128  # tokens between the starts of consecutive context windows
    c.max_query_length = 64  # question tokens kept
    c.n_best_size = 20  # start and end candidates per window
    c.max_answer_length = 30  # tokens
    c.null_score_diff_threshold = 0.0  # v2.0: predict "" when null beats the best span by more

    # Tagging (ner, tag).
    c.labels = ""  # comma-separated tag set; "" = the tags of the training file
    c.document_context = False  # fill windows with the sentence's document as context

    # Feature-based tagging (ner_features): a BiLSTM on frozen encoder layers (paper Table 7).
    c.feature_strategy = "concat_last_four"  # Table 7's rows: bert.tasks.feature_probe.STRATEGIES
    c.lstm_size = 768  # BiLSTM units per direction, in each of its two layers
    c.feature_cache_dir = ""  # cached word vectors, shared across strategies; "" = DIR/feature_cache

    # Reading files (classify; encoding also for tag).
    c.reader = ConfigDict()
    c.reader.format = ""  # csv, tsv or jsonl; "" = from the file suffix
    c.reader.encoding = "utf-8"  # text encoding, e.g. latin-1
    c.reader.delimiter = ""  # "" = the format's
    c.reader.quoting = ""  # "minimal" (CSV quotes), "none" (quotes are text); "" = the format's
    c.reader.header = True  # the first row names the columns
    c.reader.text_column = "text"  # name, or 0-based position
    c.reader.pair_column = ""  # second text of a pair; "" = single sentences
    c.reader.label_column = "label"  # name, or 0-based position
    c.reader.index_column = ""  # "" = the row number
    c.reader.labels = ""  # comma-separated label list; "" = sorted labels of the training file
    c.reader.regression = False  # the label is a number (MSE loss, Pearson/Spearman)
    return c


def squad_config(task: str) -> ConfigDict:
    """The paper's SQuAD recipe: 384 tokens, windows 128 tokens apart, 64 question tokens, 20
    n-best candidates, answers of at most 30 tokens, 5e-5; v1.1 3 epochs at batch 32, v2.0
    ("squad_v2") 2 epochs at batch 48."""
    c = finetuning_config()
    c.task = task
    c.max_seq_len, c.doc_stride, c.max_query_length = 384, 128, 64
    c.n_best_size, c.max_answer_length = 20, 30
    c.learning_rate = 5e-5
    c.num_train_epochs, c.batch_size = (2.0, 48) if task == "squad_v2" else (3.0, 32)
    return c


def learning_rates(config: ConfigDict) -> tuple[float, ...]:
    """config.lr_grid as learning rates; the single config.learning_rate without one."""
    grid = str(config.lr_grid).strip()
    if not grid:
        return (float(config.learning_rate),)
    if grid == "paper":
        return PAPER_LR_GRID
    try:
        return tuple(float(x) for x in grid.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"config.lr_grid: {grid!r} is neither 'paper' nor a comma-separated "
                         "list of learning rates") from None


def seeds(config: ConfigDict) -> tuple[int, ...]:
    text = str(config.seeds).strip()
    if not text:
        return (int(config.seed),)
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"config.seeds: {text!r} is not a comma-separated list of integers") \
            from None


def validate_finetuning(config: ConfigDict) -> None:
    """Raise ValueError naming the first bad key among those every task reads, before reading
    data or compiling. The task name and the keys only one family reads (SQuAD's windows, the
    feature probe's strategy, the classify reader) are its family's to check: the whole check
    of a fine-tuning config is bert.tasks.registry.validate."""
    _check_known(config, finetuning_config())
    _check(bool(config.init_checkpoint), "init_checkpoint",
           "is empty: name a model folder or pretraining work directory")
    _check(bool(config.train_file), "train_file", "is empty: name the training file")
    for key in ("max_seq_len", "batch_size", "grad_accum_steps", "log_every", "checkpoint_every",
                "keep_checkpoints"):
        _check(int(config[key]) >= 1, key, f"must be a positive integer, got {config[key]}")
    _check(config.eval_every >= 0, "eval_every", "must be >= 0 (0 = every epoch)")
    _check(config.num_train_epochs > 0, "num_train_epochs", "must be > 0")
    _check(0.0 <= config.warmup_proportion <= 1.0, "warmup_proportion", "must be in [0, 1]")
    _check(config.weight_decay >= 0, "weight_decay", "must be >= 0")
    _check(0.0 <= config.dropout_rate < 1.0, "dropout_rate", "must be in [0, 1)")
    _check_layout(config)
    _check(config.dtype in ("float32", "bfloat16", "float16"), "dtype",
           f"must be float32, bfloat16 or float16, got {config.dtype!r}")
    learning_rates(config)
    seeds(config)
    length_buckets(config)
    if config.select_on_dev:
        _check(bool(config.eval_file), "select_on_dev", "needs config.eval_file to select on")
    _check(not config.eval_every or bool(config.eval_file), "eval_every",
           f"{config.eval_every} evaluates on config.eval_file, which is empty: name the dev file "
           "(or leave config.eval_every at 0)")


def default_buckets(max_seq_len: int, count: int = 4, multiple: int = 8) -> tuple[int, ...]:
    """`count` lengths evenly spaced up to max_seq_len, rounded up to a multiple of 8."""
    lengths = {min(max_seq_len, -(-max_seq_len * (i + 1) // count // multiple) * multiple)
               for i in range(count)}
    return tuple(sorted(lengths | {max_seq_len}))


def length_buckets(config: ConfigDict) -> tuple[int, ...]:
    """Padded lengths of batches: config.length_buckets, or 4 even steps up to max_seq_len."""
    text = str(config.length_buckets).strip()
    if not text:
        return default_buckets(int(config.max_seq_len))
    try:
        buckets = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"config.length_buckets: {text!r} is not a comma-separated list of "
                         "lengths") from None
    if not buckets or buckets[0] < 1 or buckets[-1] > config.max_seq_len:
        raise ValueError(f"config.length_buckets: {text!r} must be lengths between 1 and "
                         f"config.max_seq_len={config.max_seq_len}")
    return tuple(buckets) if buckets[-1] == config.max_seq_len else (*buckets, config.max_seq_len)
