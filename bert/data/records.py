"""Prepare pretraining examples once, as shards, and reuse them on every run.

    corpus files ─plan─▶ parts ─▶ documents ─▶ token ids ─▶ NSP instances ─▶ (static masks)
        ─▶ <cache>/examples-<key>/<split>/part-NNNNN/

The folder name is a hash of everything that changes the content (files with sizes and
mtimes, corpus format, part size, tokenizer fingerprint, sequence length, duplication,
short-sequence probability, seed, and the masking settings when masks are stored), so a changed
input is a new folder and an unchanged one is a free reload.

The corpus is cut into parts of about `config.data.part_mb` of text (bert/data/plan.py), and
each part is read, tokenized, paired and masked alone into its own shard (bert/data/shards.py):
memory is bounded by the part size times the worker processes, whatever the corpus size. Parts
are the unit of work: process I of N (`python -m bert.prepare --shard I --num_shards N`, or
the processes of a multi-host `bert.pretrain`) prepares parts I, I + N, I + 2N, ... of the
train and eval splits together; part p's shard does not depend on N or on the worker count, so
the examples are the same however the work was shared. Shards are renamed into place when
complete and the folder's summary.json is written once all of them exist: a crash or kill
leaves complete shards, which a rerun keeps, and nothing a later run would trust half-written.

Layout of one examples folder (n rows per shard, T = max_seq_len, P = max_predictions_per_seq):

    key.json                   what the hash was computed from (for humans)
    plan.json                  the parts of each split: files and byte ranges
    summary.json               totals: documents, instances, tokens, IsNext fraction, per split
    train/part-NNNNN/input_ids.npy        int32 [n, T]  [CLS] A [SEP] B [SEP], padded with pad_id
    train/part-NNNNN/segment_ids.npy      int8  [n, T]
    train/part-NNNNN/lengths.npy          int32 [n]
    train/part-NNNNN/next_sentence_labels.npy  int32 [n]  0 = IsNext, 1 = NotNext
    train/part-NNNNN/masked_lm_{positions,ids,inputs,weights}.npy  [n, P]  static masking only
    train/part-NNNNN/instance_lengths.npy int32 [n, K]  only with packing: rows hold up to K
                               instances (bert/data/packing.py); next_sentence_labels is [n, K]
    train/part-NNNNN/summary.json          what the part read and made
    eval/...                   the same four unmasked arrays, if eval files are configured
                               (never packed: eval numbers stay comparable across settings)

A split's rows are its shards' rows in part order (`ShardedRows`), so the input pipeline's
batch of step s is still a function of (seed, s) alone.

When `config.data.tokenizer` is empty, a tokenizer (`config.data.tokenizer_type`: SentencePiece,
or the paper's uncased WordPiece) is trained on the train files and kept in
`<cache>/tokenizer-<key>/`, also written atomically.

The cache may be remote (gs://bucket/run/data, any store of bert/files.py), and so may the
corpus. Shards are written locally and uploaded with their summary.json last, so that the marker
every reader checks appears only after the arrays it describes. Training memory-maps shards,
which needs local files, so a remote examples folder is read through a mirror: it is copied once
per host into `config.data.local_cache_dir` (default: bert-data under the system's temporary
folder, e.g. $TMPDIR) under the same `examples-<key>` name, and a later run with the same content
key reuses that copy without reading the store again (the key names the content, so a copy is
never stale; nothing removes old copies). The processes of a multi-host run each prepare their
share into the remote cache and poll it for the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from etils import epath

from bert import files
from bert.config import validate_data
from bert.data.corpus import (CorpusSummary, DataError, expand_files, parse_file_patterns,
                              check_not_empty, piece_documents)
from bert.data.masking import MaskingConfig, MaskVocabulary
from bert.data.parallel import resolve_workers, worker_map
from bert.data.plan import Part, plan_parts
from bert.data.shards import (BASE_ARRAYS, MASK_ARRAYS, SUMMARY_FILE, ShardedRows, ShardJob,
                              load_shards, shard_name, write_shard)
from bert.tokenizer import (SENTENCEPIECE_FILE, Tokenizer, TokenizerError, load_tokenizer,
                            train_sentencepiece)
from bert.wordpiece import VOCAB_FILE, train_wordpiece

FORMAT_VERSION = 4  # bump when the stored layout, the instance recipe or static masks change
TOKENIZER_SEED = 0  # the vocabulary depends on the data only, so runs with other seeds share it
# Text a tokenizer is trained on, at most: every k-th part of a larger corpus (a vocabulary
# settles long before; SentencePiece samples 2M sentences of it in any case).
TOKENIZER_TRAIN_BYTES = 1 << 30
_WAIT_SECONDS = 5.0  # polling interval while other processes prepare their shares


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """`config.data` (plus the top-level keys it depends on), validated where it enters.

    The one check of the data keys: bert.config.validate runs it before any work starts, and
    every entry to the data stage runs it again. Defaults are not repeated here: they are
    bert.config.pretraining_config()'s, and a key missing from `config.data` is an error.
    """

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
    corpus_format: str  # bert/data/corpus.py: paragraphs, sentences or jsonl
    text_field: str  # the JSONL field holding a document's text
    tokenizer_type: str  # what to train when `tokenizer` is empty
    tokenizer_vocab_size: int  # its vocabulary; 0 = config.model.vocab_size
    part_bytes: int  # text per corpus part (bert/data/plan.py)
    cache_dir: str  # prepared examples and trained tokenizers; "" = <workdir>/data
    local_cache_dir: str  # where a remote cache is mirrored; "" = <temp folder>/bert-data

    @classmethod
    def from_config(cls, config_data: Any, *, max_predictions_per_seq: int) -> DataSettings:
        """Reads a `config.data` ConfigDict (or any mapping or object with those keys) once
        bert.config.validate_data accepts it; raises DataError naming the first missing or bad
        key."""
        try:
            validate_data(config_data)
        except ValueError as error:
            raise DataError(str(error)) from None
        get = _config_getter(config_data)
        mask = MaskingConfig(
            max_predictions_per_seq=_as_int(max_predictions_per_seq,
                                            "config.max_predictions_per_seq", minimum=1),
            mask_prob=get("mask_prob"), mask_token_ratio=get("mask_token_ratio"),
            random_token_ratio=get("random_token_ratio"),
            keep_token_ratio=get("keep_token_ratio"), whole_word_mask=get("whole_word_mask"))
        train_files = parse_file_patterns(get("train_files"), key="config.data.train_files")
        if not train_files:
            raise DataError("config.data.train_files: is empty: name the training text files")
        return cls(train_files=tuple(train_files),
                   eval_files=tuple(parse_file_patterns(get("eval_files") or (),
                                                        key="config.data.eval_files")),
                   tokenizer=str(get("tokenizer") or ""),
                   doc_separator=get("doc_separator"), masking=get("masking"), mask=mask,
                   dupe_factor=get("dupe_factor"), eval_dupe_factor=get("eval_dupe_factor"),
                   short_seq_prob=float(get("short_seq_prob")),
                   num_workers=get("num_workers"), packing=get("packing"),
                   max_instances_per_pack=get("max_instances_per_pack"),
                   prep_workers=get("prep_workers"), corpus_format=get("corpus_format"),
                   text_field=str(get("text_field")), tokenizer_type=get("tokenizer_type"),
                   tokenizer_vocab_size=get("tokenizer_vocab_size"),
                   part_bytes=max(1, int(get("part_mb") * (1 << 20))),
                   cache_dir=str(get("cache_dir") or ""),
                   local_cache_dir=str(get("local_cache_dir") or ""))

    def local_copy(self, folder: epath.Path, marker: str) -> Path:
        """`folder` of the cache as a local folder: itself, or its copy on this host."""
        root = self.local_cache_dir or os.path.join(tempfile.gettempdir(), "bert-data")
        return Path(files.mirrored(folder, os.path.join(root, folder.name), marker=marker))


def _config_getter(config_data: Any) -> Callable[[str], Any]:
    """`get(key)`: the value of config.data.<key> (present: validate_data checked it)."""
    if isinstance(config_data, Mapping):
        return config_data.__getitem__
    return lambda key: getattr(config_data, key)


def _as_int(value: Any, key: str, *, minimum: int) -> int:
    try:
        valid = not isinstance(value, bool) and int(value) == value and int(value) >= minimum
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise DataError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class SplitArrays:
    """One split's stored examples: its shards, memory-mapped read-only, joined row-wise."""

    directory: Path
    input_ids: ShardedRows  # int32 [N, T]
    segment_ids: ShardedRows  # int8 [N, T]
    lengths: ShardedRows  # int32 [N]
    next_sentence_labels: ShardedRows  # int32 [N], or [N, K] when packed
    masked_lm_positions: ShardedRows | None = None  # int32 [N, P], static masking only
    masked_lm_ids: ShardedRows | None = None  # int32 [N, P]
    masked_lm_inputs: ShardedRows | None = None  # int32 [N, P]
    masked_lm_weights: ShardedRows | None = None  # float32 [N, P]
    instance_lengths: ShardedRows | None = None  # int32 [N, K], packed rows only

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def has_static_masks(self) -> bool:
        return self.masked_lm_positions is not None

    @classmethod
    def load(cls, directory: Path) -> SplitArrays:
        shards = sorted(p for p in directory.glob("part-*") if p.is_dir())
        if not shards:
            raise DataError(f"{directory} holds no shards; delete {directory.parent} to "
                            "rebuild it")
        names = list(BASE_ARRAYS)
        if (shards[0] / "masked_lm_positions.npy").exists():
            names += MASK_ARRAYS
        if (shards[0] / "instance_lengths.npy").exists():
            names.append("instance_lengths")
        return cls(directory=directory, **load_shards(shards, names))


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Stored examples plus everything the input pipeline needs to mask and batch them."""

    directory: epath.Path  # the examples folder in the cache (SplitArrays: its local copy)
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


def file_fingerprints(patterns: Sequence[str], *, key: str) -> list[tuple[str, int, int | str]]:
    """(path, size, version) of every matched file: cheap, and changes whenever content does
    (`bert.files.fingerprint`)."""
    return [files.fingerprint(path) for path in expand_files(patterns, key=key)]


def _digest(material: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _plan(settings: DataSettings, patterns: Sequence[str], key: str) -> list[Part]:
    return plan_parts(expand_files(patterns, key=key), corpus_format=settings.corpus_format,
                      doc_separator=settings.doc_separator, part_bytes=settings.part_bytes)


def training_sentences(settings: DataSettings, summary: CorpusSummary | None = None,
                       max_bytes: int = TOKENIZER_TRAIN_BYTES) -> Iterator[str]:
    """The train files' sentences, streamed; of a corpus over `max_bytes`, every k-th part.
    `summary` counts what was read."""
    parts = _plan(settings, settings.train_files, "config.data.train_files")
    stride = max(1, math.ceil(sum(p.text_bytes for p in parts) / max_bytes))
    summary = CorpusSummary() if summary is None else summary
    for part in parts[::stride]:
        for piece in part.pieces:
            for document in piece_documents(piece, summary, doc_separator=settings.doc_separator,
                                            corpus_format=settings.corpus_format,
                                            text_field=settings.text_field):
                yield from document


def trained_tokenizer(settings: DataSettings, *, vocab_size: int,
                      cache_dir: epath.Path) -> Tokenizer:
    """The tokenizer trained on the train files (`settings.tokenizer_type`), cached."""
    material = {"format": FORMAT_VERSION, "vocab_size": vocab_size,
                "type": settings.tokenizer_type, "corpus_format": settings.corpus_format,
                "doc_separator": settings.doc_separator, "seed": TOKENIZER_SEED,
                "files": file_fingerprints(settings.train_files, key="config.data.train_files")}
    folder = cache_dir / f"tokenizer-{_digest(material)}"
    expected = VOCAB_FILE if settings.tokenizer_type == "wordpiece" else SENTENCEPIECE_FILE
    if not files.fresh(folder / expected).is_file():
        with files.published_directory(folder, marker=expected) as scratch:
            tmp = Path(scratch)
            read = CorpusSummary()
            sentences = training_sentences(settings, read)
            try:
                if settings.tokenizer_type == "wordpiece":
                    train_wordpiece(sentences, vocab_size).save(tmp)
                else:
                    train_sentencepiece(sentences, vocab_size,
                                        str(tmp / Path(SENTENCEPIECE_FILE).stem),
                                        seed=TOKENIZER_SEED)
            except TokenizerError as err:
                check_not_empty(read, "config.data.train_files")  # the cause, when it is that
                raise DataError(f"training a {settings.tokenizer_type} tokenizer of {vocab_size} "
                                f"tokens (config.data.tokenizer is empty): {err}") from None
            (tmp / "key.json").write_text(json.dumps(material, indent=2) + "\n")
    return load_tokenizer(settings.local_copy(folder, expected))


@dataclasses.dataclass(frozen=True)
class _Split:
    name: str  # "train" | "eval"
    key: str  # the config key naming its files
    dupe_factor: int
    parts: tuple[Part, ...]


def _splits(settings: DataSettings) -> list[_Split]:
    splits = [_Split("train", "config.data.train_files", settings.dupe_factor,
                     tuple(_plan(settings, settings.train_files, "config.data.train_files")))]
    if settings.eval_files:
        # Its masks are drawn from the seed at batch time; more than one pairing of the text
        # gives NSP accuracy on more pairs.
        splits.append(_Split("eval", "config.data.eval_files", settings.eval_dupe_factor,
                             tuple(_plan(settings, settings.eval_files,
                                         "config.data.eval_files"))))
    return splits


# Per-worker state: set once per process by `_set_job`, read by every task.
_job: tuple[ShardJob, epath.Path, dict[str, _Split]] | None = None


def _set_job(job: ShardJob, folder: epath.Path, splits: dict[str, _Split]) -> None:
    global _job
    _job = (job, folder, splits)


def _prepare_part(task: tuple[str, int]) -> tuple[str, int, dict[str, Any]]:
    """Writes one part's shard unless an earlier run did; returns (split, part, summary)."""
    assert _job is not None, "_set_job runs first"
    job, folder, splits = _job
    name, index = task
    split = splits[name]
    final = folder / name / shard_name(index)
    if not (final / SUMMARY_FILE).is_file():
        is_train = name == "train"
        split_job = job if is_train else dataclasses.replace(job, mask=None)
        with files.published_directory(final, marker=SUMMARY_FILE) as scratch:
            write_shard(Path(scratch), index, split.parts[index], split_job, split.dupe_factor,
                        pack_rows=is_train and job.packing)
    return name, index, json.loads((final / SUMMARY_FILE).read_text())


