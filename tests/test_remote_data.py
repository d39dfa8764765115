"""A gs:// corpus and a gs:// prepared-data cache, against the storage emulator."""

from __future__ import annotations

import bz2
import gzip
import json

import numpy as np
import pytest
import zstandard

import bert.data.records as records
import bert.data.shards as shards
from bert import files
from bert.data import DataError
from bert.data.corpus import read_documents
from bert.data.plan import plan_parts
from tests.test_data_support import SOTU_EVAL, pretrain_config, small_tokenizer
from tests.test_remote_storage import gcs  # noqa: F401 (the fixture)

DOCUMENTS = "The first document. It has two sentences.\n\nA second one! Mr. Smith spoke.\n"
COMPRESSORS = {"": lambda data: data, ".gz": gzip.compress, ".bz2": bz2.compress,
               ".zst": lambda data: zstandard.ZstdCompressor().compress(data)}


def _upload(local, url):
    files.copy_file(local, url)
    return url


def test_a_remote_glob_reads_as_the_same_files_on_disk(gcs, tmp_path):  # noqa: F811
    for suffix, compress in COMPRESSORS.items():
        data = compress(DOCUMENTS.replace("first", f"first{suffix or ' plain'}").encode())
        (tmp_path / f"docs.txt{suffix}").write_bytes(data)
        _upload(tmp_path / f"docs.txt{suffix}", f"{gcs}/formats/docs.txt{suffix}")
    jsonl = json.dumps({"text": "One line of JSON. With two sentences."}) + "\n"
    (tmp_path / "docs.jsonl.gz").write_bytes(gzip.compress(jsonl.encode()))
    _upload(tmp_path / "docs.jsonl.gz", f"{gcs}/formats/docs.jsonl.gz")

    remote, summary = read_documents(f"{gcs}/formats/docs.txt*", doc_separator="blank_line")
    local, _ = read_documents(str(tmp_path / "docs.txt*"), doc_separator="blank_line")
    assert remote == local and len(remote) == 8 and summary.files == 4
    assert remote[0] == ["The first plain document.", "It has two sentences."]
    documents, _ = read_documents(f"{gcs}/formats/*.jsonl.gz", corpus_format="jsonl")
    assert documents == [["One line of JSON.", "With two sentences."]]


def test_remote_errors_name_the_object_and_line(gcs, tmp_path):  # noqa: F811
    (tmp_path / "bad.txt").write_bytes(b"Fine. Lines.\n\nStill fine. Yes.\nbad \xff byte\n")
    url = _upload(tmp_path / "bad.txt", f"{gcs}/errors/bad.txt")
    with pytest.raises(DataError, match=f"{url}:4: not valid UTF-8"):
        read_documents(url)
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"text": "A. B."}\n{"text": 3}\n'))
    url = _upload(tmp_path / "bad.jsonl.gz", f"{gcs}/errors/bad.jsonl.gz")
    with pytest.raises(DataError, match=f"{url}:2: expected a JSON object"):
        read_documents(url, corpus_format="jsonl")
    with pytest.raises(DataError, match="config.data.train_files: 'gs://.*/none-.*' matches no"):
        read_documents(f"{gcs}/errors/none-*.txt", key="config.data.train_files")


def test_remote_files_are_cut_into_the_parts_of_the_same_local_files(gcs, tmp_path):  # noqa: F811
    text = "".join(f"Document {i} starts. It goes on for a while.\n\n" for i in range(200))
    (tmp_path / "big.txt").write_text(text)
    url = _upload(tmp_path / "big.txt", f"{gcs}/plan/big.txt")
    settings = dict(corpus_format="paragraphs", doc_separator="blank_line", part_bytes=2000)
    local = plan_parts([tmp_path / "big.txt"], **settings)
    remote = plan_parts(files.glob(url), **settings)
    assert len(remote) == len(local) > 2
    assert [[(p.start, p.end) for p in part.pieces] for part in remote] == \
        [[(p.start, p.end) for p in part.pieces] for part in local]


def _arrays(split):
    return {name: np.asarray(getattr(split, name)) for name in shards.BASE_ARRAYS}


def test_a_remote_cache_is_prepared_in_shares_mirrored_and_reused(gcs, tmp_path,  # noqa: F811
                                                                  monkeypatch):
    corpus = f"{gcs}/sotu"
    for path in sorted(SOTU_EVAL.glob("*.txt")):
        _upload(path, f"{corpus}/{path.name}")
    for name in ("1926_calvin_coolidge_r", "1947_harry_s_truman_d"):  # one document each
        (tmp_path / f"{name}.txt.gz").write_bytes(gzip.compress(
            (SOTU_EVAL / f"{name}.txt").read_bytes()))
        _upload(tmp_path / f"{name}.txt.gz", f"{corpus}/{name}.txt.gz")
    cache = f"{gcs}/cache"

    def data(local_cache):
        return pretrain_config(train_files=f"{corpus}/*.txt", eval_files=f"{corpus}/*.gz",
                               cache_dir=cache, local_cache_dir=str(tmp_path / local_cache),
                               part_mb=0.05, prep_workers=2).data  # forks readers

    def prepare(local_cache, **kwargs):
        return records.prepare_pretraining_data(data(local_cache), 64, 10, 0, cache,
                                                small_tokenizer(), **kwargs)

    share = prepare("host-a", shard=1, num_shards=2, wait=False)
    [folder] = [p for p in files.fresh(cache).iterdir()]
    splits = records._splits(records.DataSettings.from_config(data("host-a"),
                                                              max_predictions_per_seq=10))
    tasks = [f"{name}/{shards.shard_name(index)}" for name, index in records._tasks(splits)]
    assert len(tasks) == 3 and share["parts"] == 1  # train parts 0 and 1, eval part 0
    assert records._missing(folder, splits) == tasks[::2]  # process 1 prepared tasks[1]
    assert not (folder / "summary.json").exists()
    # An upload cut short (arrays, no summary) is not a finished shard: it is prepared again.
    files.write_atomically(folder / "train" / "part-00000" / "input_ids.npy", b"partial")
    assert "train/part-00000" in records._missing(folder, splits)

    prepared = prepare("host-a", shard=0, num_shards=2)
    assert prepared.directory == folder and (folder / "summary.json").exists()
    assert str(prepared.train.directory).startswith(str(tmp_path / "host-a" / folder.name))
    reference = records.prepare_pretraining_data(
        pretrain_config(train_files=str(SOTU_EVAL / "*.txt"),
                        eval_files=str(tmp_path / "*.txt.gz"), part_mb=0.05,
                        prep_workers=1).data,
        64, 10, 0, tmp_path / "local-cache", small_tokenizer())
    for name, array in _arrays(reference.train).items():
        np.testing.assert_array_equal(_arrays(prepared.train)[name], array, err_msg=name)
    for name, array in _arrays(reference.eval).items():
        np.testing.assert_array_equal(_arrays(prepared.eval)[name], array, err_msg=name)

    # Another host (a new local mirror) reuses the remote cache: nothing is prepared again.
    def no_preparing(*args, **kwargs):
        raise AssertionError("the cache was prepared again")

    monkeypatch.setattr(records, "write_shard", no_preparing)
    again = prepare("host-b")
    assert str(again.train.directory).startswith(str(tmp_path / "host-b"))
    np.testing.assert_array_equal(np.asarray(again.train.input_ids),
                                  np.asarray(prepared.train.input_ids))
