"""Input benchmarks: data preparation against the original recipe, packing, the input pipeline.

    python -m bert.bench_data --config experiments/pretrain/tiny.py --output results/data_prep.json
        [--sections prep,packing,pipeline,scale] [--repeats 3] [--steps 100] [--sizes_mb 256,1024]

prep      instances/s of our preparation (all cores, and one process) against a single-process,
          pure-Python implementation of the original recipe, end to end (read, split,
          tokenize, pair, mask, pad) and for the recipe proper (pair + mask + pad, from the
          same tokenized documents).
packing   padding fraction of the config's instances unpacked and packed, at the config's
          short_seq_prob and at 0.5.
pipeline  batches/s the input pipeline delivers alone; train steps/s fed by it against steps/s
          on one batch held in memory, the time the loop waits for input, and real (non-pad)
          tokens/s, unpacked and packed.
scale     (not run by default: minutes) peak resident memory and MB of text per second of
          `python -m bert.prepare` on corpora of --sizes_mb, built from the shipped addresses
          in the paper's format, each copy with its sentences in another order: one process
          for every size, and all cores for the smallest.

The reference (`reference_prepare`) follows the structure of Google's create_pretraining_data.py:
pure Python, one process, string tokens, per-instance loops for NSP pairing, truncation and
masking, then per-instance conversion to padded id lists. It reads the same files, splits them
into sentences with the same splitter (the original expects one sentence per line) and tokenizes
with the same SentencePiece model, so both sides do the same work; only how differs. It lives
here, not in bert/data, because nothing but this benchmark runs it.

Our side is `bert.data.prepare_pretraining_data` with static masking (the reference stores its
masks too), into a fresh cache folder each repeat. Tokenizer *training* happens once, before
either clock starts; tokenizing the corpus is timed on both sides.
"""
from __future__ import annotations

import collections
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import ConfigDict, config_flags

from bert.data.corpus import expand_files, read_text, split_sentences
from bert.data.instances import create_instances
from bert.data.masking import MaskVocabulary
from bert.data.packing import pack_indices
from bert.data.parallel import resolve_workers
from bert.data.records import (DataSettings, prepare_pretraining_data,
                               trained_tokenizer)
from bert.data.shards import static_masks
from bert.data.tokenized import tokenize_files
from bert.tokenizer import SentencePieceTokenizer, Tokenizer

# --------------------------------------------------------------------------------------------
# The reference: the original recipe, one process, pure Python.

_CLS, _SEP, _MASK = "[CLS]", "[SEP]", "[MASK]"


def _reference_documents(files: Sequence[Path], sp: Any) -> list[list[list[str]]]:
    """One document per file, one sentence per entry, each a list of string pieces."""
    documents = []
    for path in files:
        document = []
        for line in read_text(path).split("\n"):
            line = line.strip()
            if line:
                document.extend(sp.encode(s, out_type=str) for s in split_sentences(line))
        documents.append([s for s in document if s])
    return [d for d in documents if d]


def _truncate(tokens_a: list[str], tokens_b: list[str], max_tokens: int,
              rng: random.Random) -> None:
    while len(tokens_a) + len(tokens_b) > max_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


_MaskedLm = collections.namedtuple("_MaskedLm", ["index", "label"])


def _reference_masks(tokens: list[str], mask_prob: float, max_predictions: int,
                     vocab_words: list[str], rng: random.Random, whole_word: bool
                     ) -> tuple[list[str], list[int], list[str]]:
    """The original's masking loop: shuffled candidate words, 80/10/10, sorted by position."""
    candidates: list[list[int]] = []
    for index, token in enumerate(tokens):
        if token == _CLS or token == _SEP:
            continue
        if whole_word and candidates and not token.startswith("\u2581"):
            candidates[-1].append(index)  # a continuation piece joins the word before it
        else:
            candidates.append([index])
    rng.shuffle(candidates)
    output = list(tokens)
    count = min(max_predictions, max(1, int(round(len(tokens) * mask_prob))))
    masked: list[_MaskedLm] = []
    covered: set[int] = set()
    for word in candidates:
        if len(masked) >= count:
            break
        if len(masked) + len(word) > count or any(index in covered for index in word):
            continue
        for index in word:
            covered.add(index)
            if rng.random() < 0.8:
                shown = _MASK
            elif rng.random() < 0.5:
                shown = tokens[index]
            else:
                shown = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output[index] = shown
            masked.append(_MaskedLm(index, tokens[index]))
    masked.sort(key=lambda m: m.index)
    return output, [m.index for m in masked], [m.label for m in masked]


