"""SWAG CSV reading, one sentence pair per choice, the loss over choices, predictions."""
from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from bert.tasks import TaskDataError
from bert.tasks import multiple_choice as mc
from bert.wordpiece import WordPieceTokenizer

FIXTURES = Path(__file__).parent / "fixtures"
SWAG = FIXTURES / "swag"


def tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_directory(FIXTURES / "wordpiece")


def test_official_val_and_test_files():
    questions = mc.read_swag(SWAG / "val.csv")
    assert [(q.id, q.label) for q in questions] == [("0", 2), ("1", 2)]
    assert questions[0] == mc.Question(
        "0", "Students lower their eyes nervously.", "She",
        ("pats her shoulder, then saunters toward someone.", "turns with two students.",
         "walks slowly towards someone.", "wheels around as her dog thunders out."), 2)
    assert questions[1].endings[1] == ("stops, listening to a cup of coffee with the seated "
                                       "woman, who's standing \"still\".")
    test = mc.read_swag(SWAG / "test.csv")
    assert test[0].label is None and test[0].context == "A man is sitting on a roof."


def test_bad_files_name_file_line_and_field(tmp_path):
    text = (SWAG / "val.csv").read_text()
    (tmp_path / "label.csv").write_text(text.replace("thunders out.,2", "thunders out.,4"))
    with pytest.raises(TaskDataError, match=r"label.csv:2: label is '4', not 0-3"):
        mc.read_swag(tmp_path / "label.csv")
    (tmp_path / "header.csv").write_text(text.replace(",ending3,", ",ending_3,", 1))
    with pytest.raises(TaskDataError, match=r"header.csv:1: no column ending3"):
        mc.read_swag(tmp_path / "header.csv")
    (tmp_path / "short.csv").write_text(text.replace(",gold,looks", ",looks"))
    with pytest.raises(TaskDataError, match=r"short.csv:3: 11 fields, the header has 12"):
        mc.read_swag(tmp_path / "short.csv")


def test_each_choice_is_sent1_then_sent2_and_its_ending():
    tok = tokenizer()
    question = mc.Question("q", "The cat sat.", "He", ("jumped over the dog", "won", "", "lost"), 3)
    features = mc.featurize([question, question], tok, 10)
    assert {k: v.shape for k, v in features.items()} == {
        "input_ids": (2, 4, 10), "segment_ids": (2, 4, 10), "input_mask": (2, 4, 10),
        "label_ids": (2,)}
    rows = [[tok.id_to_token(int(i)) for i in row if i] for row in features["input_ids"][0]]
    assert rows == [
        # "he jump ##ed over the dog" (6) and "the cat sat ." (4) fit 7 by popping B three times.
        ["[CLS]", "the", "cat", "sat", ".", "[SEP]", "he", "jump", "##ed", "[SEP]"],
        ["[CLS]", "the", "cat", "sat", ".", "[SEP]", "he", "won", "[SEP]"],
        ["[CLS]", "the", "cat", "sat", ".", "[SEP]", "he", "[SEP]"],
        ["[CLS]", "the", "cat", "sat", ".", "[SEP]", "he", "lost", "[SEP]"],
    ]
    np.testing.assert_array_equal(features["segment_ids"][0, 0], [0] * 6 + [1] * 4)
    np.testing.assert_array_equal(features["input_mask"][0, 2], [1] * 8 + [0] * 2)
    np.testing.assert_array_equal(features["label_ids"], [3, 3])


def test_loss_sums_are_cross_entropy_over_the_choices():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 4, 1)).astype(np.float32)
    labels = np.array([1, 3, 0], np.int32)
    weights = np.array([1, 1, 0], np.float32)
    sums = mc.loss_sums(jnp.asarray(scores), {"label_ids": jnp.asarray(labels),
                                              "example_weights": jnp.asarray(weights)})
    flat = scores[..., 0].astype(np.float64)
    log_probs = flat - flat.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    assert float(sums["loss_sum"]) == pytest.approx(-log_probs[[0, 1], labels[:2]].sum(), rel=1e-5)
    assert float(sums["count"]) == 2.0


def test_accuracy_and_prediction_file(tmp_path):
    questions = mc.read_swag(SWAG / "val.csv")
    predictions = mc.predictions_from_outputs(np.array([[0.1, 0.2, 0.9, 0.0], [2.0, 0.0, 1.0, 0.5]]))
    np.testing.assert_array_equal(predictions, [2, 0])
    assert mc.compute_metrics(predictions, np.array([q.label for q in questions])) == {
        "accuracy": 0.5}
    mc.write_predictions(tmp_path / "predictions.csv", questions, predictions)
    assert (tmp_path / "predictions.csv").read_text() == "id,label\n0,2\n1,0\n"
