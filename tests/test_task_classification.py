"""GLUE and table readers on files in their real layouts; features, metrics, losses, submissions."""
from __future__ import annotations

import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from bert import heads
from bert.model import BertConfig
from bert.tasks import TaskDataError
from bert.tasks import classification as cls
from bert.wordpiece import WordPieceTokenizer

FIXTURES = Path(__file__).parent / "fixtures"
GLUE = FIXTURES / "glue"
TABLES = FIXTURES / "classify"


def tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_directory(FIXTURES / "wordpiece")


# ------------------------------------------------------------------------------------- GLUE


def test_cola_train_has_no_header_and_its_label_is_the_second_column():
    examples, skipped = cls.read_glue(GLUE / "CoLA/train.tsv", "cola", "train")
    assert skipped == 0
    assert examples == [
        cls.Example("0", "Our friends won't buy this analysis, let alone the next one we propose.",
                    None, "1"),
        cls.Example("1", "They drank the pub.", None, "0"),
        cls.Example("2", 'The more "you eat, the less you want.', None, "1"),
    ]


def test_cola_test_has_a_header_and_an_index():
    examples, _ = cls.read_glue(GLUE / "CoLA/test.tsv", "cola", "test")
    assert examples == [cls.Example("0", "Bill whistled past the house.", None, None),
                        cls.Example("1", "The car honked its way down the road.", None, None)]


def test_qqp_short_rows_are_skipped_and_stray_quotes_do_not_merge_rows():
    examples, skipped = cls.read_glue(GLUE / "QQP/train.tsv", "qqp", "train")
    assert skipped == 2  # one question broken over two lines
    assert [(e.guid, e.label) for e in examples] == [("133273", "0"), ("402555", "1")]
    assert examples[1].text_a == '"What does the mean?'
    assert examples[1].text_b == 'Why do people say "the?'
    test, _ = cls.read_glue(GLUE / "QQP/test.tsv", "qqp", "test")
    assert test[0].text_a.startswith("Why am I") and test[0].text_b.startswith("Find the")


def test_mnli_gold_label_is_the_last_column_in_every_split():
    train, _ = cls.read_glue(GLUE / "MNLI/train.tsv", "mnli", "train")
    assert [e.label for e in train] == ["neutral", "entailment", "entailment"]
    assert train[1].text_a.endswith('if " if they decide')
    dev, skipped = cls.read_glue(GLUE / "MNLI/dev_mismatched.tsv", "mnli", "dev")
    # Row 1's label1 is "neutral"; its gold label (last column) is "contradiction".
    assert skipped == 0 and [e.label for e in dev] == ["contradiction", "contradiction"]
    assert dev[1].text_a.startswith('"The answer') and dev[1].text_b.startswith("Dictionaries")
    test, _ = cls.read_glue(GLUE / "MNLI/test_matched.tsv", "mnli", "test")
    assert test == [cls.Example("0", "Hierbas, ans seco, ans dulce, and frigola are just a few "
                                "names worth keeping a look-out for.",
                                "Hierbas is a name worth looking out for.", None)]