def _reference_instances(documents: list[list[list[str]]], index: int, *, max_seq_len: int,
                         short_seq_prob: float, mask_prob: float, max_predictions: int,
                         vocab_words: list[str], rng: random.Random,
                         whole_word: bool) -> list[tuple]:
    document = documents[index]
    max_tokens = max_seq_len - 3
    target = max_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_tokens)
    instances = []
    chunk: list[list[str]] = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if chunk:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for segment in chunk[:a_end] for t in segment]
                tokens_b: list[str] = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    for _ in range(10):
                        other = rng.randint(0, len(documents) - 1)
                        if other != index:
                            break
                    other_document = documents[other]
                    for segment in other_document[rng.randint(0, len(other_document) - 1):]:
                        tokens_b.extend(segment)
                        if len(tokens_b) >= target - len(tokens_a):
                            break
                    i -= len(chunk) - a_end
                else:
                    is_random_next = False
                    tokens_b = [t for segment in chunk[a_end:] for t in segment]
                _truncate(tokens_a, tokens_b, max_tokens, rng)
                if tokens_a and tokens_b:
                    tokens = [_CLS, *tokens_a, _SEP, *tokens_b, _SEP]
                    segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                    tokens, positions, labels = _reference_masks(
                        tokens, mask_prob, max_predictions, vocab_words, rng, whole_word)
                    instances.append((tokens, segment_ids, is_random_next, positions, labels))
            chunk = []
            length = 0
        i += 1
    return instances


def _reference_features(instance: tuple, piece_to_id: dict[str, int], max_seq_len: int,
                        max_predictions: int) -> tuple[list, ...]:
    tokens, segment_ids, is_random_next, positions, labels = instance
    input_ids = [piece_to_id[t] for t in tokens]
    input_mask = [1] * len(input_ids)
    segment_ids = list(segment_ids)
    while len(input_ids) < max_seq_len:
        input_ids.append(0)
        input_mask.append(0)
        segment_ids.append(0)
    label_ids = [piece_to_id[t] for t in labels]
    weights = [1.0] * len(label_ids)
    positions = list(positions)
    while len(positions) < max_predictions:
        positions.append(0)
        label_ids.append(0)
        weights.append(0.0)
    return (input_ids, input_mask, segment_ids, positions, label_ids, weights,
            1 if is_random_next else 0)


def reference_examples(documents: list[list[list[str]]], sp: Any, *, max_seq_len: int,
                       max_predictions: int, mask_prob: float, dupe_factor: int,
                       short_seq_prob: float, seed: int,
                       whole_word: bool = False) -> dict[str, np.ndarray]:
    """The recipe proper on tokenized documents: pair, mask, pad; arrays per feature."""
    rng = random.Random(seed)
    documents = list(documents)
    rng.shuffle(documents)
    vocab_words = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    piece_to_id = {piece: i for i, piece in enumerate(vocab_words)}
    instances = []
    for _ in range(dupe_factor):
        for index in range(len(documents)):
            instances.extend(_reference_instances(
                documents, index, max_seq_len=max_seq_len, short_seq_prob=short_seq_prob,
                mask_prob=mask_prob, max_predictions=max_predictions, vocab_words=vocab_words,
                rng=rng, whole_word=whole_word))
    rng.shuffle(instances)
    features = [_reference_features(x, piece_to_id, max_seq_len, max_predictions)
                for x in instances]
    names = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
             "masked_lm_weights", "next_sentence_labels")
    return {name: np.array([f[k] for f in features]) for k, name in enumerate(names)}


