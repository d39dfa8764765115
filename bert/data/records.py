"""Prepare pretraining examples once, store them as .npy files, reuse them on every run.

    corpus files ─▶ documents ─▶ token ids ─▶ NSP instances ─▶ (static masks)
        ─▶ <cache>/examples-<key>/

The folder name is a hash of everything that changes the content (files with sizes and
mtimes, tokenizer fingerprint, sequence length, duplication, short-sequence probability,
seed, and the masking settings when masks are stored), so a changed input is a new folder and
an unchanged one is a free reload. Folders are written under a temporary name and renamed
into place, so a crash or a concurrent writer never leaves a half-written cache that a later
run would trust.

Layout of one examples folder (N rows, T = max_seq_len, P = max_predictions_per_seq):

    key.json                   what the hash was computed from (for humans)
    summary.json               documents read, skipped files, instances, tokens, IsNext fraction
    train/input_ids.npy        int32 [N, T]  [CLS] A [SEP] B [SEP], padded with pad_id
    train/segment_ids.npy      int8  [N, T]
    train/lengths.npy          int32 [N]
    train/next_sentence_labels.npy  int32 [N]  0 = IsNext, 1 = NotNext
    train/masked_lm_{positions,ids,inputs,weights}.npy  [N, P]  only for static masking
    train/instance_lengths.npy int32 [N, K]  only with packing: rows hold up to K instances
                               (bert/data/packing.py); next_sentence_labels is then [N, K]
    eval/...                   the same four unmasked arrays, if eval files are configured
                               (never packed: eval numbers stay comparable across settings)

Reading, tokenizing and pairing run in `config.data.prep_workers` processes with results
independent of their number (bert/data/parallel.py).

When `config.data.tokenizer` is empty, a SentencePiece model is trained on the train files and
kept in `<cache>/tokenizer-<key>/`, also written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bert.data.corpus import DataError, check_doc_separator, expand_files, parse_file_patterns
from bert.data.instances import IS_NEXT, Instances, create_instances
from bert.data.masking import MaskingConfig, MaskVocabulary, mask_batch, row_keys
from bert.data.packing import PackedInstances, pack, pack_indices
from bert.data.parallel import resolve_workers
from bert.data.tokenized import tokenize_files
from bert.tokenizer import (SENTENCEPIECE_FILE, Tokenizer, TokenizerError, load_tokenizer,
                            train_sentencepiece)

FORMAT_VERSION = 3  # bump when the stored layout, the instance recipe or static masks change
MASKING_MODES = ("dynamic", "static")
_BASE_ARRAYS = ("input_ids", "segment_ids", "lengths", "next_sentence_labels")
_MASK_ARRAYS = ("masked_lm_positions", "masked_lm_ids", "masked_lm_inputs", "masked_lm_weights")
# Random streams are keyed by (seed, purpose, ...) so that no two purposes share draws.
STATIC_MASK_STREAM = 1
TOKENIZER_SEED = 0  # the vocabulary depends on the data only, so runs with other seeds share it


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """`config.data` (plus the top-level keys it depends on), validated where it enters."""

    train_files: tuple[str, ...]
    eval_files: tuple[str, ...]
    tokenizer: str
    doc_separator: str
    masking: str
    mask: MaskingConfig
    dupe_factor: int
    eval_dupe_factor: int  # pairings of the eval text: more NSP pairs, a tighter accuracy
    short_seq_prob: float
    num_workers: int
    packing: bool  # rows of up to max_instances_per_pack instances (train split only)
    max_instances_per_pack: int
    prep_workers: int  # processes preparing examples; 0 = one per CPU core

    @classmethod
    def from_config(cls, config_data: Any, *, max_predictions_per_seq: int) -> DataSettings:
        """Reads a `config.data` ConfigDict (or any object with those attributes)."""
        get = _config_getter(config_data)
        masking = str(get("masking", "dynamic"))
        if masking not in MASKING_MODES:
            raise DataError(f"config.data.masking must be one of {MASKING_MODES}, "
                            f"got {masking!r}")
        doc_separator = str(get("doc_separator", "file"))
        check_doc_separator(doc_separator)
        dupe_factor = _as_int(get("dupe_factor", 1), "config.data.dupe_factor", minimum=1)
        eval_dupe_factor = _as_int(get("eval_dupe_factor", 1), "config.data.eval_dupe_factor",
                                   minimum=1)

        def number(key: str, default: float) -> float:
            return _as_float(get(key, default), f"config.data.{key}")

        short_seq_prob = number("short_seq_prob", 0.1)
        if not 0.0 <= short_seq_prob <= 1.0:
            raise DataError(f"config.data.short_seq_prob must be in [0, 1], got {short_seq_prob}")
        num_workers = _as_int(get("num_workers", 0), "config.data.num_workers", minimum=0)
        packing = get("packing", False)
        if not isinstance(packing, bool):
            raise DataError(f"config.data.packing must be True or False, got {packing!r}")
        max_instances_per_pack = _as_int(get("max_instances_per_pack", 3),
                                         "config.data.max_instances_per_pack", minimum=1)
        prep_workers = _as_int(get("prep_workers", 0), "config.data.prep_workers", minimum=0)
        train_files = get("train_files", None)
        if train_files is None:
            raise DataError("config.data.train_files is missing: name the pretraining text files")
        mask = MaskingConfig(
            max_predictions_per_seq=_as_int(max_predictions_per_seq,
                                            "config.max_predictions_per_seq", minimum=1),
            mask_prob=number("mask_prob", 0.15),
            mask_token_ratio=number("mask_token_ratio", 0.8),
            random_token_ratio=number("random_token_ratio", 0.1),
            keep_token_ratio=number("keep_token_ratio", 0.1),
            whole_word_mask=bool(get("whole_word_mask", False)))
        return cls(train_files=tuple(parse_file_patterns(train_files,
                                                         key="config.data.train_files")),
                   eval_files=tuple(parse_file_patterns(get("eval_files", ()) or (),
                                                        key="config.data.eval_files")),
                   tokenizer=str(get("tokenizer", "") or ""),
                   doc_separator=doc_separator, masking=masking, mask=mask,
                   dupe_factor=dupe_factor, eval_dupe_factor=eval_dupe_factor,
                   short_seq_prob=short_seq_prob,
                   num_workers=num_workers, packing=packing,
                   max_instances_per_pack=max_instances_per_pack, prep_workers=prep_workers)


def _config_getter(config_data: Any) -> Callable[[str, Any], Any]:
    if isinstance(config_data, Mapping):
        return lambda key, default: config_data.get(key, default)
    return lambda key, default: getattr(config_data, key, default)


def _as_int(value: Any, key: str, *, minimum: int) -> int:
    try:
        valid = not isinstance(value, bool) and int(value) == value and int(value) >= minimum
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise DataError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_float(value: Any, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{key} must be a number, got {value!r}") from None


@dataclasses.dataclass(frozen=True)
class SplitArrays:
    """One split's stored examples, memory-mapped read-only."""

    directory: Path
    input_ids: np.ndarray  # int32 [N, T]
    segment_ids: np.ndarray  # int8 [N, T]
    lengths: np.ndarray  # int32 [N]
    next_sentence_labels: np.ndarray  # int32 [N], or [N, K] when packed
    masked_lm_positions: np.ndarray | None = None  # int32 [N, P], static masking only
    masked_lm_ids: np.ndarray | None = None  # int32 [N, P]
    masked_lm_inputs: np.ndarray | None = None  # int32 [N, P]
    masked_lm_weights: np.ndarray | None = None  # float32 [N, P]
    instance_lengths: np.ndarray | None = None  # int32 [N, K], packed rows only

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def has_static_masks(self) -> bool:
        return self.masked_lm_positions is not None

    @classmethod
    def load(cls, directory: Path) -> SplitArrays:
        names = list(_BASE_ARRAYS)
        if (directory / "masked_lm_positions.npy").exists():
            names += _MASK_ARRAYS
        if (directory / "instance_lengths.npy").exists():
            names.append("instance_lengths")
        arrays = {}
        for name in names:
            path = directory / f"{name}.npy"
            if not path.is_file():
                raise DataError(f"{path} is missing from the prepared-data cache; delete "
                                f"{directory.parent} to rebuild it")
            arrays[name] = np.load(path, mmap_mode="r")
        split = cls(directory=directory, **arrays)
        rows = {name: a.shape[0] for name, a in arrays.items()}
        if len(set(rows.values())) != 1:
            raise DataError(f"{directory}: arrays disagree on the number of rows {rows}; delete "
                            f"{directory.parent} to rebuild it")
        return split


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Stored examples plus everything the input pipeline needs to mask and batch them."""

    directory: Path
    train: SplitArrays
    eval: SplitArrays | None
    max_seq_len: int  # T
    masking: str  # "dynamic" | "static"
    mask: MaskingConfig
    vocab: MaskVocabulary
    pad_id: int
    summary: dict[str, Any]

    @property
    def max_predictions_per_seq(self) -> int:
        return self.mask.max_predictions_per_seq


def file_fingerprints(patterns: Sequence[str], *, key: str) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every matched file: cheap, and changes whenever content does."""
    result = []
    for path in expand_files(patterns, key=key):
        stat = path.stat()
        result.append((str(path), stat.st_size, stat.st_mtime_ns))
    return result


