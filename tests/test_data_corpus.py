"""Reading raw text: document boundaries, sentence splitting, and bad input named precisely."""

from __future__ import annotations

import pytest

from bert.data.corpus import DataError, expand_files, read_documents, split_sentences
from tests.test_data_support import SOTU_EVAL, SOTU_TRAIN


def test_splitter_keeps_abbreviations_initials_and_decimals_inside_sentences():
    text = ("Mr. Smith paid $3.5 million to the U.S. Treasury on Jan. 4. He said “Go!” "
            "Then he left. Franklin D. Roosevelt agreed, e.g. with Gen. Marshall. Was it 9 a.m. "
            "or later? 1947 was a good year.")
    assert split_sentences(text) == [
        "Mr. Smith paid $3.5 million to the U.S. Treasury on Jan. 4.",
        "He said “Go!”",
        "Then he left.",
        "Franklin D. Roosevelt agreed, e.g. with Gen. Marshall.",
        "Was it 9 a.m. or later?",
        "1947 was a good year.",
    ]


def test_splitter_cuts_an_enormous_sentence_at_whitespace():
    words = ["word"] * 30_000  # 150k characters, no sentence end
    pieces = split_sentences(" ".join(words), max_sentence_chars=1000)
    assert all(len(p) <= 1000 for p in pieces)
    assert " ".join(pieces).split() == words
    unbroken = split_sentences("x" * 2500, max_sentence_chars=1000)
    assert [len(p) for p in unbroken] == [1000, 1000, 500]


def test_shipped_corpus_reads_one_document_per_address():
    documents, summary = read_documents([str(SOTU_EVAL / "*.txt")])
    assert summary.files == summary.documents == len(documents) == 5
    assert summary.skipped_empty_files == [] and summary.skipped_one_sentence_documents == 0
    assert all(len(doc) > 100 for doc in documents)  # each address is one line in the file
    assert documents[0][0].startswith("Members of the Congress:")  # 1926 Coolidge
    train = sorted(p.name for p in expand_files(str(SOTU_TRAIN / "*.txt"), key="k"))
    held_out = sorted(p.name for p in SOTU_EVAL.glob("*.txt"))
    assert len(train) == 105 and not set(train) & set(held_out)


def test_file_and_blank_line_separators(tmp_path):
    (tmp_path / "a.txt").write_text(
        "First doc one. First doc two.\nFirst doc three.\n\n\n"
        "Second doc one. Second doc two.\r\n\r\nLonely sentence.\n")
    (tmp_path / "b.txt").write_text("\ufeffThird doc one. Third doc two.")
    by_file, summary = read_documents(str(tmp_path / "*.txt"), doc_separator="file")
    assert [len(d) for d in by_file] == [6, 2]
    assert by_file[1][0] == "Third doc one."  # byte-order mark dropped
    by_blank, summary = read_documents(str(tmp_path / "*.txt"), doc_separator="blank_line")
    assert by_blank == [["First doc one.", "First doc two.", "First doc three."],
                        ["Second doc one.", "Second doc two."],
                        ["Third doc one.", "Third doc two."]]
    assert summary.skipped_one_sentence_documents == 1
    with pytest.raises(DataError, match="config.data.doc_separator"):
        read_documents(str(tmp_path / "*.txt"), doc_separator="paragraph")


def test_empty_files_and_one_sentence_documents_are_counted_not_hidden(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    (tmp_path / "one.txt").write_text("Only one sentence here.\n")
    (tmp_path / "good.txt").write_text("A real document. With two sentences.\n")
    documents, summary = read_documents([str(tmp_path / "*.txt")])
    assert documents == [["A real document.", "With two sentences."]]
    assert sorted(p.rsplit("/", 1)[-1] for p in summary.skipped_empty_files) == [
        "blank.txt", "empty.txt"]
    assert summary.skipped_one_sentence_documents == 1
    assert summary.to_dict()["documents"] == 1


def test_a_file_that_is_one_enormous_line_is_cut_and_counted(tmp_path):
    (tmp_path / "dump.txt").write_text(" ".join(["token"] * 2_000))  # 12k characters, no "."
    (tmp_path / "prose.txt").write_text("A normal document. It has two sentences.\n")
    documents, summary = read_documents([str(tmp_path / "*.txt")], max_sentence_chars=1000)
    assert [len(d) for d in documents] == [13, 2]  # the line, in pieces of at most 1,000
    assert summary.long_sentences_cut == 1 and summary.to_dict()["long_sentences_cut"] == 1


def test_patterns_accept_lists_and_comma_separated_strings(tmp_path):
    for name in ("a.txt", "b.txt", "c.md"):
        (tmp_path / name).write_text("Sentence one. Sentence two.")
    listed = expand_files([str(tmp_path / "*.txt"), str(tmp_path / "a.txt")], key="k")
    joined = expand_files(f"{tmp_path}/*.txt, {tmp_path}/c.md", key="k")
    assert [p.name for p in listed] == ["a.txt", "b.txt"]
    assert [p.name for p in joined] == ["a.txt", "b.txt", "c.md"]
    # Relative globs also resolve against the repository root, whatever the cwd.
    assert len(expand_files("data/sotu/eval/*.txt", key="k")) == 5


def test_glob_matching_nothing_names_the_key_and_pattern(tmp_path):
    with pytest.raises(DataError, match=r"config.data.train_files: '.*missing\*.txt' matches no"):
        read_documents([str(tmp_path / "missing*.txt")], key="config.data.train_files")
    with pytest.raises(DataError, match="config.data.eval_files is empty"):
        expand_files(" , ", key="config.data.eval_files")
    with pytest.raises(DataError, match="directory"):
        expand_files(str(tmp_path), key="k")


def test_corpus_without_usable_documents_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "one.txt").write_text("Just one sentence.")
    with pytest.raises(DataError, match=r"no document with at least two sentences in 2 file\(s\) "
                                        r"\(1 empty, 1 one-sentence"):
        read_documents(str(tmp_path / "*.txt"), key="config.data.train_files")


def test_non_utf8_file_names_file_line_and_byte_offset(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("First line. Fine.\nSecond line café.\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{bad}:2: not valid UTF-8 \(byte 0xe9 at byte offset "
                                        r"33 of the file, column 16 of the line\)"):
        read_documents(str(bad))


def test_binary_file_is_rejected_with_its_name(tmp_path):
    binary = tmp_path / "weights.txt"
    binary.write_bytes(b"Looks like text.\n\x00\x01\x02\x89PNG")
    with pytest.raises(DataError, match=rf"{binary}:2: contains NUL bytes"):
        read_documents(str(binary))
