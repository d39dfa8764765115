"""Corpus formats researchers have: compressed files, JSONL, one sentence per line; errors name
the file and line whatever the format."""

from __future__ import annotations

import bz2
import gzip
import json

import pytest
import zstandard

from bert.data import DataError, build
from bert.data.corpus import read_documents
from tests.test_data_support import pretrain_config

DOCUMENTS = [["The first document starts here.", "It has a second sentence!"],
             ["Another one, about Mr. Smith of the U.S. Senate.", "He spoke at length.",
              "Then he sat down."],
             ["A third document.", "Short, but two sentences."]]


def _text(documents=DOCUMENTS) -> str:
    return "\n\n".join(" ".join(document) for document in documents) + "\n"


COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress,
               ".zst": lambda data: zstandard.ZstdCompressor().compress(data)}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_files_read_as_the_plain_file(tmp_path, suffix):
    (tmp_path / "plain.txt").write_text(_text())
    (tmp_path / f"packed.txt{suffix}").write_bytes(COMPRESSORS[suffix](_text().encode()))
    plain, plain_summary = read_documents(str(tmp_path / "plain.txt"), doc_separator="blank_line")
    packed, packed_summary = read_documents(str(tmp_path / f"packed.txt{suffix}"),
                                            doc_separator="blank_line")
    assert plain == packed == DOCUMENTS
    assert packed_summary.documents == 3 and packed_summary.sentences == 7


def test_jsonl_documents_come_from_the_text_field(tmp_path):
    lines = [json.dumps({"id": i, "body": "\n".join(document)}) for i, document in
             enumerate(DOCUMENTS)]
    (tmp_path / "docs.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    documents, summary = read_documents(str(tmp_path / "docs.jsonl.gz"), corpus_format="jsonl",
                                        text_field="body")
    assert documents == DOCUMENTS and summary.files == 1


def test_sentence_per_line_format_keeps_each_line_whole(tmp_path):
    (tmp_path / "paper.txt").write_text("One line. Two sentences in it.\nSecond line.\n\n"
                                        "Next document.\nIts end.\n")
    documents, _ = read_documents(str(tmp_path / "paper.txt"), corpus_format="sentences",
                                  doc_separator="blank_line")
    assert documents == [["One line. Two sentences in it.", "Second line."],
                         ["Next document.", "Its end."]]


@pytest.mark.parametrize("content,message", [
    ('{"text": "Fine. Yes."}\n{"text": broken}\n', r"docs.jsonl:2: invalid JSON"),
    ('{"text": "Fine. Yes."}\n\n["not", "an object"]\n', r"docs.jsonl:3: expected a JSON object "
                                                        r"with a string field 'text'"),
    ('{"body": "no text field"}\n', r"docs.jsonl:1: expected a JSON object"),
])
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    (tmp_path / "docs.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        read_documents(str(tmp_path / "docs.jsonl"), corpus_format="jsonl")


def test_bad_bytes_in_a_compressed_file_name_file_and_line(tmp_path):
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(gzip.compress("Fine. Yes.\nSecond line café.\n".encode("latin-1")))
    with pytest.raises(DataError, match=rf"{path}:2: not valid UTF-8 \(byte 0xe9 at byte offset "
                                        r"26 of the file, column 16 of the line\)"):
        read_documents(str(path))


def test_truncated_compressed_file_is_named(tmp_path):
    path = tmp_path / "cut.txt.bz2"
    path.write_bytes(bz2.compress(_text().encode() * 50)[:-40])
    with pytest.raises(DataError, match=rf"{path}: cannot read past byte"):
        read_documents(str(path))


def test_line_numbers_count_from_the_file_start_in_a_later_part(tmp_path):
    good = _text(DOCUMENTS * 200)  # ~40 KB, cut into parts of 8 KB
    bad_line = good.count("\n") + 1
    (tmp_path / "big.txt").write_bytes(good.encode() + b"Broken \xff here. Yes.\n")
    config = pretrain_config(train_files=str(tmp_path / "big.txt"), eval_files="",
                             doc_separator="blank_line", part_mb=8 / 1024, prep_workers=1)
    with pytest.raises(DataError, match=rf"big.txt:{bad_line}: not valid UTF-8"):
        build(config, tmp_path)


def test_jsonl_corpus_prepares_end_to_end(tmp_path):
    from tests.test_data_support import SOTU_EVAL

    documents, _ = read_documents(str(SOTU_EVAL / "*.txt"))
    lines = [json.dumps({"text": " ".join(document)}) for document in documents]
    (tmp_path / "sotu.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
    jsonl = build(pretrain_config(train_files=str(tmp_path / "sotu.jsonl.zst"), eval_files="",
                                  corpus_format="jsonl"), tmp_path / "jsonl")[1]
    text = build(pretrain_config(eval_files=""), tmp_path / "text")[1]
    assert jsonl.summary["train"]["documents"] == text.summary["train"]["documents"] == 5
    assert jsonl.summary["train"]["corpus_tokens"] == text.summary["train"]["corpus_tokens"]
