"""Proxy evaluation sets for the paper's ablations, built from the labelled data the repo ships.

    python -m bert.ablation_data --output DIR/data     # bert.sweep does this itself

(`python -m bert.ablation_data` runs this module's `main`.)

The paper evaluates its ablations on MNLI, QNLI, MRPC (sentence pairs), SST-2, SQuAD (spans)
and CoNLL-2003 (NER). None of the pair or span sets can be had here (see data/*/README.md for
what can), so two proxies of the same kind are built from real labelled data, never from
next-sentence pairs (those would favour the NSP arm by construction):

    trec_pairs/{train,dev}.tsv      "Do these two questions ask for the same kind of answer?"
        columns text, text_b, label (same | different): each TREC question (data/trec) paired
        with another of the same split, of the same coarse type for half of them. A sentence-pair
        classification proxy for MNLI / QNLI / MRPC.
    wnut_questions/{train,dev}.json "Which person is mentioned?" over WNUT-16 tweets (data/wnut)
        in SQuAD v2.0 JSON: one question per entity type a tweet mentions, answered by that
        type's first mention (every mention counts as a right answer on dev), and one question
        per tweet about a type it does not mention, unanswerable.
    wnut_spans/{train,dev}.json     The same answerable questions alone, in SQuAD v1.1 JSON: the
        span proxy for SQuAD v1.1 (the paper's ablations report v1.1 F1). A tiny model trained on
        the v2.0 set answers "no answer" everywhere (F1 = the unanswerable share, 67.3 for
        every arm), so the tables use this one.

Both are deterministic functions of the shipped files (a fixed seed), so every run and every
machine builds the same bytes; files already there are kept.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bert.files import write_atomically
from bert.tasks import tagging

SEED = 17
TREC_DIR, WNUT_DIR = Path("data/trec"), Path("data/wnut")
# WNUT-16 entity types and how a question names them.
ENTITY_PHRASES = {"person": "person", "geo-loc": "place", "company": "company",
                  "product": "product", "facility": "facility", "musicartist": "music artist",
                  "movie": "movie", "sportsteam": "sports team", "tvshow": "TV show",
                  "other": "other named thing"}
SPLITS = ("train", "dev")


def _rng(split: str) -> np.random.Generator:
    return np.random.default_rng([SEED, SPLITS.index(split)])


# ------------------------------------------------------------------------------- TREC pairs


def read_trec(path: Path) -> list[tuple[str, str]]:
    """(question, coarse type) rows of a data/trec TSV file (columns text, coarse, fine)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    for line, row in enumerate(rows, start=2):
        if not row.get("text") or not row.get("coarse"):
            raise ValueError(f"{path}:{line}: expected the columns text and coarse")
    return [(row["text"], row["coarse"]) for row in rows]


def question_pairs(questions: list[tuple[str, str]], rng: np.random.Generator
                   ) -> list[tuple[str, str, str]]:
    """(question, other question, same | different): each question once as the first, its
    partner drawn from the same type for every second one (in a shuffled order)."""
    by_type: dict[str, list[int]] = defaultdict(list)
    for index, (_, coarse) in enumerate(questions):
        by_type[coarse].append(index)
    pairs = []
    for n, index in enumerate(rng.permutation(len(questions))):
        text, coarse = questions[index]
        same = n % 2 == 0 and len(by_type[coarse]) > 1
        pool = (by_type[coarse] if same else
                [i for kind, members in by_type.items() if kind != coarse for i in members])
        partner = index
        while partner == index:
            partner = pool[rng.integers(len(pool))]
        pairs.append((text, questions[partner][0], "same" if same else "different"))
    return pairs


def write_tsv(path: Path, header: Iterable[str], rows: Iterable[Iterable[str]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    write_atomically(str(path), "\n".join(lines) + "\n")


# ------------------------------------------------------------------------ WNUT span questions


def entity_spans(words: Sequence[str], tags: Sequence[str]
                 ) -> tuple[str, list[tuple[str, int, str]]]:
    """The context (words joined by spaces) and its entities as (type, char start, text), the
    entities chunked as conlleval chunks them (bert.tasks.tagging.entity_chunks)."""
    starts, offset = [], 0
    for word in words:
        starts.append(offset)
        offset += len(word) + 1
    context = " ".join(words)
    entities = []
    for kind, first, end in tagging.entity_chunks(tags):
        last = starts[end - 1] + len(words[end - 1])
        entities.append((kind, starts[first], context[starts[first]:last]))
    return context, entities


def span_questions(sentences: Sequence[tagging.Sentence], rng: np.random.Generator,
                   split: str, *, unanswerable: bool = True) -> dict[str, Any]:
    """SQuAD v2.0 JSON over the tweets (see the module docstring); without `unanswerable`,
    SQuAD v1.1 JSON of the answerable questions alone (tweets that mention no entity dropped)."""
    data = []
    for n, sentence in enumerate(sentences):
        context, entities = entity_spans(sentence.words, sentence.tags)
        mentioned: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for kind, start, text in entities:
            if kind in ENTITY_PHRASES:
                mentioned[kind].append((start, text))
        qas = []
        for kind, spans in sorted(mentioned.items()):
            answers = spans[:1] if split == "train" else spans  # training takes one answer
            qas.append({"id": f"{split}-{n}-{kind}", "is_impossible": False,
                        "question": f"Which {ENTITY_PHRASES[kind]} is mentioned?",
                        "answers": [{"text": t, "answer_start": s} for s, t in answers]})
        absent = [kind for kind in ENTITY_PHRASES if kind not in mentioned]
        kind = absent[rng.integers(len(absent))]  # drawn either way: both files share a stream
        if unanswerable:
            qas.append({"id": f"{split}-{n}-{kind}", "is_impossible": True,
                        "question": f"Which {ENTITY_PHRASES[kind]} is mentioned?", "answers": []})
        else:
            for question in qas:
                del question["is_impossible"]
        if qas:
            data.append({"title": f"wnut-{split}-{n}",
                         "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "v2.0" if unanswerable else "1.1", "data": data}


# --------------------------------------------------------------------------------- building


def build(output: str | Path, *, trec_dir: Path = TREC_DIR, wnut_dir: Path = WNUT_DIR) -> None:
    """Every proxy set under `output` (kept if already there: the content is fixed)."""
    output = Path(output)
    for split in SPLITS:
        pairs = output / "trec_pairs" / f"{split}.tsv"
        if not pairs.exists():
            os.makedirs(pairs.parent, exist_ok=True)
            rows = question_pairs(read_trec(trec_dir / f"{split}.tsv"), _rng(split))
            write_tsv(pairs, ("text", "text_b", "label"), rows)
        missing = [(questions, unanswerable) for questions, unanswerable in
                   ((output / "wnut_questions" / f"{split}.json", True),
                    (output / "wnut_spans" / f"{split}.json", False))
                   if not questions.exists()]
        sentences = tagging.read_conll(wnut_dir / f"{split}.conll") if missing else []
        for questions, unanswerable in missing:
            os.makedirs(questions.parent, exist_ok=True)
            squad = span_questions(sentences, _rng(split), split, unanswerable=unanswerable)
            write_atomically(str(questions), json.dumps(squad, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bert.ablation_data",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True,
                        help="folder for trec_pairs/, wnut_questions/, wnut_spans/")
    args = parser.parse_args(argv)
    try:
        build(args.output)
    except (OSError, ValueError) as error:
        sys.exit(f"bert.ablation_data: error: {error}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