@pytest.mark.parametrize("task, file, split, expected", [
    ("sst2", "SST-2/dev.tsv", "dev",
     ("0", "it 's a charming and often affecting journey . ", None, "1")),
    ("mrpc", "MRPC/train.tsv", "train",
     ("0", 'Amrozi accused his brother , whom he called " the witness " , of deliberately '
      "distorting his evidence .", 'Referring to him as only " the witness " , Amrozi accused his '
      "brother of deliberately distorting his evidence .", "1")),
    ("mrpc", "MRPC/test.tsv", "test",
     ("0", "PCCW 's chief operating officer , Mike Butcher , and Alex Arena , the chief financial "
      "officer , will report directly to Mr So .", "Current Chief Operating Officer Mike Butcher "
      "and Group Chief Financial Officer Alex Arena will report to So .", None)),
    ("stsb", "STS-B/dev.tsv", "dev",
     ("0", "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", "5.000")),
    ("stsb", "STS-B/test.tsv", "test",
     ("0", "A girl is styling her hair.", "A girl is brushing her hair.", None)),
    ("qnli", "QNLI/dev.tsv", "dev",
     ("0", "What came into force after the new constitution was herald?", "As of that day, the "
      "new constitution heralding the Second Republic came into force.", "entailment")),
    ("rte", "RTE/test.tsv", "test",
     ("0", "Mangla was summoned after Madhumita's sister Nidhi Shukla, who was the first witness "
      "in the case.", "Shukla is related to Mangla.", None)),
    ("wnli", "WNLI/train.tsv", "train",
     ("0", "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
      "The carrot had a hole.", "1")),
    ("ax", "diagnostic/diagnostic.tsv", "test",
     ("0", "The cat sat on the mat.", "The cat did not sit on the mat.", None)),
    ("ax", "diagnostic/diagnostic-full.tsv", "dev",
     ("0", "The cat sat on the mat.", "The cat did not sit on the mat.", "contradiction")),
])
def test_first_example_of_each_layout(task, file, split, expected):
    examples, skipped = cls.read_glue(GLUE / file, task, split)
    assert skipped == 0
    assert examples[0] == cls.Example(*expected)


def test_label_orders_are_the_original_code_s():
    assert cls.glue_task("mnli").labels == ("contradiction", "entailment", "neutral")
    assert cls.glue_task("ax").labels == cls.glue_task("mnli").labels
    assert cls.glue_task("qnli").labels == cls.glue_task("rte").labels == (
        "entailment", "not_entailment")
    for name in ("cola", "sst2", "mrpc", "qqp", "wnli"):
        assert cls.glue_task(name).labels == ("0", "1")
    assert cls.glue_task("stsb").regression and cls.glue_task("stsb").num_labels == 1


def test_an_unknown_label_names_file_line_and_column(tmp_path):
    bad = tmp_path / "train.tsv"
    text = (GLUE / "MNLI/train.tsv").read_text(encoding="utf-8")
    bad.write_text(text.replace("entailment\tentailment\n", "entailment\tmaybe\n", 1))
    with pytest.raises(TaskDataError, match=rf"{bad}:3: label \(column 12\) is 'maybe', not one "
                                            r"of the labels \['contradiction'"):
        cls.read_glue(bad, "mnli", "train")
    scores = tmp_path / "dev.tsv"
    scores.write_text((GLUE / "STS-B/dev.tsv").read_text().replace("4.750", "high"))
    with pytest.raises(TaskDataError, match=rf"{scores}:3: label \(column 10\) is 'high', not a number"):
        cls.read_glue(scores, "stsb", "dev")


def test_missing_split_file_and_task_are_errors(tmp_path):
    with pytest.raises(ValueError, match="task ax has no train file"):
        cls.read_glue(GLUE / "diagnostic/diagnostic.tsv", "ax", "train")
    with pytest.raises(ValueError, match="unknown GLUE task 'mnli_m'"):
        cls.glue_task("mnli_m")
    with pytest.raises(TaskDataError, match=f"{tmp_path / 'none.tsv'}: no such file"):
        cls.read_glue(tmp_path / "none.tsv", "rte", "dev")


# ----------------------------------------------------------------------------- table reader


def test_latin1_csv_with_quoted_commas_and_doubled_quotes():
    examples = cls.read_table(TABLES / "reviews_latin1.csv", text="review", label="label",
                              index="id", encoding="latin-1", labels=["neg", "pos"])
    assert examples == [
        cls.Example("r1", "a charming, often affecting café journey", None, "pos"),
        cls.Example("r2", 'the "best" film of the year? hardly', None, "neg"),
        cls.Example("r3", "naïve and over-long", None, "neg"),
    ]
    assert cls.infer_labels(examples) == ("neg", "pos")
    with pytest.raises(TaskDataError, match=r"reviews_latin1.csv:2: not valid utf-8 \(byte 0xe9 at byte offset \d+ of the file, column \d+ .*encoding"):
        cls.read_table(TABLES / "reviews_latin1.csv", text="review", label="label")


