"""Corpus files → parts: the units that preparation streams, shards and resumes by.

A *part* is a run of whole files and file pieces holding about `part_bytes` of text, cut only at
document boundaries. Where the cuts fall depends on the files' names, sizes and bytes alone, never
on how many processes or workers prepare the corpus: so part p holds the same documents, and
becomes the same examples, whichever process prepares it and however many there are. That is
what lets `--num_shards N` hand part p to process p mod N and still produce, byte for byte, what
one process would.

Cuts: an uncompressed file larger than what its part still needs is cut at the first document
boundary after that point (a line start for JSONL; the first non-blank line after a blank one
for blank-line separated text). Files with one document each (`doc_separator="file"`) and
compressed files are never cut: a part then holds whole files, at least two with
`doc_separator="file"` so that next-sentence prediction has another document to draw from.
A last part under half the target size is merged into the one before it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from etils import epath

from bert import files as storage
from bert.data.corpus import Piece, is_compressed


@dataclasses.dataclass(frozen=True)
class Part:
    """Pieces of files, in corpus order, prepared together."""

    pieces: tuple[Piece, ...]
    text_bytes: int  # bytes on disk (compressed files count their compressed size)

    def to_dict(self) -> dict[str, Any]:
        return {"text_bytes": self.text_bytes,
                "pieces": [[p.path, p.start, p.end] for p in self.pieces]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Part:
        return cls(tuple(Piece(path, start, end) for path, start, end in values["pieces"]),
                   int(values["text_bytes"]))

    def describe(self) -> str:
        first, last = self.pieces[0].path, self.pieces[-1].path
        return first if first == last else f"{first} .. {last} ({len(self.pieces)} pieces)"


def _cuttable(path: Path | epath.Path, corpus_format: str, doc_separator: str) -> bool:
    if is_compressed(path):
        return False
    return corpus_format == "jsonl" or doc_separator == "blank_line"


def next_boundary(path: str | Path | epath.Path, offset: int,
                  corpus_format: str) -> int | None:
    """The first document start at or after byte `offset`, or None if the file ends first."""
    with storage.open_binary(path) as f:
        f.seek(offset)
        f.readline()  # the rest of the line `offset` falls in
        previous_blank = False
        while True:
            position = f.tell()
            line = f.readline()
            if not line:
                return None
            if corpus_format == "jsonl":
                return position
            blank = not line.strip()
            if previous_blank and not blank:
                return position
            previous_blank = blank


def plan_parts(files: Sequence[Path | epath.Path], *, corpus_format: str, doc_separator: str,
               part_bytes: int) -> list[Part]:
    """Groups and cuts `files` (in order) into parts of about `part_bytes` (module docstring)."""
    whole_files = doc_separator == "file" and corpus_format != "jsonl"
    parts: list[Part] = []
    pieces: list[Piece] = []
    size = 0

    def close() -> None:
        nonlocal pieces, size
        parts.append(Part(tuple(pieces), size))
        pieces, size = [], 0

    for path in files:
        file_size = storage.size(path)
        start = 0
        if _cuttable(path, corpus_format, doc_separator):
            while file_size - start > part_bytes - size:
                cut = next_boundary(path, start + part_bytes - size, corpus_format)
                if cut is None:
                    break
                pieces.append(Piece(str(path), start, cut))
                size += cut - start
                start = cut
                close()
        pieces.append(Piece(str(path), start, None))
        size += file_size - start
        if size >= part_bytes and (len(pieces) >= 2 or not whole_files):
            close()
    if pieces:
        small = size < part_bytes // 2 or (whole_files and len(pieces) < 2)
        if small and parts:
            last = parts.pop()
            pieces, size = [*last.pieces, *pieces], last.text_bytes + size
        close()
    return parts
