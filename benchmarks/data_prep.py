"""Input benchmarks: data preparation against the original recipe, packing, the input pipeline.

    python -m benchmarks.data_prep --config experiments/pretrain/tiny.py --output results/data_prep.json
        [--sections prep,packing,pipeline,scale] [--repeats 3] [--steps 100] [--sizes_mb 256,1024]
        [--config.key=value ...]

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

The reference (benchmarks/reference_prep.py) is a port of Google's create_pretraining_data.py:
pure Python, one process, string tokens, per-instance loops, on the same files, sentences and
SentencePiece model as ours, so both sides do the same work; only how differs.

Our side is `bert.data.prepare_pretraining_data` with static masking (the reference stores its
masks too), into a fresh cache folder each repeat. Tokenizer *training* happens once, before
either clock starts; tokenizing the corpus is timed on both sides.
"""
from __future__ import annotations

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
from ml_collections import ConfigDict

from benchmarks.measure import time_calls
from benchmarks.reference_prep import (reference_examples, sentencepiece_processor,
                                       tokenized_documents)
from bert import cli
from bert.config import pretraining_config, validate
from bert.data.corpus import expand_files
from bert.data.instances import create_instances
from bert.data.masking import MaskVocabulary
from bert.data.packing import pack_indices
from bert.data.parallel import resolve_workers
from bert.data.records import (DataSettings, prepare_pretraining_data,
                               trained_tokenizer)
from bert.data.shards import static_masks
from bert.data.tokenized import tokenize_files
from bert.tokenizer import SentencePieceTokenizer, Tokenizer

COMMAND = "benchmarks.data_prep"


def _best(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time of `repeats` runs (the machine may be shared: the best is the least
    disturbed) and the last result."""
    timing = time_calls(run, repeats)
    return min(timing.seconds), timing.result


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
    sp = sentencepiece_processor(tokenizer)
    recipe = dict(max_seq_len=config.max_seq_len, max_predictions=config.max_predictions_per_seq,
                  mask_prob=settings.mask.mask_prob, dupe_factor=settings.dupe_factor,
                  short_seq_prob=settings.short_seq_prob, seed=config.seed,
                  whole_word=settings.mask.whole_word_mask)

    read_s, documents = _best(repeats, lambda: tokenized_documents(files, sp))
    examples_s, reference = _best(repeats, lambda: reference_examples(documents, sp, **recipe))
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
    end_to_end = {workers: _best(repeats, ours_end_to_end(workers)) for workers in (1, cores)}
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

    recipe_ours = {workers: _best(repeats, ours_recipe(workers)) for workers in (1, cores)}
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
        from bert.optim import OptimizerSettings, make_optimizer

        _, prepared = data.build(config, workdir)
        self.batches = data.train_batches(prepared, batch_size_per_host=config.batch_size,
                                          seed=config.seed, num_workers=config.data.num_workers)
        self.sample = [next(self.batches) for _ in range(steps)]  # starts the reader threads
        self.real_tokens = statistics.mean(float(b["input_mask"].sum()) for b in self.sample)
        task = PretrainingTask(BertForPreTraining(model_config(config)), config.data.nsp_weight)
        optimizer = make_optimizer(OptimizerSettings.from_config(config))
        self.runner = partitioning.build_runner(config, task, optimizer)
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
        seconds = sum(time_calls(run, steps).seconds)
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


def define_flags() -> None:
    """Only when run as a command: tests import this module alongside other command-line
    modules, and absl flags may be defined only once per process."""
    cli.define_config_flags()
    flags.DEFINE_string("output", None, "JSON file for the results")
    flags.DEFINE_list("sections", ["prep", "packing", "pipeline"],
                      "which measurements: prep, packing, pipeline, scale")
    flags.DEFINE_list("sizes_mb", ["256", "1024"], "corpus sizes of the scale section, in MiB")
    flags.DEFINE_integer("repeats", 3, "timed repeats of each preparation; best reported")
    flags.DEFINE_integer("steps", 100, "train steps and batches timed per block")
    flags.DEFINE_string("workdir", "runs/bench_data",
                        "tokenizer and prepared-data cache (tokenizer training is untimed)")


def main(argv: list[str]) -> None:
    # A pretraining config, checked as bert.pretrain checks it: the pipeline section trains.
    config = cli.config_from_flags(COMMAND, argv, validate, pretraining_config)
    options = flags.FLAGS
    workdir = Path(options.workdir)
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
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