def test_positions_work_with_or_without_a_header():
    named = cls.read_table(TABLES / "reviews_latin1.csv", text=1, label=2, encoding="latin-1")
    assert [(e.guid, e.label) for e in named] == [("0", "pos"), ("1", "neg"), ("2", "neg")]
    pairs = cls.read_table(TABLES / "scores.tsv", text=0, pair=1, label=2, header=False,
                           regression=True)
    assert pairs[1] == cls.Example("1", "A woman is dancing.", "A man is talking.", "0")
    quoted = TABLES / "reviews_latin1.csv"
    both = cls.read_table(quoted, text=1, label=2, encoding="latin-1", quoting="none")
    assert both[1].text_a == '"the ""best"" film of the year? hardly"'  # quotes kept as text
    with pytest.raises(ValueError, match="text column 'sentence' is a name, but .* has no header"):
        cls.read_table(TABLES / "scores.tsv", text="sentence", header=False)


def test_tsv_reads_quotes_as_text_unless_told_otherwise(tmp_path):
    path = tmp_path / "stray.tsv"
    path.write_text('text\tlabel\n"unclosed quote\t1\nnext row\t0\n')
    rows = cls.read_table(path, text="text", label="label")
    assert [(e.text_a, e.label) for e in rows] == [('"unclosed quote', "1"), ("next row", "0")]
    merged = cls.read_table(path, text="text", quoting="minimal")
    assert len(merged) == 1  # what a CSV reader makes of it


def test_jsonl_skips_blank_lines_and_checks_labels():
    examples = cls.read_table(TABLES / "questions.jsonl", text="question", label="label")
    assert [e.label for e in examples] == ["NUM", "LOC", "HUM"]
    assert examples[1].text_a == "What county is Modesto, California in?"
    assert cls.infer_labels(examples) == ("HUM", "LOC", "NUM")
    with pytest.raises(TaskDataError, match=r"questions.jsonl:4: label field 'label' is 'HUM', "
                                            r"not one of the labels \['LOC', 'NUM'\]"):
        cls.read_table(TABLES / "questions.jsonl", text="question", label="label",
                       labels=["LOC", "NUM"])
    with pytest.raises(TaskDataError, match=r"questions.jsonl:1: no text field 'sentence'"):
        cls.read_table(TABLES / "questions.jsonl", text="sentence", label="label")


