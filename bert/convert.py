"""Exact conversion between Hugging Face BERT folders and this project's model folders.

    python -m bert.convert from-hf --input HF_DIR --output MODEL_DIR
    python -m bert.convert to-hf   --input MODEL_DIR_OR_WORKDIR --output HF_DIR
    python -m bert.convert at-step --input WORKDIR --step STEP --output MODEL_DIR

Weights are only transposed, reshaped or regrouped, never recomputed, so from-hf → to-hf →
from-hf reproduces every tensor bit for bit. The differences between the two layouts:

* torch `Linear` weights are [out, in]; Flax `Dense` kernels are [in, out].
* Hugging Face keeps query, key and value as three [H, H] projections; here they are one fused
  kernel [H, 3, N, D] (in that order), and the attention output kernel is [N, D, H].
* The MLM decoder is tied to the word embeddings in both; Hugging Face may store it as a copy
  (`cls.predictions.decoder.weight`), which must then equal the embeddings.

Accepted input names: BertModel (`embeddings.*`, `encoder.*`, optional `pooler.*`) with or without
the `bert.` prefix, BertForPreTraining / BertForMaskedLM heads (`cls.predictions.*`,
`cls.seq_relationship.*`), and TensorFlow-era `LayerNorm.gamma` / `LayerNorm.beta`. Heads the
folder lacks are freshly initialised and reported; unknown or mis-shaped tensors stop the import
with the full list, since guessing would silently produce a different model.

Fine-tuned models convert too. A model folder's task.json (see bert/heads.py) picks the
transformers class, and config.json's `architectures` (or, lacking it, a `qa_outputs.*` tensor)
picks the head on the way back:

    task.json task            transformers class               head tensors     param
    sequence_classification   BertForSequenceClassification    classifier.*     classifier
    regression                BertForSequenceClassification    classifier.*     classifier
    token_classification      BertForTokenClassification       classifier.*     classifier
    question_answering        BertForQuestionAnswering         qa_outputs.*     span
    multiple_choice           BertForMultipleChoice            classifier.*     classifier

The labels become id2label / label2id (regression: problem_type "regression", one label, named
LABEL_0 unless task.json names it; classification: "single_label_classification"). transformers'
token-classification and QA models have no pooler, so none is exported for them and an import
initialises it (it computes nothing those heads read).

The tokenizer travels too: an HF folder's WordPiece `vocab.txt` + `tokenizer_config.json` become
the model folder's tokenizer, and `to-hf` writes them back (or, for a SentencePiece model
pretrained here, `sentencepiece.model` with a README saying transformers cannot read it, which
`from-hf` accepts again).

Only `model.safetensors` is read without torch. A `pytorch_model.bin` needs torch, imported inside
the one function that reads it.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from bert import checkpoint, files
from bert.heads import (HEAD_KINDS, TASK_FILE, Pretrained, TaskHead, check_task_params,
                        read_task_head, save_task_head)
from bert.model import BertConfig, BertForPreTraining, init_params
from bert.tokenizer import SentencePieceTokenizer, load_tokenizer

HF_CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX_FILE = "pytorch_model.bin.index.json"

# Buffers some Hugging Face versions saved beside the weights; they carry no learned values.
_IGNORED_BUFFERS = ("embeddings.position_ids",)

Params = dict[str, Any]
Path = tuple[str, ...]


class ConversionError(ValueError):
    """The input cannot be converted exactly; the message lists every offending name."""


_HF_DEFAULT_LABEL = "LABEL_0"  # transformers' name for an unnamed first label


# ---------------------------------------------------------------------------------------------
# config.json <-> BertConfig


def config_from_hf(values: dict[str, Any], source: str) -> BertConfig:
    """BertConfig of a Hugging Face config.json; anything this encoder cannot compute is an error."""
    model_type = values.get("model_type", "bert")
    if model_type != "bert":
        raise ConversionError(f"{source}: model_type is {model_type!r}; only 'bert' converts")
    act = values.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConversionError(
            f"{source}: hidden_act is {act!r}; this encoder computes the exact (erf) 'gelu' only"
        )
    position_type = values.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ConversionError(
            f"{source}: position_embedding_type is {position_type!r}; only 'absolute' converts"
        )
    if values.get("is_decoder") or values.get("add_cross_attention"):
        raise ConversionError(f"{source}: decoder / cross-attention BERT variants do not convert")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")
    missing = [key for key in required if key not in values]
    if missing:
        raise ConversionError(f"{source}: missing {', '.join(missing)}")
    try:
        return BertConfig(
            vocab_size=int(values["vocab_size"]),
            hidden_size=int(values["hidden_size"]),
            num_layers=int(values["num_hidden_layers"]),
            num_heads=int(values["num_attention_heads"]),
            intermediate_size=int(values["intermediate_size"]),
            max_position_embeddings=int(values.get("max_position_embeddings", 512)),
            type_vocab_size=int(values.get("type_vocab_size", 2)),
            dropout_rate=float(values.get("hidden_dropout_prob", 0.1)),
            attention_dropout_rate=float(values.get("attention_probs_dropout_prob", 0.1)),
            layer_norm_eps=float(values.get("layer_norm_eps", 1e-12)),
            initializer_range=float(values.get("initializer_range", 0.02)),
        )
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from e


def config_to_hf(config: BertConfig, *, pad_token_id: int = 0,
                 head: TaskHead | None = None) -> dict[str, Any]:
    """A config.json that transformers reads as this model: BertForPreTraining, or the class of
    `head` with its labels."""
    values = {
        "architectures": [head.head_kind.hf_class if head else "BertForPreTraining"],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": config.dropout_rate,
        "attention_probs_dropout_prob": config.attention_dropout_rate,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_eps,
        "position_embedding_type": "absolute",
        "pad_token_id": pad_token_id,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }
    if head is not None and head.head_kind.labelled:
        labels = head.labels or (_HF_DEFAULT_LABEL,)  # an unnamed regression value
        values["id2label"] = {str(i): label for i, label in enumerate(labels)}
        values["label2id"] = {label: i for i, label in enumerate(labels)}
        if head.kind != "token_classification":
            values["problem_type"] = ("regression" if head.kind == "regression"
                                      else "single_label_classification")
    return values


def _hf_labels(values: dict[str, Any], source: str) -> tuple[str, ...]:
    """The label names of config.json in id order (transformers' defaults when it has none)."""
    id2label = values.get("id2label")
    if id2label is None:
        return tuple(f"LABEL_{i}" for i in range(int(values.get("num_labels", 2))))
    if not isinstance(id2label, dict):
        raise ConversionError(f"{source}: id2label must map ids to label names, got {id2label!r}")
    try:
        by_id = {int(key): label for key, label in id2label.items()}
    except ValueError as e:
        raise ConversionError(f"{source}: id2label has a key that is not an integer ({e})") from e
    if sorted(by_id) != list(range(len(by_id))):
        raise ConversionError(f"{source}: id2label ids must be 0..{len(by_id) - 1}, got "
                              f"{', '.join(map(str, sorted(by_id)))}")
    return tuple(by_id[i] for i in range(len(by_id)))


def task_head_from_hf(values: dict[str, Any], tensor_names: Any, source: str) -> TaskHead | None:
    """The task head of a Hugging Face folder (None: a pretraining or bare encoder folder).

    config.json's `architectures` decides; without a task class there, `qa_outputs.*` tensors
    mean span QA, while `classifier.*` could be any of three heads and is an error.
    """
    architectures = values.get("architectures") or []
    if not isinstance(architectures, list):
        raise ConversionError(f"{source}: architectures must be a list of class names, got {architectures!r}")
    by_architecture = {h.hf_class: kind for kind, h in HEAD_KINDS.items() if kind != "regression"}
    named = sorted({a for a in architectures if a in by_architecture})
    if len(named) > 1:
        raise ConversionError(f"{source}: architectures names several task heads: {', '.join(named)}")
    if not named:
        if any(n.startswith(HEAD_KINDS["question_answering"].hf_prefix + ".") for n in tensor_names):
            return TaskHead("question_answering")
        if any(n.startswith("classifier.") for n in tensor_names):
            raise ConversionError(
                f"{source}: architectures ({', '.join(architectures) or 'absent'}) does not say "
                f"which head classifier.weight belongs to; set it to one of "
                f"{', '.join(sorted(by_architecture))}")
        return None
    kind = by_architecture[named[0]]
    labels: tuple[str, ...] = ()
    if HEAD_KINDS[kind].labelled:
        labels = _hf_labels(values, source)
    if kind == "sequence_classification":
        problem_type = values.get("problem_type")
        if problem_type == "regression" or (problem_type is None and len(labels) == 1):
            if len(labels) != 1:
                raise ConversionError(f"{source}: problem_type is 'regression' with {len(labels)} "
                                      f"labels; only single-value regression converts")
            kind = "regression"
            labels = () if labels == (_HF_DEFAULT_LABEL,) else labels
        elif problem_type not in (None, "single_label_classification"):
            raise ConversionError(f"{source}: problem_type is {problem_type!r}; only "
                                  f"'single_label_classification' and 'regression' convert")
    try:
        return TaskHead(kind, labels)
    except ValueError as e:
        raise ConversionError(f"{source}: id2label: {e}") from e


def read_hf_config_values(hf_dir: str) -> tuple[dict[str, Any], str]:
    """config.json of a Hugging Face folder as parsed JSON, and its path (for messages)."""
    path = os.path.join(hf_dir, HF_CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: {hf_dir} is not a Hugging Face model folder")
    with open(path, encoding="utf-8") as f:
        return files.json_object(f.read(), path, ConversionError), path


# ---------------------------------------------------------------------------------------------
# Reading and writing tensors


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    """`safetensors.numpy.load_file`, plus bfloat16 tensors, which numpy itself cannot name."""
    try:
        return load_file(path)
    except TypeError:  # "data type 'bfloat16' not understood"
        pass
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
        data = f.read()
    tensors = {}
    with safe_open(path, framework="np") as f:
        for name in f.keys():
            if header[name]["dtype"] == "BF16":
                begin, end = header[name]["data_offsets"]
                tensors[name] = np.frombuffer(data[begin:end], jnp.bfloat16).reshape(header[name]["shape"])
            else:
                tensors[name] = f.get_tensor(name)
    return tensors


def _load_torch_file(path: str) -> dict[str, np.ndarray]:
    """The one place torch is imported: pickled state dicts cannot be read without it."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {path} needs PyTorch, which is not installed; install torch, or convert the "
            f"folder to {SAFETENSORS_FILE} (readable without torch)"
        ) from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    # numpy has no bfloat16: widen it (exactly) in torch.
    return {name: tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16
            else tensor.detach().numpy() for name, tensor in state.items()}


def _load_sharded(hf_dir: str, index_file: str,
                  load: Callable[[str], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    with open(os.path.join(hf_dir, index_file), encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(load(os.path.join(hf_dir, shard)))
    return tensors


def read_hf_tensors(hf_dir: str) -> dict[str, np.ndarray]:
    """Every tensor of a Hugging Face folder by name; safetensors preferred, read without torch."""
    if os.path.exists(os.path.join(hf_dir, SAFETENSORS_FILE)):
        return _load_safetensors(os.path.join(hf_dir, SAFETENSORS_FILE))
    if os.path.exists(os.path.join(hf_dir, SAFETENSORS_INDEX_FILE)):
        return _load_sharded(hf_dir, SAFETENSORS_INDEX_FILE, _load_safetensors)
    if os.path.exists(os.path.join(hf_dir, TORCH_FILE)):
        return _load_torch_file(os.path.join(hf_dir, TORCH_FILE))
    if os.path.exists(os.path.join(hf_dir, TORCH_INDEX_FILE)):
        return _load_sharded(hf_dir, TORCH_INDEX_FILE, _load_torch_file)
    raise FileNotFoundError(
        f"{hf_dir} holds no weights: expected {SAFETENSORS_FILE} or {TORCH_FILE}"
    )


# ---------------------------------------------------------------------------------------------
# The name and layout mapping


def _one_to_one(config: BertConfig, head: TaskHead | None = None) -> list[tuple[str, Path, bool]]:
    """(Hugging Face name, param path, transposed) of every tensor that is exactly one param.

    Names are those of BertForPreTraining, or of `head`'s transformers class, without the
    `bert.` prefix on the encoder part.
    """
    entries: list[tuple[str, Path, bool]] = [
        ("embeddings.word_embeddings.weight", ("bert", "embeddings", "word_embeddings", "embedding"), False),
        ("embeddings.position_embeddings.weight", ("bert", "embeddings", "position_embeddings", "embedding"), False),
        ("embeddings.token_type_embeddings.weight", ("bert", "embeddings", "token_type_embeddings", "embedding"), False),
        ("embeddings.LayerNorm.weight", ("bert", "embeddings", "layer_norm", "scale"), False),
        ("embeddings.LayerNorm.bias", ("bert", "embeddings", "layer_norm", "bias"), False),
    ]
    for i in range(config.num_layers):
        hf, ours = f"encoder.layer.{i}.", ("bert", f"layer_{i}")
        entries += [
            (hf + "attention.output.dense.bias", ours + ("attention", "out", "bias"), False),
            (hf + "attention.output.LayerNorm.weight", ours + ("attention_norm", "scale"), False),
            (hf + "attention.output.LayerNorm.bias", ours + ("attention_norm", "bias"), False),
            (hf + "intermediate.dense.weight", ours + ("mlp", "intermediate", "kernel"), True),
            (hf + "intermediate.dense.bias", ours + ("mlp", "intermediate", "bias"), False),
            (hf + "output.dense.weight", ours + ("mlp", "output", "kernel"), True),
            (hf + "output.dense.bias", ours + ("mlp", "output", "bias"), False),
            (hf + "output.LayerNorm.weight", ours + ("output_norm", "scale"), False),
            (hf + "output.LayerNorm.bias", ours + ("output_norm", "bias"), False),
        ]
    entries += [
        ("pooler.dense.weight", ("bert", "pooler", "kernel"), True),
        ("pooler.dense.bias", ("bert", "pooler", "bias"), False),
    ]
    if head is not None:
        hf, param = head.head_kind.hf_prefix, head.head_kind.param
        return entries + [(f"{hf}.weight", (param, "kernel"), True),
                          (f"{hf}.bias", (param, "bias"), False)]
    entries += [
        ("cls.predictions.transform.dense.weight", ("mlm", "transform", "kernel"), True),
        ("cls.predictions.transform.dense.bias", ("mlm", "transform", "bias"), False),
        ("cls.predictions.transform.LayerNorm.weight", ("mlm", "layer_norm", "scale"), False),
        ("cls.predictions.transform.LayerNorm.bias", ("mlm", "layer_norm", "bias"), False),
        ("cls.predictions.bias", ("mlm", "output_bias"), False),
        ("cls.seq_relationship.weight", ("nsp", "kernel"), True),
        ("cls.seq_relationship.bias", ("nsp", "bias"), False),
    ]
    return entries


def _attention_names(i: int) -> dict[str, str]:
    prefix = f"encoder.layer.{i}.attention."
    names = {f"{p}_{k}": f"{prefix}self.{p}.{k}" for p in ("query", "key", "value")
             for k in ("weight", "bias")}
    names["out_weight"] = prefix + "output.dense.weight"
    return names


# Optional groups: initialised when wholly absent, an error when partly present.
_POOLER = ("pooler.dense.weight", "pooler.dense.bias")
_MLM_HEAD = (
    "cls.predictions.transform.dense.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.bias",
)
_NSP_HEAD = ("cls.seq_relationship.weight", "cls.seq_relationship.bias")
_OPTIONAL_GROUPS = {"pooler": (_POOLER, ("bert", "pooler")), "mlm": (_MLM_HEAD, ("mlm",)),
                    "nsp": (_NSP_HEAD, ("nsp",))}
_DECODER_WEIGHT = "cls.predictions.decoder.weight"
_DECODER_BIAS = "cls.predictions.decoder.bias"
# Prefixes of the names that live outside the `bert.` encoder.
_HEAD_PREFIXES = ("cls.",) + tuple(sorted({h.hf_prefix + "." for h in HEAD_KINDS.values()}))


def hf_shapes(config: BertConfig, head: TaskHead | None = None) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor a Hugging Face BertForPreTraining (or `head`'s transformers class)
    of `config` may hold."""
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    if head is not None:
        prefix, outputs = head.head_kind.hf_prefix, head.head_kind.num_outputs(head.labels)
        heads = {f"{prefix}.weight": (outputs, h), f"{prefix}.bias": (outputs,)}
    else:
        heads = {
            "cls.predictions.transform.dense.weight": (h, h),
            "cls.predictions.transform.dense.bias": (h,),
            "cls.predictions.transform.LayerNorm.weight": (h,),
            "cls.predictions.transform.LayerNorm.bias": (h,),
            "cls.predictions.bias": (v,),
            _DECODER_WEIGHT: (v, h),
            _DECODER_BIAS: (v,),
            "cls.seq_relationship.weight": (2, h),
            "cls.seq_relationship.bias": (2,),
        }
    shapes = {
        "embeddings.word_embeddings.weight": (v, h),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
        "pooler.dense.weight": (h, h),
        "pooler.dense.bias": (h,),
        **heads,
    }
    for layer in range(config.num_layers):
        p = f"encoder.layer.{layer}."
        for proj in ("query", "key", "value"):
            shapes[f"{p}attention.self.{proj}.weight"] = (h, h)
            shapes[f"{p}attention.self.{proj}.bias"] = (h,)
        shapes.update({
            p + "attention.output.dense.weight": (h, h),
            p + "attention.output.dense.bias": (h,),
            p + "attention.output.LayerNorm.weight": (h,),
            p + "attention.output.LayerNorm.bias": (h,),
            p + "intermediate.dense.weight": (i, h),
            p + "intermediate.dense.bias": (i,),
            p + "output.dense.weight": (h, i),
            p + "output.dense.bias": (h,),
            p + "output.LayerNorm.weight": (h,),
            p + "output.LayerNorm.bias": (h,),
        })
    return shapes


def _canonical_name(name: str) -> str:
    """BertModel-style name: no `bert.` prefix, TensorFlow-era gamma/beta renamed."""
    if name.startswith("bert."):
        name = name[len("bert."):]
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    return name


@dataclasses.dataclass
class ImportReport:
    """What an import restored, initialised afresh and skipped."""

    restored: list[str] = dataclasses.field(default_factory=list)  # param paths
    initialised: list[str] = dataclasses.field(default_factory=list)  # param paths
    ignored: list[str] = dataclasses.field(default_factory=list)  # source names with no param
    notes: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        lines = [f"restored {len(self.restored)} params"]
        if self.initialised:
            lines.append("initialised (absent from the source): " + ", ".join(self.initialised))
        if self.ignored:
            lines.append("ignored: " + ", ".join(self.ignored))
        return "\n".join(lines + self.notes)


def _path_name(path: Path) -> str:
    return "/".join(path)


def _set(tree: Params, path: Path, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Params, path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _canonical_tensors(tensors: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]],
                       source: str, report: ImportReport) -> dict[str, np.ndarray]:
    """Renamed tensors, with unknown, duplicate and mis-shaped names all reported in one error."""
    canonical: dict[str, np.ndarray] = {}
    unknown, misshaped, duplicate = [], [], []
    for name in sorted(tensors):
        key = _canonical_name(name)
        value = tensors[name]
        if key in _IGNORED_BUFFERS:
            report.ignored.append(name)
        elif key not in expected:
            unknown.append(name)
        elif key in canonical:
            duplicate.append(name)
        elif tuple(value.shape) != expected[key]:
            misshaped.append(f"{name} {tuple(value.shape)} (expected {expected[key]})")
        else:
            canonical[key] = value
    problems = []
    if unknown:
        problems.append("unknown tensors: " + ", ".join(unknown))
    if misshaped:
        problems.append("mis-shaped tensors: " + ", ".join(misshaped))
    if duplicate:
        problems.append("tensors present both with and without the 'bert.' prefix: "
                        + ", ".join(duplicate))
    if problems:
        raise ConversionError(f"{source}: " + "; ".join(problems))
    return canonical


def _check_tied(canonical: dict[str, np.ndarray], source: str, report: ImportReport) -> None:
    """A stored decoder must be the tie this model assumes; otherwise the import would lie."""
    decoder = canonical.pop(_DECODER_WEIGHT, None)
    embeddings = canonical.get("embeddings.word_embeddings.weight")
    if decoder is not None and embeddings is not None:  # absent embeddings: reported as missing
        if not np.array_equal(decoder, embeddings):
            raise ConversionError(
                f"{source}: {_DECODER_WEIGHT} differs from embeddings.word_embeddings.weight; "
                f"this model ties the MLM decoder to the word embeddings, so an untied decoder "
                f"cannot be converted exactly"
            )
        report.ignored.append(f"{_DECODER_WEIGHT} (tied to the word embeddings)")
    decoder_bias = canonical.pop(_DECODER_BIAS, None)
    if decoder_bias is not None:
        bias = canonical.setdefault("cls.predictions.bias", decoder_bias)
        if not np.array_equal(bias, decoder_bias):
            raise ConversionError(
                f"{source}: {_DECODER_BIAS} differs from cls.predictions.bias; they are one tensor"
            )
        report.ignored.append(f"{_DECODER_BIAS} (the same tensor as cls.predictions.bias)")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fresh_subtrees(config: BertConfig, prefixes: tuple[Path, ...], rng: jax.Array) -> list[Params]:
    """Fresh values of just these subtrees: XLA drops the other initialisers entirely."""
    fresh = init_params(BertForPreTraining(config), rng)
    return [_get(fresh, prefix) for prefix in prefixes]


def params_from_hf(tensors: dict[str, np.ndarray], config: BertConfig, rng: jax.Array,
                   *, source: str = "<tensors>",
                   head: TaskHead | None = None) -> tuple[Params, ImportReport]:
    """BertForPreTraining params from Hugging Face tensors, absent heads freshly initialised; or,
    with `head`, the params of its task model (`head.model(config)`), whose head must be there.

    All params are float32, as the model keeps them; the report says if the source was not.
    """
    report = ImportReport()
    expected = hf_shapes(config, head)
    canonical = _canonical_tensors(tensors, expected, source, report)
    _check_tied(canonical, source, report)
    dtypes = sorted({str(v.dtype) for v in canonical.values()} - {"float32"})
    if dtypes:
        report.notes.append(f"converted {', '.join(dtypes)} tensors to float32")

    absent_groups = []
    groups = _OPTIONAL_GROUPS if head is None else {"pooler": _OPTIONAL_GROUPS["pooler"]}
    for group, (names, _) in groups.items():
        present = [n for n in names if n in canonical]
        if not present:
            absent_groups.append(group)
        elif len(present) < len(names):
            missing = [n for n in names if n not in canonical]
            raise ConversionError(f"{source}: incomplete {group}: missing {', '.join(missing)}")
    optional = {n for group in absent_groups for n in _OPTIONAL_GROUPS[group][0]}
    required = [n for n in expected
                if n not in optional and n not in (_DECODER_WEIGHT, _DECODER_BIAS)]
    missing = [n for n in required if n not in canonical]
    if missing:
        raise ConversionError(f"{source}: missing tensors: {', '.join(missing)}")

    def take(name: str) -> np.ndarray:
        return np.asarray(canonical[name], dtype=np.float32)

    params: Params = {}
    for name, path, transposed in _one_to_one(config, head):
        if name in canonical:
            _set(params, path, take(name).T if transposed else take(name))
            report.restored.append(_path_name(path))
    n, d = config.num_heads, config.head_size
    for i in range(config.num_layers):
        names = _attention_names(i)
        kernels = [take(names[f"{p}_weight"]).T.reshape(-1, n, d) for p in ("query", "key", "value")]
        biases = [take(names[f"{p}_bias"]).reshape(n, d) for p in ("query", "key", "value")]
        attention = ("bert", f"layer_{i}", "attention")
        _set(params, attention + ("qkv", "kernel"), np.stack(kernels, axis=1))  # (H, 3, N, D)
        _set(params, attention + ("qkv", "bias"), np.stack(biases, axis=0))  # (3, N, D)
        _set(params, attention + ("out", "kernel"), take(names["out_weight"]).T.reshape(n, d, -1))
        report.restored += [_path_name(attention + k) for k in
                            (("qkv", "kernel"), ("qkv", "bias"), ("out", "kernel"))]

    prefixes = tuple(_OPTIONAL_GROUPS[group][1] for group in absent_groups)
    if prefixes:
        for prefix, subtree in zip(prefixes, _fresh_subtrees(config, prefixes, rng)):
            subtree = jax.tree.map(np.asarray, subtree)
            _set(params, prefix, subtree)
            report.initialised += [_path_name(prefix + tuple(str(k.key) for k in path))
                                   for path, _ in jax.tree_util.tree_flatten_with_path(subtree)[0]]
    return params, report


def params_to_hf(params: Params, config: BertConfig,
                 head: TaskHead | None = None) -> dict[str, np.ndarray]:
    """BertForPreTraining tensors (or those of `head`'s transformers class) by their Hugging
    Face names (`bert.` prefix on the encoder)."""

    def hf_name(name: str) -> str:
        return name if name.startswith(_HEAD_PREFIXES) else "bert." + name

    def get(path: Path) -> np.ndarray:
        return np.asarray(_get(params, path), dtype=np.float32)

    tensors: dict[str, np.ndarray] = {}
    for name, path, transposed in _one_to_one(config, head):
        if head is not None and not head.head_kind.hf_pooled and name in _POOLER:
            continue  # transformers' model has no pooler: it would be an unexpected key
        tensors[hf_name(name)] = get(path).T if transposed else get(path)
    h = config.hidden_size
    for i in range(config.num_layers):
        names = _attention_names(i)
        attention = ("bert", f"layer_{i}", "attention")
        kernel = get(attention + ("qkv", "kernel"))  # (H, 3, N, D)
        bias = get(attention + ("qkv", "bias"))  # (3, N, D)
        for j, proj in enumerate(("query", "key", "value")):
            tensors[hf_name(names[f"{proj}_weight"])] = kernel[:, j].reshape(h, h).T
            tensors[hf_name(names[f"{proj}_bias"])] = bias[j].reshape(h)
        tensors[hf_name(names["out_weight"])] = get(attention + ("out", "kernel")).reshape(h, h).T
    # safetensors stores bytes in memory order: make every tensor contiguous.
    return {name: np.ascontiguousarray(value) for name, value in tensors.items()}


# ---------------------------------------------------------------------------------------------
# Folders


def _write_model_folder(model_dir: str, config: BertConfig, tokenizer: Any, params: Params,
                        head: TaskHead | None = None) -> None:
    """A new model folder, written beside it and put in place when complete."""
    with files.new_directory(model_dir) as tmp:
        checkpoint.write_model_description(tmp, config, tokenizer)
        if head is not None:
            save_task_head(tmp, head)
        checkpoint.save_params(tmp, params)


def import_hf(hf_dir: str, model_dir: str, *, seed: int = 0) -> ImportReport:
    """from-hf: a Hugging Face BERT folder → a model folder (config, tokenizer, params).

    The tokenizer is the folder's WordPiece vocab.txt, or the sentencepiece.model that `to-hf`
    wrote for a model pretrained here, so exported models come back whole. A fine-tuned model's
    head and labels (see `task_head_from_hf`) go into the model folder's task.json. Either
    folder may be a URL (bert.files); a remote input is read from a local copy.
    """
    with files.local_copy(hf_dir) as local_hf_dir:
        return _import_hf(local_hf_dir, model_dir, seed=seed)


def _import_hf(hf_dir: str, model_dir: str, *, seed: int) -> ImportReport:
    model, report = _read_hf(hf_dir, seed=seed)
    _write_model_folder(model_dir, model.config, model.tokenizer, model.params(), model.head)
    return report


def _read_hf(hf_dir: str, *, seed: int) -> tuple[Pretrained, ImportReport]:
    """A local Hugging Face folder converted in memory: what from-hf writes, unwritten."""
    values, config_path = read_hf_config_values(hf_dir)
    config = config_from_hf(values, config_path)
    tokenizer = load_tokenizer(hf_dir)
    if tokenizer.vocab_size > config.vocab_size:
        raise ConversionError(
            f"the tokenizer in {hf_dir} has {tokenizer.vocab_size} tokens but "
            f"{os.path.join(hf_dir, HF_CONFIG_FILE)} says vocab_size={config.vocab_size}"
        )
    tensors = read_hf_tensors(hf_dir)
    head = task_head_from_hf(values, tensors, config_path)
    params, report = params_from_hf(tensors, config, jax.random.key(seed), source=hf_dir, head=head)
    if head is not None:
        report.notes += _head_notes(values, head, config_path)
    return Pretrained(hf_dir, config, head, tokenizer, params), report


def open_pretrained(location: str, *, seed: int = 0) -> Pretrained:
    """The model a fine-tuning run starts from: a model folder, a pretraining or fine-tuning
    work directory, or a Hugging Face BERT folder, converted in memory exactly as from-hf
    converts it (heads it lacks initialised from `seed`, as from-hf's default). Anything else
    is an error saying which files were looked for."""
    folder = files.path(location)
    if (folder / checkpoint.CONFIG_FILE).exists():
        if not ((folder / checkpoint.PARAMS_DIR).is_dir()
                or (folder / checkpoint.CHECKPOINTS_DIR).is_dir()):
            raise FileNotFoundError(f"{location} has {checkpoint.CONFIG_FILE} but no params: "
                                    f"neither {checkpoint.PARAMS_DIR}/ nor "
                                    f"{checkpoint.CHECKPOINTS_DIR}/")
        return Pretrained.folder(location)
    if (folder / HF_CONFIG_FILE).exists():
        with files.local_copy(location) as local_hf_dir:
            model, report = _read_hf(local_hf_dir, seed=seed)
        logging.info("%s: a Hugging Face folder, converted in memory as from-hf does: %s",
                     location, report.summary())
        return dataclasses.replace(model, location=location)
    kind = "a folder" if folder.is_dir() else "no folder" if not folder.exists() else "a file"
    raise FileNotFoundError(
        f"{location} is {kind}, neither a model folder or work directory ({checkpoint.CONFIG_FILE}, "
        f"{checkpoint.TOKENIZER_DIR}/, {checkpoint.PARAMS_DIR}/ or {checkpoint.CHECKPOINTS_DIR}/) "
        f"nor a Hugging Face BERT folder ({HF_CONFIG_FILE}, {SAFETENSORS_FILE} or {TORCH_FILE}, "
        "vocab.txt)")


def _head_notes(values: dict[str, Any], head: TaskHead, source: str) -> list[str]:
    """What the report says about an imported head, and what of config.json it cannot keep."""
    notes = [f"task: {head.kind}" + (f", labels {', '.join(head.labels)}" if head.labels else "")]
    dropout = values.get("classifier_dropout")
    if dropout is not None and dropout != values.get("hidden_dropout_prob", 0.1):
        notes.append(f"{source}: classifier_dropout {dropout} is not kept; fine-tuning here drops "
                     f"out before the head at hidden_dropout_prob")
    label2id = values.get("label2id")
    labels = head.labels or ((_HF_DEFAULT_LABEL,) if head.kind == "regression" else ())
    if head.head_kind.labelled and label2id is not None and label2id != {
            label: i for i, label in enumerate(labels)}:
        notes.append(f"{source}: label2id disagrees with id2label; id2label was used")
    return notes


_SENTENCEPIECE_NOTE = """\
# Tokenizer

This model was pretrained with bert-jax on a SentencePiece vocabulary: `sentencepiece.model`
here, with [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 (the model's ids). Hugging Face's
`BertTokenizer` reads only WordPiece `vocab.txt` files, so it cannot tokenize for this model;
use `sentencepiece.SentencePieceProcessor(model_file="sentencepiece.model")` and add
[CLS] ... [SEP] ... [SEP] around the ids yourself.
"""


def export_hf(model_dir: str, hf_dir: str) -> None:
    """to-hf: a model folder or pretraining work directory → a Hugging Face BERT folder.

    `transformers.BertForPreTraining.from_pretrained(hf_dir)` loads it with no missing or
    unexpected keys: the tied decoder weight and bias are left out, as transformers saves them.
    A fine-tuned model (a folder with task.json) becomes its transformers class instead, e.g.
    `transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir)`, labels included.
    """
    config = checkpoint.read_model_config(model_dir)
    if config.causal or config.top_bilstm:
        raise ConversionError(f"{model_dir}: transformers' BERT has no left-to-right attention "
                              "or top BiLSTM (bert_config.json: causal / top_bilstm)")
    if config.norm_position != "post":
        raise ConversionError(
            f"{model_dir}: config.model.norm_position={config.norm_position!r} (bert_config.json: "
            "norm_position) has no transformers BERT equivalent: BertModel normalises after each "
            "residual sum (post-LN); pretrain with config.model.norm_position='post' to export")
    head = read_task_head(model_dir)
    tokenizer = checkpoint.load_tokenizer(model_dir)
    params = checkpoint.load_params(model_dir)
    try:
        check_task_params(params, head.model(config) if head else BertForPreTraining(config),
                          model_dir)
    except ValueError as e:
        hint = "" if head else f" (a fine-tuned model's folder names its head in {TASK_FILE})"
        raise ConversionError(f"{e}{hint}") from e
    tensors = params_to_hf(params, config, head)
    with files.new_directory(hf_dir) as tmp:
        with open(os.path.join(tmp, HF_CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(config_to_hf(config, pad_token_id=tokenizer.pad_id, head=head), f, indent=2)
            f.write("\n")
        save_file(tensors, os.path.join(tmp, SAFETENSORS_FILE), metadata={"format": "pt"})
        tokenizer.save(tmp)
        if isinstance(tokenizer, SentencePieceTokenizer):
            logging.warning("%s: SentencePiece tokenizer exported as sentencepiece.model; "
                            "transformers' BertTokenizer cannot read it (see README.md)", hf_dir)
            with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
                f.write(_SENTENCEPIECE_NOTE)


def model_at_step(workdir: str, step: int, model_dir: str) -> None:
    """at-step: a model folder (bert_config.json, tokenizer/, params/) of checkpoint `step` of a
    pretraining work directory, e.g. to fine-tune from several points along one run."""
    config = checkpoint.read_model_config(workdir)
    tokenizer = checkpoint.load_tokenizer(workdir)
    params = checkpoint.load_params(workdir, step=step)
    _write_model_folder(model_dir, config, tokenizer, params)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bert.convert", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    from_hf = commands.add_parser("from-hf", help="Hugging Face folder → model folder")
    from_hf.add_argument("--input", required=True, help="HF_DIR: config.json, weights, vocab.txt")
    from_hf.add_argument("--output", required=True, help="MODEL_DIR to create (new or empty)")
    from_hf.add_argument("--seed", type=int, default=0, help="initialises heads the input lacks")
    to_hf = commands.add_parser("to-hf", help="model folder or work directory → Hugging Face folder")
    to_hf.add_argument("--input", required=True, help="MODEL_DIR or work directory")
    to_hf.add_argument("--output", required=True, help="HF_DIR to create (new or empty)")
    at_step = commands.add_parser("at-step", help="work directory's checkpoint → model folder")
    at_step.add_argument("--input", required=True, help="pretraining work directory")
    at_step.add_argument("--step", required=True, type=int, help="a checkpointed step")
    at_step.add_argument("--output", required=True, help="MODEL_DIR to create (new or empty)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "from-hf":
            report = import_hf(args.input, args.output, seed=args.seed)
            print(report.summary())
        elif args.command == "at-step":
            model_at_step(args.input, args.step, args.output)
        else:
            export_hf(args.input, args.output)
        print(f"wrote {args.output}")
    except (ConversionError, FileNotFoundError, FileExistsError, ImportError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