def _tasks(splits: Sequence[_Split]) -> list[tuple[str, int]]:
    return [(split.name, index) for split in splits for index in range(len(split.parts))]


def _log_part(name: str, index: int, summary: Mapping[str, Any]) -> None:
    logging.info("%s part %d: %d documents, %d tokens, %d instances, %.1f MB in %.1fs", name,
                 index, summary["documents"], summary["corpus_tokens"], summary["instances"],
                 summary["text_bytes"] / 1e6, summary["seconds"])


def _run_share(folder: epath.Path, splits: Sequence[_Split], job: ShardJob, *, shard: int,
               num_shards: int, workers: int) -> dict[str, Any]:
    """Prepares this process's share of the parts, with a progress bar; returns its totals."""
    from tqdm import tqdm

    mine = _tasks(splits)[shard::num_shards]
    by_name = {split.name: split for split in splits}
    total_bytes = sum(by_name[name].parts[index].text_bytes for name, index in mine)
    totals = {"parts": 0, "documents": 0, "corpus_tokens": 0, "instances": 0, "text_bytes": 0}
    started = time.perf_counter()
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"prepare {shard}/{num_shards}",
              disable=not mine, dynamic_ncols=True) as progress, \
            worker_map(min(workers, len(mine)), _set_job, (job, folder, by_name)) as map_:
        for name, index, summary in map_(_prepare_part, mine):
            _log_part(name, index, summary)
            totals["parts"] += 1
            for key in ("documents", "corpus_tokens", "instances", "text_bytes"):
                totals[key] += summary[key]
            progress.update(summary["text_bytes"])
            progress.set_postfix(docs=totals["documents"], tokens=totals["corpus_tokens"])
    seconds = time.perf_counter() - started
    totals.update(seconds=round(seconds, 2),
                  mb_per_second=round(totals["text_bytes"] / 1e6 / max(seconds, 1e-9), 2))
    logging.info("share %d of %d: %s", shard, num_shards, json.dumps(totals))
    return totals