def reference_prepare(files: Sequence[Path], sp: Any, **settings: Any) -> dict[str, np.ndarray]:
    """The original recipe end to end: read, split, tokenize, then `reference_examples`."""
    return reference_examples(_reference_documents(files, sp), sp, **settings)


# --------------------------------------------------------------------------------------------
# Measurements


def _timed(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time of `repeats` runs (the machine may be shared: the best is the least
    disturbed) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def _rate(count: int, seconds: float) -> dict[str, float]:
    return {"seconds": round(seconds, 4), "instances": count,
            "instances_per_sec": round(count / seconds, 1)}


def _speedup(ours: tuple[float, int], reference: tuple[float, int]) -> float:
    """Ratio of instances/s; each argument is (seconds, instances)."""
    return round((ours[1] / ours[0]) / (reference[1] / reference[0]), 2)


def prep_benchmark(config: ConfigDict, tokenizer: Tokenizer, *, repeats: int,
                   scratch: Path) -> dict[str, Any]:
    """instances/s: reference vs ours, end to end and for the recipe proper."""
    if not isinstance(tokenizer, SentencePieceTokenizer):
        raise ValueError("the reference tokenizes with SentencePiece; leave config.data.tokenizer "
                         "empty or name a SentencePiece model")
    settings = DataSettings.from_config(config.data,
                                        max_predictions_per_seq=config.max_predictions_per_seq)
    files = expand_files(settings.train_files, key="config.data.train_files")
    sp = tokenizer._sp
    recipe = dict(max_seq_len=config.max_seq_len, max_predictions=config.max_predictions_per_seq,
                  mask_prob=settings.mask.mask_prob, dupe_factor=settings.dupe_factor,
                  short_seq_prob=settings.short_seq_prob, seed=config.seed,
                  whole_word=settings.mask.whole_word_mask)

    read_s, documents = _timed(repeats, lambda: _reference_documents(files, sp))
    examples_s, reference = _timed(repeats, lambda: reference_examples(documents, sp, **recipe))
    reference_count = len(reference["input_ids"])

    data = ConfigDict(config.data.to_dict())
    data.masking, data.eval_files = "static", ""  # the reference stores masks; train split only

    def ours_end_to_end(workers: int) -> Callable[[], int]:
        data.prep_workers = workers

        def run() -> int:
            with tempfile.TemporaryDirectory(dir=scratch) as cache:
                prepared = prepare_pretraining_data(data, config.max_seq_len,
                                                    config.max_predictions_per_seq, config.seed,
                                                    cache, tokenizer)
                return prepared.summary["train"]["instances"]
        return run

    cores = resolve_workers(0)
    end_to_end = {workers: _timed(repeats, ours_end_to_end(workers)) for workers in (1, cores)}
    corpus, _ = tokenize_files(settings.train_files, tokenizer=tokenizer,
                               doc_separator=settings.doc_separator,
                               key="config.data.train_files", num_workers=cores)
    vocab = MaskVocabulary.from_tokenizer(tokenizer)

    def ours_recipe(workers: int) -> Callable[[], int]:
        def run() -> int:
            instances = create_instances(
                corpus, max_seq_len=config.max_seq_len, short_seq_prob=settings.short_seq_prob,
                dupe_factor=settings.dupe_factor, seed=config.seed, cls_id=tokenizer.cls_id,
                sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id, num_workers=workers)
            static_masks(instances, settings.mask, vocab, seed=config.seed, stream=1)
            return len(instances)
        return run

    recipe_ours = {workers: _timed(repeats, ours_recipe(workers)) for workers in (1, cores)}
    reference_total = read_s + examples_s
    return {
        "settings": {"max_seq_len": config.max_seq_len, "dupe_factor": settings.dupe_factor,
                     "short_seq_prob": settings.short_seq_prob, "files": len(files),
                     "corpus_tokens": int(corpus.tokens.size), "cores": cores,
                     "repeats": repeats},
        "end_to_end": {
            "reference": {**_rate(reference_count, reference_total),
                          "read_tokenize_seconds": round(read_s, 4),
                          "pair_mask_pad_seconds": round(examples_s, 4)},
            **{f"ours_{w}_workers": {**_rate(n, t), "speedup": _speedup(
                (t, n), (reference_total, reference_count))} for w, (t, n) in end_to_end.items()},
        },
        "recipe": {
            "reference": _rate(reference_count, examples_s),
            **{f"ours_{w}_workers": {**_rate(n, t), "speedup": _speedup(
                (t, n), (examples_s, reference_count))} for w, (t, n) in recipe_ours.items()},
        },
    }


def packing_benchmark(config: ConfigDict, tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """Padding fraction unpacked and packed, at the config's short_seq_prob and at 0.5."""
    settings = DataSettings.from_config(config.data,
                                        max_predictions_per_seq=config.max_predictions_per_seq)
    corpus, _ = tokenize_files(settings.train_files, tokenizer=tokenizer,
                               doc_separator=settings.doc_separator,
                               key="config.data.train_files",
                               num_workers=resolve_workers(settings.prep_workers))
    rows = []
    for short_seq_prob in sorted({settings.short_seq_prob, 0.5}):
        instances = create_instances(
            corpus, max_seq_len=config.max_seq_len, short_seq_prob=short_seq_prob,
            dupe_factor=settings.dupe_factor, seed=config.seed, cls_id=tokenizer.cls_id,
            sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id,
            num_workers=resolve_workers(settings.prep_workers))
        started = time.perf_counter()
        packs = pack_indices(instances.lengths, max_seq_len=config.max_seq_len,
                             max_instances=settings.max_instances_per_pack, seed=config.seed)
        pack_seconds = time.perf_counter() - started
        tokens = int(instances.lengths.sum())
        rows.append({
            "max_seq_len": config.max_seq_len, "short_seq_prob": short_seq_prob,
            "max_instances_per_pack": settings.max_instances_per_pack,
            "instances": len(instances), "mean_length": round(tokens / len(instances), 1),
            "padding_fraction": round(1 - tokens / (len(instances) * config.max_seq_len), 4),
            "packed_rows": len(packs),
            "packed_padding_fraction": round(1 - tokens / (len(packs) * config.max_seq_len), 4),
            "rows_saved": round(1 - len(packs) / len(instances), 4),
            "pack_seconds": round(pack_seconds, 3),
        })
    return rows


class _Feed:
    """One input setting (short_seq_prob, packing): its pipeline, a runner, timings so far."""

    def __init__(self, config: ConfigDict, workdir: Path, steps: int) -> None:
        import jax

        from bert import data, partitioning
        from bert.config import model_config
        from bert.model import BertForPreTraining
        from bert.train import PretrainingTask
        from bert.optim import make_optimizer

        _, prepared = data.build(config, workdir)
        self.batches = data.train_batches(prepared, batch_size_per_host=config.batch_size,
                                          seed=config.seed, num_workers=config.data.num_workers)
        self.sample = [next(self.batches) for _ in range(steps)]  # starts the reader threads
        self.real_tokens = statistics.mean(float(b["input_mask"].sum()) for b in self.sample)
        task = PretrainingTask(BertForPreTraining(model_config(config)), config.data.nsp_weight)
        self.runner = partitioning.build_runner(config, task, make_optimizer(config))
        self.state = self.runner.init_state(jax.random.key(0))
        self.rng = jax.random.key(1)
        self.rates: dict[str, float] = {}
        self.waited = self.fed_seconds = 0.0
        self.step(self.sample[0])  # compile

    def step(self, batch: dict[str, np.ndarray]) -> None:
        import jax

        self.state, sums = self.runner.train_step(self.state, batch, self.rng)
        jax.block_until_ready(sums)

    def fed_step(self) -> None:
        asked = time.perf_counter()
        batch = next(self.batches)
        self.waited += time.perf_counter() - asked
        self.step(batch)

    def time_block(self, name: str, steps: int, run: Callable[[], Any]) -> None:
        started = time.perf_counter()
        for _ in range(steps):
            run()
        seconds = time.perf_counter() - started
        if name == "fed":
            self.fed_seconds += seconds
        self.rates[name] = max(self.rates.get(name, 0.0), steps / seconds)


def pipeline_benchmark(config: ConfigDict, workdir: Path, *, steps: int,
                       blocks: int = 3) -> list[dict[str, Any]]:
    """Input pipeline against the train step, unpacked and packed, at short_seq_prob 0.5 too.

    The two packing settings are timed in alternating blocks of `steps` steps and each keeps
    its best block, so that load from other processes on a shared machine hits both alike.
    """
    results = []
    for short_seq_prob in sorted({float(config.data.short_seq_prob), 0.5}):
        feeds = {}
        for packing in (False, True):
            run = ConfigDict(config.to_dict())
            run.data.short_seq_prob, run.data.packing = short_seq_prob, packing
            feeds[packing] = _Feed(run, workdir, steps)
        for _ in range(blocks):
            for feed in feeds.values():
                feed.time_block("pipeline", steps, lambda: next(feed.batches))
                feed.time_block("memory", steps, lambda: feed.step(feed.sample[0]))
                feed.time_block("fed", steps, feed.fed_step)
        for packing, feed in feeds.items():
            feed.batches.close()
            results.append({
                "short_seq_prob": short_seq_prob, "packing": packing,
                "batch_size": config.batch_size, "max_seq_len": config.max_seq_len,
                "pipeline_batches_per_sec": round(feed.rates["pipeline"], 1),
                "steps_per_sec_batch_in_memory": round(feed.rates["memory"], 2),
                "steps_per_sec_fed_by_pipeline": round(feed.rates["fed"], 2),
                "input_wait_fraction": round(feed.waited / feed.fed_seconds, 4),
                "real_tokens_per_batch": round(feed.real_tokens, 1),
                "real_tokens_per_sec": round(feed.real_tokens * feed.rates["fed"], 1),
            })
    return results


def scale_corpus(directory: Path, size_bytes: int, *, file_bytes: int = 64 << 20) -> Path:
    """A corpus of about `size_bytes` in the paper's format (one sentence per line, a blank line
    between documents) from the shipped train addresses; copy k of an address has its sentences
    in the k-th random order, so no two documents are the same. Reused if already built."""
    directory.mkdir(parents=True, exist_ok=True)
    done = directory / "complete"
    if done.is_file():
        return directory
    from bert.data.corpus import read_documents

    documents, _ = read_documents("data/sotu/train/*.txt", key="shipped corpus")
    rng = random.Random(0)
    written, index = 0, 0
    while written < size_bytes:
        with open(directory / f"part-{written // file_bytes:05d}.txt", "w") as f:
            file_end = min(size_bytes, written + file_bytes)
            while written < file_end:
                document = list(documents[index % len(documents)])
                rng.shuffle(document)
                written += f.write("\n".join(document) + "\n\n")
                index += 1
    done.write_text(f"{written}\n")
    return directory


def _prepare_process(config_file: str, overrides: list[str], workdir: Path) -> dict[str, Any]:
    """Runs `python -m bert.prepare` alone: wall and CPU seconds (its worker processes
    included), its peak RSS, and its share summary."""
    import os
    import subprocess
    import sys

    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "bert.prepare", f"--config={config_file}", f"--workdir={workdir}",
         *overrides], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status:
        raise RuntimeError(f"bert.prepare {overrides} failed with status {status}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2), "share": json.loads(output)}


def scale_benchmark(config: ConfigDict, tokenizer_dir: Path, *, sizes_mb: Sequence[int],
                    scratch: Path) -> list[dict[str, Any]]:
    """Peak RSS and MB/s of preparing each corpus size (see the module docstring)."""
    config_file = scratch / "scale_config.py"  # the config as given, overrides included
    config_file.write_text("import json\nfrom ml_collections import ConfigDict\n\n\n"
                           f"def get_config():\n    return ConfigDict(json.loads({config.to_json()!r}))\n")
    rows = []
    cores = resolve_workers(0)
    for size in sorted(sizes_mb):
        corpus = scale_corpus(scratch / f"corpus-{size}mb", size << 20)
        text_bytes = sum(p.stat().st_size for p in corpus.glob("*.txt"))
        for workers in ((1, cores) if size == min(sizes_mb) and cores > 1 else (1,)):
            overrides = [f"--config.data.train_files={corpus}/*.txt", "--config.data.eval_files=",
                         "--config.data.corpus_format=sentences",
                         "--config.data.doc_separator=blank_line",
                         f"--config.data.tokenizer={tokenizer_dir}",
                         f"--config.data.prep_workers={workers}"]
            with tempfile.TemporaryDirectory(dir=scratch) as workdir:
                run = _prepare_process(str(config_file), overrides, Path(workdir))
            mb = text_bytes / 1e6
            rows.append({"corpus_mb": round(mb, 1), "processes": workers,
                         "seconds": run["seconds"], "peak_rss_mib": run["peak_rss_mib"],
                         "mb_per_second": round(mb / run["seconds"], 2),
                         "mb_per_second_per_core": round(mb / run["seconds"] / workers, 2),
                         # Per CPU-second: what a core does when it is not shared (the wall
                         # rates above depend on what else the machine runs).
                         "cpu_seconds": run["cpu_seconds"],
                         "mb_per_cpu_second": round(mb / run["cpu_seconds"], 2),
                         "documents": run["share"]["documents"],
                         "tokens": run["share"]["corpus_tokens"],
                         "instances": run["share"]["instances"], "parts": run["share"]["parts"],
                         "max_seq_len": config.max_seq_len,
                         "dupe_factor": config.data.dupe_factor,
                         "masking": config.data.masking})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str]) -> None:
    del argv
    options = flags.FLAGS
    config, workdir = options.config, Path(options.workdir)
    cache = workdir / "data"
    settings = DataSettings.from_config(config.data,
                                        max_predictions_per_seq=config.max_predictions_per_seq)
    tokenizer = trained_tokenizer(settings, vocab_size=config.model.vocab_size, cache_dir=cache)
    results: dict[str, Any] = {}
    if "scale" in options.sections:
        tokenizer_dir = cache / "scale-tokenizer"
        tokenizer.save(tokenizer_dir)
        results["scale"] = scale_benchmark(config, tokenizer_dir,
                                           sizes_mb=[int(s) for s in options.sizes_mb],
                                           scratch=workdir)
    if "prep" in options.sections:
        results["prep"] = prep_benchmark(config, tokenizer, repeats=options.repeats,
                                         scratch=cache)
    if "packing" in options.sections:
        results["packing"] = packing_benchmark(config, tokenizer)
    if "pipeline" in options.sections:
        results["pipeline"] = pipeline_benchmark(config, workdir, steps=options.steps)
    text = json.dumps(results, indent=2)
    print(text)
    if options.output:
        Path(options.output).parent.mkdir(parents=True, exist_ok=True)
        Path(options.output).write_text(text + "\n")


if __name__ == "__main__":
    # Defined here, not at import: tests import the reference from this module alongside other
    # command-line modules, and absl flags may be defined only once per process.
    config_flags.DEFINE_config_file("config", None, "pretraining config file")
    flags.DEFINE_string("output", None, "JSON file for the results")
    flags.DEFINE_list("sections", ["prep", "packing", "pipeline"],
                      "which measurements: prep, packing, pipeline, scale")
    flags.DEFINE_list("sizes_mb", ["256", "1024"], "corpus sizes of the scale section, in MiB")
    flags.DEFINE_integer("repeats", 3, "timed repeats of each preparation; best reported")
    flags.DEFINE_integer("steps", 100, "train steps and batches timed per block")
    flags.DEFINE_string("workdir", "runs/bench_data",
                        "tokenizer and prepared-data cache (tokenizer training is untimed)")
    flags.mark_flags_as_required(["config"])
    app.run(main)
