"""Raw text → documents of sentences: the first stage of the data flow.

A *document* is what next-sentence prediction draws consecutive sentences from, so the reader's
one decision that matters is where documents end (`doc_separator`):

* ``"file"``: one document per file; every non-blank line is a paragraph (blank lines are
  ignored). This is the shipped State of the Union corpus: one address per file.
* ``"blank_line"``: one or more blank lines end a document (and so does the end of a file).
  This is the format of the original BERT sample text and of Wikipedia dumps flattened to text.

Paragraph lines are split into sentences by a rule-based splitter that knows common
abbreviations ("Mr.", "U.S.", "Gen.") and leaves decimals ("3.5") alone. Sentences longer than
`max_sentence_chars` are cut at whitespace so that a single enormous line (a file with no
newlines, a log dump) cannot produce one unbounded sentence.

Three formats (`corpus_format`):

* ``"paragraphs"``: every non-blank line is a paragraph, split into sentences (as above).
* ``"sentences"``: every non-blank line is one sentence, kept as it is: the paper's format (one
  sentence per line, a blank line between documents, i.e. with ``doc_separator="blank_line"``).
* ``"jsonl"``: one JSON object per line, a document in its `text_field`; the text's lines are
  paragraphs. `doc_separator` does not apply.

Files ending in .gz, .bz2 or .zst are decompressed as they are read. Globs and files may be
URLs (gs://bucket/wiki/*.txt.gz, any store of bert/files.py): objects are read in ranges as they
are streamed, never downloaded whole. Files are streamed line by line, and `Piece`s (byte
ranges of a file, bert/data/plan.py) are read alone, so memory does not grow with the file.

Everything the reader drops or changes (empty files, one-sentence documents, sentences cut for
length) is counted in the returned `CorpusSummary`, never hidden; everything it cannot read
raises `DataError` naming the file, and the line where that applies.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import glob
import gzip
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from etils import epath

from bert import files
from bert.config import CORPUS_FORMATS, DOC_SEPARATORS

COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst")

# Longest sentence handed downstream, in characters. ~1,000 tokens of English; SentencePiece
# training silently skips sentences over 4,192 bytes, and instances are at most 512 tokens.
MAX_SENTENCE_CHARS = 2000

# The repository root, used as a second base for relative globs so that configs can name
# "data/sotu/train/*.txt" whatever the working directory is.
_REPO_ROOT = Path(__file__).resolve().parents[2]


class DataError(ValueError):
    """Bad input data or data config; the message names the file, line or config key."""


@dataclasses.dataclass
class CorpusSummary:
    """What reading a corpus found, kept so that nothing is dropped silently."""

    files: int = 0
    documents: int = 0  # documents kept (two or more sentences)
    sentences: int = 0  # sentences in kept documents
    characters: int = 0  # characters in kept sentences
    skipped_empty_files: list[str] = dataclasses.field(default_factory=list)
    skipped_one_sentence_documents: int = 0
    long_sentences_cut: int = 0  # sentences over max_sentence_chars, cut into pieces

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def add(self, other: CorpusSummary) -> None:
        """Adds the counts of `other` (another part of the same corpus) to these."""
        self.files += other.files
        self.documents += other.documents
        self.sentences += other.sentences
        self.characters += other.characters
        self.skipped_empty_files.extend(other.skipped_empty_files)
        self.skipped_one_sentence_documents += other.skipped_one_sentence_documents
        self.long_sentences_cut += other.long_sentences_cut


def parse_file_patterns(patterns: str | Sequence[str], *, key: str) -> list[str]:
    """Accepts a comma-separated string or a sequence of globs; returns the globs.

    `key` names the config entry (e.g. "config.data.train_files") for error messages.
    """
    if isinstance(patterns, str):
        items = [p.strip() for p in patterns.split(",")]
    elif isinstance(patterns, Sequence):
        items = [str(p).strip() for p in patterns]
    else:
        raise DataError(f"{key}: expected a list of globs or a comma-separated string, "
                        f"got {type(patterns).__name__} {patterns!r}")
    return [p for p in items if p]


def expand_files(patterns: str | Sequence[str], *, key: str) -> list[Path | epath.Path]:
    """Expands globs to a sorted, de-duplicated list of absolute file paths (or URLs).

    A URL pattern (gs://bucket/corpus/*.txt) is matched in its store. A relative pattern is
    tried against the working directory first and then against the repository root. Every
    pattern must match at least one file: a typo in a config must not quietly shrink the corpus.
    """
    items = parse_file_patterns(patterns, key=key)
    if not items:
        raise DataError(f"{key} is empty: name at least one file or glob")
    found: dict[Path | epath.Path, None] = {}
    for pattern in items:
        matches = _glob(pattern)
        if not matches:
            raise DataError(f"{key}: {pattern!r} matches no file (searched relative to "
                            f"{os.getcwd()} and {_REPO_ROOT})")
        for match in matches:
            if match.is_dir():
                raise DataError(f"{key}: {pattern!r} matches the directory {match}; "
                                f"name the files inside it, e.g. '{match}/*.txt'")
            found.setdefault(match, None)
    return sorted(found)


def _glob(pattern: str) -> list[Path | epath.Path]:
    if files.is_remote(pattern):
        return list(files.glob(pattern))
    expanded = os.path.expanduser(pattern)
    bases = [""] if os.path.isabs(expanded) else ["", str(_REPO_ROOT)]
    for base in bases:
        full = os.path.join(base, expanded) if base else expanded
        matches = glob.glob(full, recursive=True)
        if matches:
            return [Path(m).resolve() for m in sorted(matches)]
    return []


def check_doc_separator(doc_separator: str) -> None:
    if doc_separator not in DOC_SEPARATORS:
        raise DataError(f"config.data.doc_separator: must be one of {DOC_SEPARATORS}, "
                        f"got {doc_separator!r}")


def read_text(path: Path | epath.Path) -> str:
    """Reads a UTF-8 text file, rejecting binary files and invalid bytes with their location."""
    data = path.read_bytes()
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise DataError(f"{path}:{line}: contains NUL bytes; this looks like a binary file, "
                        "not UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{files.decode_error(path, data, err, 'UTF-8')}; re-encode the file as "
                        "UTF-8") from None
    return text.removeprefix("\ufeff")


def check_corpus_format(corpus_format: str) -> None:
    if corpus_format not in CORPUS_FORMATS:
        raise DataError(f"config.data.corpus_format: must be one of {CORPUS_FORMATS}, "
                        f"got {corpus_format!r}")


@dataclasses.dataclass(frozen=True)
class Piece:
    """Bytes [start, end) of one file (end None: to its end); cut only at document boundaries."""

    path: str
    start: int = 0
    end: int | None = None

    @property
    def whole_file(self) -> bool:
        return self.start == 0 and self.end is None


def is_compressed(path: str | Path) -> bool:
    return str(path).endswith(COMPRESSED_SUFFIXES)


@contextlib.contextmanager
def open_binary(path: str | Path) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed when its name ends in .gz, .bz2 or .zst."""
    name = str(path)
    with files.open_binary(name) as raw:
        if name.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream  # type: ignore[misc]
        elif name.endswith(".bz2"):
            with bz2.BZ2File(raw, "rb") as stream:
                yield stream  # type: ignore[misc]
        elif name.endswith(".zst"):
            import zstandard  # only corpora that need it pay for the import

            with io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw)) as stream:
                yield stream  # type: ignore[misc]
        else:
            yield raw