def _split_summary(split: _Split, parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(int(p[key]) for p in parts)

    summary: dict[str, Any] = {key: total(key) for key in (
        "files", "documents", "sentences", "characters", "skipped_one_sentence_documents",
        "long_sentences_cut", "text_bytes", "corpus_tokens", "instances", "instance_tokens")}
    summary["skipped_empty_files"] = [f for p in parts for f in p["skipped_empty_files"]]
    summary["parts"] = len(parts)
    summary["mean_instance_length"] = summary["instance_tokens"] / summary["instances"]
    summary["is_next_fraction"] = total("is_next") / summary["instances"]
    return summary


def _finish(folder: epath.Path, splits: Sequence[_Split], settings: DataSettings,
            max_seq_len: int) -> None:
    """Writes the folder's summary.json from its shards' summaries (all must exist)."""
    summary: dict[str, Any] = {}
    for split in splits:
        parts = [json.loads((folder / split.name / shard_name(i) / SUMMARY_FILE).read_text())
                 for i in range(len(split.parts))]
        summary[split.name] = _split_summary(split, parts)
        tokens, rows = summary[split.name]["instance_tokens"], sum(p["rows"] for p in parts)
        summary[split.name]["padding_fraction"] = 1.0 - tokens / (summary[split.name][
            "instances"] * max_seq_len)
        if split.name == "train" and settings.packing:
            summary["train"].update(
                packed_rows=rows, packed_padding_fraction=1.0 - tokens / (rows * max_seq_len),
                mean_instances_per_row=summary["train"]["instances"] / rows)
    summary["seconds_to_prepare"] = round(sum(
        json.loads(p.read_text())["seconds"] for p in folder.glob(f"*/part-*/{SUMMARY_FILE}")), 2)
    files.write_atomically(folder / "summary.json", json.dumps(summary, indent=2) + "\n")


def _missing(folder: epath.Path, splits: Sequence[_Split]) -> list[str]:
    """The shards not finished yet, seen in one listing (a remote cache is polled with it)."""
    found = files.glob(f"{files.fresh(folder)}/*/part-*/{SUMMARY_FILE}")
    finished = {f"{summary.parent.parent.name}/{summary.parent.name}" for summary in found}
    return [task for task in (f"{name}/{shard_name(index)}" for name, index in _tasks(splits))
            if task not in finished]


def _this_process() -> tuple[int, int]:
    """(index, count) of this process in a multi-process JAX run, read without starting JAX's
    runtime (which would make forking preparation workers unsafe); (0, 1) otherwise."""
    distributed = sys.modules.get("jax._src.distributed")
    state = getattr(distributed, "global_state", None)
    count = getattr(state, "num_processes", None) or 1
    return (int(getattr(state, "process_id", 0) or 0), int(count)) if count > 1 else (0, 1)


def prepare_pretraining_data(
    config_data: Any,
    max_seq_len: int,
    max_predictions_per_seq: int,
    seed: int,
    cache_dir: str | Path | epath.Path,
    tokenizer: Tokenizer,
    *,
    shard: int | None = None,
    num_shards: int | None = None,
    wait: bool = True,
) -> PreparedData | dict[str, Any]:
    """Builds (or reloads) the stored examples for `config_data` and returns them mapped.

    This process prepares parts shard, shard + num_shards, ... (default: its index and the
    process count of a multi-process JAX run, else all parts). With `wait` it then waits for
    the other processes' parts and returns the examples; without, it returns its share's totals
    (`python -m bert.prepare`), finishing the folder if every part exists by then.
    """
    settings = DataSettings.from_config(config_data,
                                        max_predictions_per_seq=max_predictions_per_seq)
    max_seq_len = _as_int(max_seq_len, "config.max_seq_len", minimum=5)
    seed = _as_int(seed, "config.seed", minimum=0)
    if shard is None or num_shards is None:
        shard, num_shards = _this_process()
    if not 0 <= shard < num_shards:
        raise DataError(f"--shard={shard} is outside [0, --num_shards={num_shards})")
    vocab = MaskVocabulary.from_tokenizer(tokenizer)
    cache_dir = files.path(cache_dir)

    material: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "train_files": file_fingerprints(settings.train_files, key="config.data.train_files"),
        "eval_files": (file_fingerprints(settings.eval_files, key="config.data.eval_files")
                       if settings.eval_files else []),
        "doc_separator": settings.doc_separator,
        "corpus_format": settings.corpus_format,
        "text_field": settings.text_field if settings.corpus_format == "jsonl" else None,
        "part_bytes": settings.part_bytes,
        "tokenizer": tokenizer.fingerprint,
        "max_seq_len": max_seq_len,
        "dupe_factor": settings.dupe_factor,
        "eval_dupe_factor": settings.eval_dupe_factor,
        "short_seq_prob": settings.short_seq_prob,
        "seed": seed,
        "static_masks": (dataclasses.asdict(settings.mask) if settings.masking == "static"
                         else None),
        "max_instances_per_pack": settings.max_instances_per_pack if settings.packing else None,
    }
    folder = cache_dir / f"examples-{_digest(material)}"
    share: dict[str, Any] = {}
    if not files.fresh(folder / "summary.json").is_file():
        splits = _splits(settings)
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in (("key.json", material),
                           ("plan.json", {s.name: [p.to_dict() for p in s.parts]
                                          for s in splits})):
            if not (folder / name).is_file():
                files.write_atomically(folder / name, json.dumps(text, indent=2) + "\n")
        job = ShardJob(tokenizer=tokenizer, corpus_format=settings.corpus_format,
                       doc_separator=settings.doc_separator, text_field=settings.text_field,
                       max_seq_len=max_seq_len, short_seq_prob=settings.short_seq_prob,
                       seed=seed, mask=settings.mask if settings.masking == "static" else None,
                       vocab=vocab, packing=settings.packing,
                       max_instances_per_pack=settings.max_instances_per_pack)
        share = _run_share(folder, splits, job, shard=shard, num_shards=num_shards,
                           workers=resolve_workers(settings.prep_workers))
        missing = _missing(folder, splits)
        waited = 0.0
        while missing and wait:
            if waited % 60 < _WAIT_SECONDS:
                logging.info("waiting for %d parts that other processes prepare (e.g. %s)",
                             len(missing), missing[0])
            time.sleep(_WAIT_SECONDS)
            waited += _WAIT_SECONDS
            missing = _missing(folder, splits)
        if missing:
            return share
        if not (folder / "summary.json").is_file():
            _finish(folder, splits, settings, max_seq_len)
    if not wait:
        return share
    local = settings.local_copy(folder, "summary.json")
    summary = json.loads((local / "summary.json").read_text())
    train = SplitArrays.load(local / "train")
    if settings.masking == "static" and not train.has_static_masks:
        raise DataError(f"{folder}: built for dynamic masking but config.data.masking is "
                        "'static'; delete the folder to rebuild it")
    eval_split = SplitArrays.load(local / "eval") if (local / "eval").is_dir() else None
    return PreparedData(directory=folder, train=train, eval=eval_split, max_seq_len=max_seq_len,
                        masking=settings.masking, mask=settings.mask, vocab=vocab,
                        pad_id=tokenizer.pad_id, summary=summary)