def _digest(material: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _write_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """Runs `write(tmp)` into a fresh temporary folder beside `final`, then renames it.

    If another process finished the same folder first, its copy is kept (same content).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".partial-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def trained_tokenizer(settings: DataSettings, *, vocab_size: int, cache_dir: Path) -> Tokenizer:
    """The SentencePiece model trained on the train files, trained on first use and cached."""
    material = {"format": FORMAT_VERSION, "vocab_size": vocab_size,
                "doc_separator": settings.doc_separator, "seed": TOKENIZER_SEED,
                "files": file_fingerprints(settings.train_files, key="config.data.train_files")}
    folder = cache_dir / f"tokenizer-{_digest(material)}"
    if not (folder / SENTENCEPIECE_FILE).is_file():
        def write(tmp: Path) -> None:
            try:
                train_sentencepiece(list(settings.train_files), vocab_size,
                                    str(tmp / Path(SENTENCEPIECE_FILE).stem),
                                    doc_separator=settings.doc_separator, seed=TOKENIZER_SEED)
            except TokenizerError as err:
                raise DataError(f"training a tokenizer for config.model.vocab_size="
                                f"{vocab_size} (config.data.tokenizer is empty): {err}") from None
            (tmp / "key.json").write_text(json.dumps(material, indent=2) + "\n")
        _write_atomically(folder, write)
    return load_tokenizer(folder)


def static_masks(instances: Instances | PackedInstances, mask: MaskingConfig, vocab: MaskVocabulary, *,
                 seed: int, stream: int, chunk_rows: int = 4096) -> dict[str, np.ndarray]:
    """Masks every row once; row i's masks are keyed by (seed, stream, i)."""
    chunks = []
    for first in range(0, len(instances), chunk_rows):
        rows = np.arange(first, min(first + chunk_rows, len(instances)))
        chunks.append(mask_batch(instances.input_ids[rows], instances.lengths[rows],
                                 row_keys(seed, stream, rows), mask, vocab))
    return {"masked_lm_positions": np.concatenate([c.positions for c in chunks]),
            "masked_lm_ids": np.concatenate([c.labels for c in chunks]),
            "masked_lm_inputs": np.concatenate([c.inputs for c in chunks]),
            "masked_lm_weights": np.concatenate([c.weights for c in chunks])}


def _split_summary(corpus_summary: dict[str, Any], instances: Instances,
                   packed: PackedInstances | None, corpus_tokens: int) -> dict[str, Any]:
    tokens = int(instances.lengths.sum())
    summary = {**corpus_summary,
               "corpus_tokens": corpus_tokens,
               "instances": len(instances),
               "instance_tokens": tokens,
               "mean_instance_length": float(instances.lengths.mean()),
               "is_next_fraction": float(np.mean(instances.next_sentence_labels == IS_NEXT)),
               "padding_fraction": 1.0 - tokens / instances.input_ids.size}
    if packed is not None:
        summary.update(packed_rows=len(packed),
                       packed_padding_fraction=1.0 - tokens / packed.input_ids.size,
                       mean_instances_per_row=len(instances) / len(packed))
    return summary


def prepare_pretraining_data(
    config_data: Any,
    max_seq_len: int,
    max_predictions_per_seq: int,
    seed: int,
    cache_dir: str | Path,
    tokenizer: Tokenizer,
) -> PreparedData:
    """Builds (or reloads) the stored examples for `config_data` and returns them mapped."""
    settings = DataSettings.from_config(config_data,
                                        max_predictions_per_seq=max_predictions_per_seq)
    max_seq_len = _as_int(max_seq_len, "config.max_seq_len", minimum=5)
    seed = _as_int(seed, "config.seed", minimum=0)
    vocab = MaskVocabulary.from_tokenizer(tokenizer)
    cache_dir = Path(cache_dir)

    material: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "train_files": file_fingerprints(settings.train_files, key="config.data.train_files"),
        "eval_files": (file_fingerprints(settings.eval_files, key="config.data.eval_files")
                       if settings.eval_files else []),
        "doc_separator": settings.doc_separator,
        "tokenizer": tokenizer.fingerprint,
        "max_seq_len": max_seq_len,
        "dupe_factor": settings.dupe_factor,
        "short_seq_prob": settings.short_seq_prob,
        "seed": seed,
        "static_masks": (dataclasses.asdict(settings.mask) if settings.masking == "static"
                         else None),
    }
    if settings.packing:  # only then, so that unpacked caches keep their names
        material["max_instances_per_pack"] = settings.max_instances_per_pack
    if settings.eval_dupe_factor != 1:  # likewise
        material["eval_dupe_factor"] = settings.eval_dupe_factor
    folder = cache_dir / f"examples-{_digest(material)}"

    if not (folder / "summary.json").is_file():
        def write(tmp: Path) -> None:
            started = time.time()
            summary: dict[str, Any] = {}
            splits = [("train", settings.train_files, "config.data.train_files",
                       settings.dupe_factor)]
            if settings.eval_files:
                # Its masks are drawn from the seed at batch time; more than one pairing of the
                # text gives NSP accuracy on more pairs.
                splits.append(("eval", settings.eval_files, "config.data.eval_files",
                               settings.eval_dupe_factor))
            workers = resolve_workers(settings.prep_workers)
            for name, patterns, key, dupe_factor in splits:
                corpus, corpus_summary = tokenize_files(
                    patterns, tokenizer=tokenizer, doc_separator=settings.doc_separator,
                    key=key, num_workers=workers)
                instances = create_instances(
                    corpus, max_seq_len=max_seq_len, short_seq_prob=settings.short_seq_prob,
                    dupe_factor=dupe_factor, seed=seed, cls_id=tokenizer.cls_id,
                    sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id, num_workers=workers)
                packed = None
                rows: Instances | PackedInstances = instances
                if name == "train" and settings.packing:
                    packs = pack_indices(instances.lengths, max_seq_len=max_seq_len,
                                         max_instances=settings.max_instances_per_pack,
                                         seed=seed)
                    rows = packed = pack(instances, packs, pad_id=tokenizer.pad_id)
                arrays = {name: getattr(rows, name) for name in _BASE_ARRAYS}
                if packed is not None:
                    arrays["instance_lengths"] = packed.instance_lengths
                if name == "train" and settings.masking == "static":
                    arrays.update(static_masks(rows, settings.mask, vocab, seed=seed,
                                               stream=STATIC_MASK_STREAM))
                (tmp / name).mkdir()
                for array_name, array in arrays.items():
                    np.save(tmp / name / f"{array_name}.npy", array)
                summary[name] = _split_summary(corpus_summary.to_dict(), instances, packed,
                                               corpus_tokens=int(corpus.tokens.size))
            summary["seconds_to_prepare"] = round(time.time() - started, 2)
            (tmp / "key.json").write_text(json.dumps(material, indent=2) + "\n")
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _write_atomically(folder, write)

    summary = json.loads((folder / "summary.json").read_text())
    train = SplitArrays.load(folder / "train")
    if settings.masking == "static" and not train.has_static_masks:
        raise DataError(f"{folder}: built for dynamic masking but config.data.masking is "
                        "'static'; delete the folder to rebuild it")
    eval_split = SplitArrays.load(folder / "eval") if (folder / "eval").is_dir() else None
    return PreparedData(directory=folder, train=train, eval=eval_split, max_seq_len=max_seq_len,
                        masking=settings.masking, mask=settings.mask, vocab=vocab,
                        pad_id=tokenizer.pad_id, summary=summary)