def _line_number(path: str, offset: int) -> int:
    """1-based line of byte `offset` of an uncompressed file (only computed for an error)."""
    with files.open_binary(path) as f:
        return f.read(offset).count(b"\n") + 1


def piece_lines(piece: Piece) -> Iterator[str]:
    """The decoded lines of `piece`, streamed; bad bytes raise `DataError` with file and line."""
    with contextlib.ExitStack() as opened:
        try:
            stream = opened.enter_context(open_binary(piece.path))
        except OSError as err:
            raise DataError(f"{piece.path}: cannot open ({err.strerror or err})") from None
        if piece.start:
            stream.seek(piece.start)
        offset, line = piece.start, 0
        try:
            for raw in stream:
                if piece.end is not None and offset >= piece.end:
                    return
                if b"\x00" in raw:
                    where = _where(piece, line, offset)
                    raise DataError(f"{where}: contains NUL bytes; this looks like a binary "
                                    "file, not UTF-8 text")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(
                        f"{_where(piece, line, offset)}: not valid UTF-8 (byte "
                        f"0x{raw[err.start]:02x} at byte offset {offset + err.start} of the "
                        f"file, column {err.start + 1} of the line); re-encode the file as "
                        "UTF-8") from None
                if offset == 0:
                    text = text.removeprefix("\ufeff")
                yield text
                offset += len(raw)
                line += 1
        except (OSError, EOFError, ValueError) as err:
            if isinstance(err, DataError):
                raise
            raise DataError(f"{piece.path}: cannot read past byte {offset} of the "
                            f"decompressed text ({err})") from None