def data_tokenizer(config: Any, workdir: str | Path) -> tuple[Tokenizer, epath.Path]:
    """The tokenizer of `config` (loaded, or trained and cached) and the cache folder."""
    settings = DataSettings.from_config(
        config.data, max_predictions_per_seq=config.max_predictions_per_seq)
    cache_dir = files.path(settings.cache_dir or files.path(workdir) / "data")
    # 0: the embedding table takes the tokenizer's vocabulary, whatever its size.
    vocab_size = _as_int(config.model.vocab_size, "config.model.vocab_size", minimum=0)
    if settings.tokenizer:
        try:
            with files.local_copy(settings.tokenizer) as local:
                tokenizer = load_tokenizer(local)
        except (TokenizerError, FileNotFoundError) as err:
            raise DataError(f"config.data.tokenizer: {err}") from None
        if vocab_size and tokenizer.vocab_size > vocab_size:
            raise DataError(f"config.model.vocab_size={vocab_size} is smaller than the "
                            f"vocabulary of config.data.tokenizer={settings.tokenizer} "
                            f"({tokenizer.vocab_size} tokens)")
    else:
        trained = settings.tokenizer_vocab_size or vocab_size
        if trained < 6:
            raise DataError(f"config.data.tokenizer_vocab_size: the tokenizer trained here needs "
                            f"6 or more tokens (or config.model.vocab_size), got {trained}")
        tokenizer = trained_tokenizer(settings, vocab_size=trained, cache_dir=cache_dir)
    return tokenizer, cache_dir


def build(config: Any, workdir: str | Path) -> tuple[Tokenizer, PreparedData]:
    """The training code's one call: tokenizer and prepared examples for a full config.

    Reads config.data, config.seed, config.max_seq_len, config.max_predictions_per_seq and
    config.model.vocab_size. The cache lives in config.data.cache_dir, or `<workdir>/data`
    (either may be a URL; the module docstring says how a remote cache is read).
    In a multi-process run each process prepares only its share of missing parts, then waits
    for the others' (the cache must be on storage every process sees).
    """
    tokenizer, cache_dir = data_tokenizer(config, workdir)
    prepared = prepare_pretraining_data(config.data, config.max_seq_len,
                                        config.max_predictions_per_seq, config.seed,
                                        cache_dir, tokenizer)
    assert isinstance(prepared, PreparedData)
    return tokenizer, prepared
