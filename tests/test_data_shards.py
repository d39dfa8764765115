"""Sharded preparation: the same examples however the parts are shared out, resumable after a
crash, disjoint shares per process, and memory that does not grow with the corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bert.data.records as records
import bert.data.shards as shards
from bert.data import build
from bert.data.corpus import CorpusSummary, piece_documents, read_documents
from bert.data.plan import plan_parts
from bert.data.records import prepare_pretraining_data
from bert.data.shards import GrowingArray, ShardedRows
from tests.test_data_support import (REPO_ROOT, SOTU_EVAL, SOTU_TRAIN, pretrain_config,
                                     small_tokenizer_dir)

ARRAYS = ("input_ids", "segment_ids", "lengths", "next_sentence_labels", "masked_lm_positions",
          "masked_lm_ids", "masked_lm_inputs", "masked_lm_weights", "instance_lengths")


def paper_format_corpus(directory: Path, files: int = 2, sentences_per_document: int = 8) -> str:
    """The shipped eval addresses in the paper's format: one sentence per line, documents of a
    few sentences, blank lines between them."""
    directory.mkdir(parents=True, exist_ok=True)
    sentences = [s for d in read_documents(str(SOTU_EVAL / "*.txt"))[0] for s in d]
    documents = ["\n".join(sentences[i:i + sentences_per_document])
                 for i in range(0, len(sentences), sentences_per_document)]
    per_file = -(-len(documents) // files)
    for index in range(files):
        text = "\n\n".join(documents[index * per_file:(index + 1) * per_file])
        (directory / f"corpus-{index}.txt").write_text(text + "\n")
    return str(directory / "*.txt")


def sharded_config(corpus: str, **overrides):
    settings = dict(train_files=corpus, eval_files="", doc_separator="blank_line",
                    corpus_format="sentences",
                    part_mb=0.02, masking="static", packing=True, dupe_factor=2,
                    prep_workers=1)
    settings.update(overrides)
    return pretrain_config(**settings)


def prepare_share(config, cache: Path, shard: int, num_shards: int):
    from bert.data.records import data_tokenizer

    tokenizer, _ = data_tokenizer(config, cache)
    return prepare_pretraining_data(config.data, config.max_seq_len,
                                    config.max_predictions_per_seq, config.seed, cache,
                                    tokenizer, shard=shard, num_shards=num_shards,
                                    wait=shard == num_shards - 1)


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/part-*/*.npy"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return paper_format_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def unsharded(corpus, tmp_path_factory):
    return build(sharded_config(corpus), tmp_path_factory.mktemp("one"))[1]


def test_parts_cut_only_at_document_boundaries(corpus):
    files = sorted(Path(corpus).parent.glob("*.txt"))
    parts = plan_parts(files, corpus_format="sentences", doc_separator="blank_line",
                       part_bytes=20_000)
    assert len(parts) > 5
    pieces = [piece for part in parts for piece in part.pieces]
    assert any(piece.start > 0 for piece in pieces)  # files were cut
    summary = CorpusSummary()
    in_pieces = [d for piece in pieces for d in piece_documents(
        piece, summary, doc_separator="blank_line", corpus_format="sentences")]
    whole, whole_summary = read_documents(corpus, doc_separator="blank_line",
                                          corpus_format="sentences")
    assert len(whole) > 100 and all(len(d) == 8 for d in whole[:-1])
    assert in_pieces == whole and summary == whole_summary
    for part in parts[:-1]:  # the last part may hold a merged remainder
        assert part.text_bytes >= 20_000


def test_sharded_preparation_equals_unsharded_for_any_share_and_worker_count(
        corpus, unsharded, tmp_path):
    assert unsharded.summary["train"]["parts"] > 5
    expected = shard_bytes(unsharded.directory)
    for num_shards, workers in ((2, 1), (3, 2)):
        cache = tmp_path / f"{num_shards}x{workers}"
        config = sharded_config(corpus, prep_workers=workers)
        for shard in range(num_shards):
            prepared = prepare_share(config, cache, shard, num_shards)
        assert prepared.directory.name == unsharded.directory.name
        assert shard_bytes(prepared.directory) == expected
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(prepared.train, name),
                                          getattr(unsharded.train, name), err_msg=name)


def test_interrupted_preparation_reruns_only_missing_parts_to_the_same_bytes(
        corpus, unsharded, tmp_path, monkeypatch):
    config = sharded_config(corpus)
    real_write = shards.write_shard
    written: list[int] = []

    def crash_on_fourth_part(directory, index, *args, **kwargs):
        if len(written) == 3:
            raise KeyboardInterrupt  # as a kill would stop it, mid-way
        written.append(index)
        return real_write(directory, index, *args, **kwargs)

    monkeypatch.setattr(records, "write_shard", crash_on_fourth_part)
    with pytest.raises(KeyboardInterrupt):
        build(config, tmp_path)
    [folder] = (tmp_path / "data").glob("examples-*")
    kept = {p: p.stat().st_mtime_ns for p in folder.glob("train/part-*/input_ids.npy")}
    assert len(kept) == 3 and not (folder / "summary.json").exists()
    assert not list(folder.glob("train/.partial-*"))

    rerun: list[int] = []
    monkeypatch.setattr(records, "write_shard",
                        lambda directory, index, *a, **k: (rerun.append(index),
                                                           real_write(directory, index, *a,
                                                                      **k))[1])
    _, prepared = build(config, tmp_path)
    assert sorted(rerun) == sorted(set(range(prepared.summary["train"]["parts"])) - set(written))
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished parts were not redone
    assert shard_bytes(prepared.directory) == shard_bytes(unsharded.directory)


def test_two_processes_prepare_disjoint_shares(corpus, unsharded, tmp_path, monkeypatch):
    config_file = tmp_path / "config.py"
    config_file.write_text(
        "from tests.test_data_shards import sharded_config\n"
        f"def get_config():\n    return sharded_config({corpus!r})\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    commands = [[sys.executable, "-m", "bert.prepare", f"--config={config_file}",
                 f"--workdir={tmp_path}", f"--shard={shard}", "--num_shards=2"]
                for shard in range(2)]
    processes = [subprocess.Popen(c, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for c in commands]
    shares = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        shares.append(json.loads(out))
    parts = unsharded.summary["train"]["parts"]
    assert [share["parts"] for share in shares] == [(parts + 1) // 2, parts // 2]
    assert sum(share["documents"] for share in shares) == unsharded.summary["train"]["documents"]

    def fail(*args, **kwargs):
        raise AssertionError("a part was prepared again although both shares were done")

    monkeypatch.setattr(records, "write_shard", fail)
    _, prepared = build(sharded_config(corpus), tmp_path)
    assert shard_bytes(prepared.directory) == shard_bytes(unsharded.directory)


def test_sharded_rows_index_like_the_concatenated_array():
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 100, (n, 3)) for n in (4, 0, 7, 2)]
    joined = np.concatenate(parts)
    rows = ShardedRows(parts)
    indices = rng.integers(-13, 13, (5, 2))
    np.testing.assert_array_equal(rows[indices], joined[indices])
    np.testing.assert_array_equal(rows[np.arange(13), indices[:, 0].repeat(3)[:13] % 3],
                                  joined[np.arange(13), indices[:, 0].repeat(3)[:13] % 3])
    np.testing.assert_array_equal(rows[2:11:3, 1], joined[2:11:3, 1])
    assert rows[5, 2] == joined[5, 2] and (rows + 1).sum() == (joined + 1).sum()
    with pytest.raises(IndexError):
        rows[np.array([13])]


def test_growing_array_writes_an_npy_that_numpy_reads(tmp_path):
    growing = GrowingArray(tmp_path / "a.npy", np.dtype(np.int8), (3,))
    blocks = [np.arange(6).reshape(2, 3), np.arange(9).reshape(3, 3) - 4]
    for block in blocks:
        growing.append(block)
    growing.close()
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"),
                                  np.concatenate(blocks).astype(np.int8))


_MEMORY_SCRIPT = """
import resource, sys
from tests.test_data_shards import sharded_config
from bert.data import build
config = sharded_config(sys.argv[1], masking="dynamic", packing=False, dupe_factor=5,
                        part_mb=0.25, doc_separator="file", tokenizer=sys.argv[3])
build(config, sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_resident_memory_does_not_grow_with_the_number_of_input_files(tmp_path):
    sources = sorted(SOTU_TRAIN.glob("*.txt"))[:16]  # ~0.6 MB
    peaks = {}
    for copies in (1, 4):
        corpus = tmp_path / f"x{copies}"
        corpus.mkdir()
        for copy in range(copies):
            for path in sources:
                (corpus / f"{copy}-{path.name}").write_bytes(path.read_bytes())
        result = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(corpus / "*.txt"),
             str(tmp_path / f"w{copies}"), str(small_tokenizer_dir())],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert result.returncode == 0, result.stderr
        peaks[copies] = int(result.stdout.split()[-1]) / 1024  # MiB
    # Preparing everything in memory grew by 33 MiB here (83 -> 115 MiB); parts keep it flat.
    assert peaks[4] < peaks[1] + 8, peaks