def _where(piece: Piece, line: int, offset: int) -> str:
    """"path:line" of a line `line` lines into `piece` (at byte `offset`)."""
    first = 1 if piece.start == 0 else _line_number(piece.path, piece.start)
    return f"{piece.path}:{first + line}"


def read_documents(
    patterns: str | Sequence[str],
    *,
    doc_separator: str = "file",
    corpus_format: str = "paragraphs",
    text_field: str = "text",
    key: str = "files",
    max_sentence_chars: int = MAX_SENTENCE_CHARS,
) -> tuple[list[list[str]], CorpusSummary]:
    """Reads every file matched by `patterns` into documents, each a list of sentences.

    Returns the kept documents (two or more sentences: NSP needs a next sentence) and a
    summary that counts what was skipped. Raises `DataError` for unmatched globs, unreadable
    files, and a corpus with no usable document.
    """
    check_doc_separator(doc_separator)
    check_corpus_format(corpus_format)
    summary = CorpusSummary()
    documents: list[list[str]] = []
    for path in expand_files(patterns, key=key):
        documents.extend(piece_documents(
            Piece(str(path)), summary, doc_separator=doc_separator, corpus_format=corpus_format,
            text_field=text_field, max_sentence_chars=max_sentence_chars))
    check_not_empty(summary, key)
    return documents, summary


def read_sentences(patterns: str | Sequence[str], *, doc_separator: str = "file",
                   key: str = "files") -> list[str]:
    """Every sentence of the documents `read_documents` keeps, in order: a tokenizer's
    training text (`bert.tokenizer.train_sentencepiece`, `bert.wordpiece.train_wordpiece`)."""
    documents, _ = read_documents(patterns, doc_separator=doc_separator, key=key)
    return [sentence for document in documents for sentence in document]


def read_file_documents(path: Path | epath.Path, doc_separator: str, summary: CorpusSummary,
                        max_sentence_chars: int = MAX_SENTENCE_CHARS) -> list[list[str]]:
    """The kept documents of one file of paragraphs; adds what it read and skipped to `summary`."""
    return list(piece_documents(Piece(str(path)), summary, doc_separator=doc_separator,
                                max_sentence_chars=max_sentence_chars))


def _paragraph_groups(piece: Piece, doc_separator: str, corpus_format: str,
                      text_field: str) -> Iterator[list[str]]:
    """Each document of the piece as its stripped, non-empty lines."""
    if corpus_format != "jsonl":
        paragraphs: list[str] = []
        for raw_line in piece_lines(piece):
            line = raw_line.strip()
            if line:
                paragraphs.append(line)
            elif doc_separator == "blank_line" and paragraphs:
                yield paragraphs
                paragraphs = []
        if paragraphs or doc_separator == "file":
            yield paragraphs
        return
    for number, raw_line in enumerate(piece_lines(piece)):
        if not raw_line.strip():
            continue
        try:
            record = json.loads(raw_line)
        except json.JSONDecodeError as err:
            raise DataError(f"{_where(piece, number, 0)}: invalid JSON ({err.msg} at column "
                            f"{err.colno})") from None
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(f"{_where(piece, number, 0)}: expected a JSON object with a string "
                            f"field {text_field!r} (config.data.text_field), got "
                            f"{raw_line.strip()[:80]!r}")
        yield [line.strip() for line in text.split("\n") if line.strip()]