def test_table_rows_that_break_the_layout_are_named(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine", "label": 1}\n{"text": ["a list"], "label": 0}\n{oops\n')
    with pytest.raises(TaskDataError, match=r"bad.jsonl:2: text field 'text' is \['a list'\]"):
        cls.read_table(bad_json, text="text", label="label")
    bad_json.write_text('{"text": "fine", "label": 1}\n{oops\n')
    with pytest.raises(TaskDataError, match=r"bad.jsonl:2: invalid JSON"):
        cls.read_table(bad_json, text="text", label="label")
    short = tmp_path / "short.tsv"
    short.write_text("good\t1\nno label here\n")
    with pytest.raises(TaskDataError, match=r"short.tsv:2: no label field 1"):
        cls.read_table(short, text=0, label=1, header=False)


def test_integer_labels_are_ordered_numerically():
    examples = [cls.Example(str(i), "x", None, label) for i, label in enumerate("10 2 0 2".split())]
    assert cls.infer_labels(examples) == ("0", "2", "10")


# ------------------------------------------------------------------------------ featurizing


def _original_truncate_seq_pair(tokens_a: list, tokens_b: list, max_length: int) -> None:
    """google-research/bert run_classifier.py, verbatim."""
    while True:
        total_length = len(tokens_a) + len(tokens_b)
        if total_length <= max_length:
            break
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


@pytest.mark.parametrize("len_a, len_b, budget", [(5, 3, 6), (3, 3, 5), (2, 9, 4), (7, 7, 1),
                                                  (4, 0, 2), (3, 2, 10)])
def test_pairs_are_truncated_longest_first_popping_b_on_ties(len_a, len_b, budget):
    a, b = list(range(len_a)), list(range(100, 100 + len_b))
    expected_a, expected_b = list(a), list(b)
    _original_truncate_seq_pair(expected_a, expected_b, budget)
    cls.truncate_pair(a, b, budget)
    assert (a, b) == (expected_a, expected_b)
    if (len_a, len_b, budget) == (3, 3, 5):
        assert (a, b) == ([0, 1, 2], [100, 101])


def test_featurize_builds_cls_a_sep_b_sep_with_segments_and_labels():
    tok = tokenizer()
    ids = {t: i for i, t in enumerate(tok.vocab)}
    spec = cls.glue_task("rte")
    examples = [cls.Example("0", "The cat sat on the mat.", "A dog", "not_entailment"),
                cls.Example("1", "Unable", "the quick brown fox jumped over", None)]
    features = cls.featurize(examples, tok, 10, spec)
    assert set(features) == {"input_ids", "segment_ids", "input_mask", "label_ids"}
    # Row 0: 7 + 2 tokens fit in 10 - 3 after two pops from the longer first sentence.
    row0 = ["[CLS]", "the", "cat", "sat", "on", "the", "[SEP]", "a", "dog", "[SEP]"]
    # Row 1: "un ##able" (2) and 7 tokens: b loses 2 tokens.
    row1 = ["[CLS]", "un", "##able", "[SEP]", "the", "quick", "brown", "fox", "jump", "[SEP]"]
    np.testing.assert_array_equal(features["input_ids"], [[ids[t] for t in row0],
                                                          [ids[t] for t in row1]])
    np.testing.assert_array_equal(features["segment_ids"], [[0] * 7 + [1] * 3, [0] * 4 + [1] * 6])
    np.testing.assert_array_equal(features["input_mask"], np.ones((2, 10)))
    np.testing.assert_array_equal(features["label_ids"], [1, 0])
    assert all(a.dtype == np.int32 for a in features.values())


def test_single_sentences_are_padded_and_scores_become_label_values():
    tok = tokenizer()
    single = cls.featurize([cls.Example("0", "good movie", None, "1")], tok, 6,
                           cls.glue_task("sst2"))
    np.testing.assert_array_equal(single["input_ids"][0], [tok.cls_id, tok.vocab.index("good"),
                                                           tok.vocab.index("movie"), tok.sep_id,
                                                           0, 0])
    np.testing.assert_array_equal(single["input_mask"][0], [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(single["segment_ids"][0], [0] * 6)
    examples, _ = cls.read_glue(GLUE / "STS-B/dev.tsv", "stsb", "dev")
    scores = cls.featurize(examples, tok, 16, cls.glue_task("stsb"))
    assert scores["label_values"].dtype == np.float32
    np.testing.assert_allclose(scores["label_values"], [5.0, 4.75])
    assert "label_ids" not in scores


def test_a_dev_label_missing_from_inferred_labels_is_named():
    spec = cls.table_task(("neg", "pos"))
    with pytest.raises(TaskDataError, match=r"example 7: label 'meh' is not one of \['neg', 'pos'\]"):
        cls.featurize([cls.Example("7", "good", None, "meh")], tokenizer(), 8, spec)


# ---------------------------------------------------------------------------------- metrics

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("case", range(6))
def test_classification_metrics_match_sklearn(case):
    n = int(RNG.integers(5, 60))
    labels = RNG.integers(0, 2, n)
    predictions = np.where(RNG.random(n) < 0.7, labels, 1 - labels)
    assert cls.accuracy(predictions, labels) == pytest.approx(
        sklearn.metrics.accuracy_score(labels, predictions))
    assert cls.f1(predictions, labels) == pytest.approx(sklearn.metrics.f1_score(labels, predictions))
    assert cls.matthews_corr(predictions, labels) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions))
    three_labels, three_predictions = RNG.integers(0, 3, n), RNG.integers(0, 3, n)
    assert cls.matthews_corr(three_predictions, three_labels) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(three_labels, three_predictions))


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("predictions, labels", [
    ([1, 1, 1, 1], [0, 1, 0, 1]),  # constant predictions
    ([0, 1, 0, 1], [1, 1, 1, 1]),  # constant labels
    ([0, 0, 0], [0, 0, 0]),  # no positives anywhere
    ([1, 0, 1], [1, 0, 1]),
    ([1, 0, 1], [0, 1, 0]),
])
def test_classification_metric_edge_cases_match_sklearn(predictions, labels):
    predictions, labels = np.array(predictions), np.array(labels)
    assert cls.matthews_corr(predictions, labels) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions))
    assert cls.f1(predictions, labels) == pytest.approx(
        sklearn.metrics.f1_score(labels, predictions, zero_division=0.0))