def build(config: Any, workdir: str | Path) -> tuple[Tokenizer, PreparedData]:
    """The training code's one call: tokenizer and prepared examples for a full config.

    Reads config.data, config.seed, config.max_seq_len, config.max_predictions_per_seq and
    config.model.vocab_size. The cache lives in config.data.cache_dir, or `<workdir>/data`.
    """
    settings = DataSettings.from_config(
        config.data, max_predictions_per_seq=config.max_predictions_per_seq)
    cache_dir = Path(getattr(config.data, "cache_dir", "") or Path(workdir) / "data")
    vocab_size = _as_int(config.model.vocab_size, "config.model.vocab_size", minimum=6)
    if settings.tokenizer:
        try:
            tokenizer = load_tokenizer(settings.tokenizer)
        except TokenizerError as err:
            raise DataError(f"config.data.tokenizer: {err}") from None
        if tokenizer.vocab_size > vocab_size:
            raise DataError(f"config.model.vocab_size={vocab_size} is smaller than the "
                            f"vocabulary of config.data.tokenizer={settings.tokenizer} "
                            f"({tokenizer.vocab_size} tokens)")
    else:
        tokenizer = trained_tokenizer(settings, vocab_size=vocab_size, cache_dir=cache_dir)
    prepared = prepare_pretraining_data(config.data, config.max_seq_len,
                                        config.max_predictions_per_seq, config.seed,
                                        cache_dir, tokenizer)
    return tokenizer, prepared