def piece_documents(piece: Piece, summary: CorpusSummary, *, doc_separator: str = "file",
                    corpus_format: str = "paragraphs", text_field: str = "text",
                    max_sentence_chars: int = MAX_SENTENCE_CHARS) -> Iterator[list[str]]:
    """The kept documents of a piece, streamed; adds what it read and skipped to `summary`."""
    summary.files += piece.start == 0
    piece_has_text = False
    for paragraphs in _paragraph_groups(piece, doc_separator, corpus_format, text_field):
        sentences = []
        for paragraph in paragraphs:
            found = [paragraph] if corpus_format == "sentences" else _sentences(paragraph)
            for sentence in found:
                pieces = _cut_long(sentence, max_sentence_chars)
                summary.long_sentences_cut += len(pieces) > 1
                sentences.extend(pieces)
        piece_has_text = piece_has_text or bool(sentences)
        if len(sentences) >= 2:
            summary.documents += 1
            summary.sentences += len(sentences)
            summary.characters += sum(len(s) for s in sentences)
            yield sentences
        elif sentences:
            summary.skipped_one_sentence_documents += 1
    if not piece_has_text and piece.whole_file:
        summary.skipped_empty_files.append(piece.path)


def check_not_empty(summary: CorpusSummary, key: str) -> None:
    """Raises `DataError` when reading kept no document at all."""
    if not summary.documents:
        raise DataError(
            f"{key}: no document with at least two sentences in {summary.files} file(s) "
            f"({len(summary.skipped_empty_files)} empty, "
            f"{summary.skipped_one_sentence_documents} one-sentence documents); "
            "next-sentence prediction needs documents of two or more sentences")


# Words that end in "." without ending the sentence. Compared lower-case, without the dot.
_ABBREVIATIONS = frozenset("""
    mr mrs ms dr prof rev hon gen col lt maj capt cmdr adm sgt gov sen rep pres messrs mme mlle
    st jr sr esq co corp inc ltd bros dept univ assn no nos vol vols fig figs art sec ch pp
    vs etc al cf approx est jan feb mar apr jun jul aug sep sept oct nov dec
    ave blvd mt ft
""".split())
# Dotted acronyms and initials: "U.S", "U.N", "e.g", "i.e", "D" (as in "Franklin D. Roosevelt").
_INITIALS = re.compile(r"^(?:[A-Za-z]\.)*[A-Za-z]$")
# A sentence end: terminal punctuation, optional closing quotes/brackets, whitespace, then
# something that can start a sentence (capital, digit, opening quote or bracket).
_BOUNDARY = re.compile(r"([.!?]+)([\"'”’)\]]*)\s+(?=[\"'“‘(\[]*[A-Z0-9])")
_LAST_WORD = re.compile(r"(\S+)$")
_WORD_WINDOW = 32  # characters before a full stop searched for the word it ends


def split_sentences(paragraph: str, max_sentence_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Splits one paragraph into sentences; long sentences are cut at whitespace.

    The rule: split after ".", "!" or "?" (plus closing quotes) when whitespace and a capital,
    digit or opening quote follow, unless the word before a "." is a known abbreviation, an
    initial or a dotted acronym. "3.5" never splits (no whitespace after the dot).
    """
    return [piece for sentence in _sentences(paragraph)
            for piece in _cut_long(sentence, max_sentence_chars)]


def _sentences(paragraph: str) -> list[str]:
    """The non-empty sentences of a paragraph, before long ones are cut."""
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(paragraph):
        if match.group(1) == ".":
            word = _last_word(paragraph, start, match.start())
            if word is not None:
                stem = word.lstrip("\"'“‘([")
                if stem.lower() in _ABBREVIATIONS or _INITIALS.match(stem):
                    continue
        sentences.append(paragraph[start:match.end(2)].strip())
        start = match.end()
    sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


def _last_word(text: str, start: int, end: int) -> str | None:
    """The last whitespace-free run of text[start:end] that reaches `end`, if any.

    Looks at a short window before `end` first: searching from `start` scans the whole sentence
    so far at every candidate full stop, which made splitting quadratic in sentence length.
    """
    window = max(start, end - _WORD_WINDOW)
    word = _LAST_WORD.search(text, window, end)
    if word is not None and word.start() == window and window > start:
        word = _LAST_WORD.search(text, start, end)  # longer than the window: look again
    return None if word is None else word.group(1)


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    """Cuts a sentence into pieces of at most `max_chars`, at the last whitespace if any."""
    pieces = []
    while len(sentence) > max_chars:
        cut = sentence.rfind(" ", max_chars // 2, max_chars + 1)
        if cut <= 0:
            cut = max_chars
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    pieces.append(sentence)
    return pieces