@pytest.mark.parametrize("case", range(6))
def test_correlations_match_scipy_with_ties(case):
    n = int(RNG.integers(3, 50))
    labels = np.round(RNG.uniform(0, 5, n) * 2) / 2  # STS-B-like scores with many ties
    predictions = (labels + RNG.normal(0, 1.5, n)).astype(np.float32)
    if case % 2:
        predictions = np.round(predictions)
    assert cls.pearson(predictions, labels) == pytest.approx(
        scipy.stats.pearsonr(predictions, labels).statistic, abs=1e-6)
    assert cls.spearman(predictions, labels) == pytest.approx(
        scipy.stats.spearmanr(predictions, labels).statistic, abs=1e-6)


def test_constant_predictions_give_zero_correlation_not_nan():
    labels = np.array([0.0, 1.0, 2.5, 5.0])
    constant = np.full(4, 2.0, np.float32)
    with pytest.warns(scipy.stats.ConstantInputWarning):
        assert np.isnan(scipy.stats.pearsonr(constant, labels).statistic)  # why 0.0 is chosen
    assert cls.pearson(constant, labels) == 0.0
    assert cls.spearman(constant, labels) == 0.0
    assert cls.pearson(labels, labels) == pytest.approx(1.0)
    assert cls.spearman(-labels, labels) == pytest.approx(-1.0)


def test_each_task_reports_its_metrics_by_name():
    predictions, labels = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])
    assert cls.compute_metrics(cls.glue_task("mnli"), predictions, labels) == {"accuracy": 0.75}
    assert cls.compute_metrics(cls.glue_task("mnli"), predictions, labels, mismatched=True) == {
        "accuracy_mm": 0.75}
    cola = cls.compute_metrics(cls.glue_task("cola"), np.ones(4, int), np.array([0, 1, 0, 1]))
    assert cola == {"matthews_corr": 0.0, "accuracy": 0.5}
    assert set(cls.compute_metrics(cls.glue_task("mrpc"), predictions % 2, labels % 2)) == {
        "accuracy", "f1"}
    for spec in cls.GLUE_TASKS.values():
        assert spec.selection_metric in spec.metrics
    assert cls.glue_task("stsb").selection_metric == "spearman"
    assert cls.glue_task("cola").selection_metric == "matthews_corr"


# ----------------------------------------------------------------------------------- losses


def _numpy_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_classification_loss_sums_weight_out_padding_rows():
    logits = RNG.normal(size=(4, 3)).astype(np.float32)
    labels = np.array([2, 0, 1, 1], np.int32)
    weights = np.array([1, 1, 1, 0], np.float32)
    sums = cls.classification_loss_sums(jnp.asarray(logits), {
        "label_ids": jnp.asarray(labels), "example_weights": jnp.asarray(weights)})
    nll = -_numpy_log_softmax(logits.astype(np.float64))[np.arange(4), labels]
    assert float(sums["loss_sum"]) == pytest.approx(float(nll[:3].sum()), rel=1e-5)
    assert float(sums["count"]) == 3.0
    assert float(sums["correct"]) == float((logits.argmax(-1) == labels)[:3].sum())


def test_regression_loss_sums_are_squared_errors():
    scores = np.array([[1.0], [2.5], [4.0]], np.float32)
    batch = {"label_values": jnp.array([1.5, 2.5, 0.0]), "example_weights": jnp.array([1.0, 1.0, 0.0])}
    sums = cls.regression_loss_sums(jnp.asarray(scores), batch)
    assert set(sums) == {"loss_sum", "count"}
    assert float(sums["loss_sum"]) == pytest.approx(0.25)
    assert float(sums["count"]) == 2.0


def test_the_family_trains_a_one_score_head_on_squared_error_and_labels_on_cross_entropy():
    config = BertConfig.from_preset("tiny", vocab_size=16, max_position_embeddings=16)
    stsb = cls.Classification.objective(heads.BertForSequenceClassification(config, 1))
    rte = cls.Classification.objective(heads.BertForSequenceClassification(config, 2))
    assert stsb.sum_keys == ("loss_sum", "count")
    assert rte.sum_keys == ("loss_sum", "correct", "count")
    scores = jnp.array([[1.0], [2.5], [4.0]])
    batch = {"label_values": jnp.array([1.5, 2.5, 0.0]), "example_weights": jnp.array([1.0, 1.0, 0.0])}
    assert float(stsb.sums(scores, batch)["loss_sum"]) == pytest.approx(0.25)


# ------------------------------------------------------------------------------ submissions


def test_submission_uses_label_strings_and_the_leaderboard_file_names(tmp_path):
    spec = cls.glue_task("mnli")
    examples, _ = cls.read_glue(GLUE / "MNLI/dev_mismatched.tsv", "mnli", "dev")
    logits = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, -1.0]])
    path = tmp_path / cls.submission_file(spec, mismatched=True)
    cls.write_predictions(path, spec, examples, cls.predictions_from_outputs(logits, spec))
    assert path.name == "MNLI-mm.tsv"
    assert path.read_text() == "index\tprediction\n0\tentailment\n1\tcontradiction\n"
    names = {name: cls.submission_file(cls.glue_task(name)) for name in cls.GLUE_TASKS}
    assert names == {"cola": "CoLA.tsv", "sst2": "SST-2.tsv", "mrpc": "MRPC.tsv", "qqp": "QQP.tsv",
                     "stsb": "STS-B.tsv", "mnli": "MNLI-m.tsv", "qnli": "QNLI.tsv",
                     "rte": "RTE.tsv", "wnli": "WNLI.tsv", "ax": "AX.tsv"}


def test_regression_submission_writes_scores(tmp_path):
    spec = cls.glue_task("stsb")
    examples, _ = cls.read_glue(GLUE / "STS-B/dev.tsv", "stsb", "dev")
    predictions = cls.predictions_from_outputs(np.array([[4.8765], [0.5]], np.float32), spec)
    cls.write_predictions(tmp_path / "STS-B.tsv", spec, examples, predictions)
    assert (tmp_path / "STS-B.tsv").read_text() == "index\tprediction\n0\t4.877\n1\t0.500\n"


def test_binary_submission_keeps_the_test_file_index(tmp_path):
    shutil.copy(GLUE / "CoLA/test.tsv", tmp_path / "test.tsv")
    spec = cls.glue_task("cola")
    examples, _ = cls.read_glue(tmp_path / "test.tsv", spec, "test")
    cls.write_predictions(tmp_path / "CoLA.tsv", spec, examples, np.array([1, 0]))
    assert (tmp_path / "CoLA.tsv").read_text() == "index\tprediction\n0\t1\n1\t0\n"
