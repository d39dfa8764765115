"""SQuAD: reading, windows and positions as run_squad makes them, answers, official scores, loss."""
from __future__ import annotations

import collections
import functools
import json
import math
import re
import string
import unicodedata
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from bert.tasks import TaskDataError
from bert.tasks import squad
from bert.wordpiece import WordPieceTokenizer
from tests.test_data_support import small_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
V1_TRAIN = FIXTURES / "squad_v1_train.json"
V2_DEV = FIXTURES / "squad_v2_dev.json"
GREEK = "alpha beta gamma delta epsilon zeta eta theta"


def _plain_words(text: str) -> list[str]:
    text = unicodedata.normalize("NFD", text.lower())
    return re.findall(r"\w+", "".join(c for c in text if unicodedata.category(c) != "Mn"))


@functools.cache
def fixture_tokenizer() -> WordPieceTokenizer:
    """Lower-casing WordPiece over the fixtures' words; longer words than seven letters become
    two pieces, so answers and windows meet sub-word tokens."""
    text = V1_TRAIN.read_text(encoding="utf-8") + V2_DEV.read_text(encoding="utf-8") + GREEK
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.punctuation]
    for word in _plain_words(text):
        vocab += [word] if len(word) <= 7 else [word[:4], "##" + word[4:]]
    return WordPieceTokenizer(list(dict.fromkeys(vocab)), do_lower_case=True)


# --- run_squad's feature conversion, restated as the original code does it ---------------------

def _original_words(context: str) -> tuple[list[str], list[int]]:
    words, char_to_word = [], []
    previous_is_space = True
    for char in context:
        if char in " \t\r\n" or ord(char) == 0x202F:
            previous_is_space = True
        else:
            if previous_is_space:
                words.append(char)
            else:
                words[-1] += char
            previous_is_space = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def _improve_answer_span(doc_ids, start, end, tokenizer, answer_text):
    answer_ids = tokenizer.encode(answer_text)
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if doc_ids[new_start:new_end + 1] == answer_ids:
                return new_start, new_end
    return start, end


def _check_is_max_context(doc_spans, current, position):
    best_score, best_index = None, None
    for index, (start, length) in enumerate(doc_spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_index = score, index
    return current == best_index


def original_features(example, tokenizer, max_seq_len, doc_stride, max_query_length):
    """One example's features as run_squad's convert_examples_to_features builds them."""
    words, char_to_word = _original_words(example.context)
    query = tokenizer.encode(example.question)[:max_query_length]
    token_to_word, word_to_token, doc_ids = [], [], []
    for i, word in enumerate(words):
        word_to_token.append(len(doc_ids))
        for token in tokenizer.encode(word):
            token_to_word.append(i)
            doc_ids.append(token)
    answer = None
    if example.answer_start >= 0:
        start_word = char_to_word[example.answer_start]
        end_word = char_to_word[example.answer_start + len(example.answer_text) - 1]
        start = word_to_token[start_word]
        end = word_to_token[end_word + 1] - 1 if end_word < len(words) - 1 else len(doc_ids) - 1
        answer = _improve_answer_span(doc_ids, start, end, tokenizer, example.answer_text)
    max_tokens = max_seq_len - len(query) - 3
    doc_spans, start = [], 0
    while start < len(doc_ids):
        length = min(len(doc_ids) - start, max_tokens)
        doc_spans.append((start, length))
        if start + length == len(doc_ids):
            break
        start += min(length, doc_stride)
    features = []
    for index, (start, length) in enumerate(doc_spans):
        ids = [tokenizer.cls_id, *query, tokenizer.sep_id, *doc_ids[start:start + length],
               tokenizer.sep_id]
        offset = len(query) + 2
        positions = (0, 0)
        if answer and start <= answer[0] and answer[1] <= start + length - 1:
            positions = (answer[0] - start + offset, answer[1] - start + offset)
        features.append(dict(
            input_ids=ids, segment_ids=[0] * offset + [1] * (length + 1), positions=positions,
            is_max_context=[_check_is_max_context(doc_spans, index, start + i)
                            for i in range(length)],
            words=[words[token_to_word[start + i]] for i in range(length)],
            word_starts=[char_to_word.index(token_to_word[start + i]) for i in range(length)],
            improved=answer is not None and answer[0] != word_to_token[start_word]))
    return features


@pytest.mark.parametrize("path,version_2", [(V1_TRAIN, False), (V2_DEV, True)])
# The last setting strides further than a window reaches, so windows are cut shorter.
@pytest.mark.parametrize("max_seq_len,doc_stride,max_query_length",
                         [(24, 5, 6), (40, 16, 20), (24, 30, 6)])
def test_windows_and_positions_match_run_squad(path, version_2, max_seq_len, doc_stride,
                                               max_query_length):
    tokenizer = fixture_tokenizer()
    examples = squad.read_squad(path, is_training=True, version_2_with_negative=version_2).examples
    arrays, windows = squad.featurize(examples, tokenizer, max_seq_len, doc_stride=doc_stride,
                                      max_query_length=max_query_length)
    expected = [(i, f) for i, e in enumerate(examples)
                for f in original_features(e, tokenizer, max_seq_len, doc_stride, max_query_length)]
    assert len(windows) == len(expected) == len(arrays["input_ids"])
    assert {name: a.shape for name, a in arrays.items()} == {
        "input_ids": (len(expected), max_seq_len), "segment_ids": (len(expected), max_seq_len),
        "input_mask": (len(expected), max_seq_len), "start_positions": (len(expected),),
        "end_positions": (len(expected),)}
    for row, (window, (example_index, feature)) in enumerate(zip(windows, expected)):
        length = len(feature["input_ids"])
        padding = [0] * (max_seq_len - length)
        assert window.example_index == example_index
        assert arrays["input_ids"][row].tolist() == feature["input_ids"] + padding
        assert arrays["segment_ids"][row].tolist() == feature["segment_ids"] + padding
        assert arrays["input_mask"][row].tolist() == [1] * length + padding
        labels = arrays["start_positions"][row], arrays["end_positions"][row]
        assert labels == feature["positions"]
        assert window.is_max_context.tolist() == feature["is_max_context"]
        # Each context token's characters lie inside the whitespace word it came from.
        context = examples[example_index].context
        for start, end, word, word_start in zip(window.char_starts, window.char_ends,
                                                feature["words"], feature["word_starts"]):
            assert word_start <= start < end <= word_start + len(word)
            assert context[start:end].lower() in word.lower()
    # Guards: the fixture exercises several windows per example, answers outside the window
    # (trained toward [CLS]), and answers that _improve_answer_span narrows inside a word.
    assert max(collections.Counter(w.example_index for w in windows).values()) >= 3
    assert (arrays["start_positions"] == 0).any() and (arrays["start_positions"] > 0).any()
    if not version_2:
        assert any(f["improved"] for _, f in expected)


def test_training_answers_not_at_answer_start_are_skipped_and_counted():
    data = squad.read_squad(V1_TRAIN, is_training=True, version_2_with_negative=False)
    # t4 and w4 name text that is not at their answer_start; t5 starts one character into its
    # word and t6 two characters early, yet their words contain the text, so run_squad keeps them.
    assert data.skipped == 2
    assert [e.qas_id for e in data.examples] == ["t1", "t2", "t3", "t5", "t6", "w1", "w2", "w3"]
    evaluation = squad.read_squad(V1_TRAIN, is_training=False, version_2_with_negative=False)
    assert evaluation.skipped == 0 and len(evaluation.examples) == 10


def test_unanswerable_questions_train_toward_cls_and_ignore_plausible_answers():
    data = squad.read_squad(V2_DEV, is_training=True, version_2_with_negative=True)
    by_id = {e.qas_id: e for e in data.examples}
    unanswerable = by_id["a2"]
    assert (unanswerable.answer_start, unanswerable.answer_text, unanswerable.gold_answers) == (
        -1, "", ())
    assert by_id["a1"].gold_answers == ("Martin Sekulić", "a math teacher named Martin Sekulić")
    arrays, windows = squad.featurize(data.examples, fixture_tokenizer(), 40, doc_stride=16,
                                      max_query_length=20)
    for row, window in enumerate(windows):
        if data.examples[window.example_index].is_impossible:
            assert arrays["start_positions"][row] == arrays["end_positions"][row] == 0


def _oracle_logits(arrays, rng):
    """Logits that put 10 on the trained start and end positions, over small noise."""
    shape = arrays["input_ids"].shape
    start, end = (rng.normal(0.0, 0.1, shape).astype(np.float32) for _ in range(2))
    rows = np.arange(shape[0])
    start[rows, arrays["start_positions"]] += 10.0
    end[rows, arrays["end_positions"]] += 10.0
    return start, end


@pytest.mark.parametrize("tokenizer_kind", ["wordpiece", "sentencepiece"])
def test_v2_answer_in_the_second_window_is_sliced_from_the_original_context(tokenizer_kind):
    tokenizer = fixture_tokenizer() if tokenizer_kind == "wordpiece" else small_tokenizer()
    train = squad.read_squad(V2_DEV, is_training=True, version_2_with_negative=True).examples
    # Two windows over the context (146 WordPiece or 360 SentencePiece tokens).
    max_seq_len, doc_stride = (128, 64) if tokenizer_kind == "wordpiece" else (256, 128)
    arrays, windows = squad.featurize(train, tokenizer, max_seq_len, doc_stride=doc_stride,
                                      max_query_length=16)
    rows = [r for r, w in enumerate(windows) if train[w.example_index].qas_id == "a1"]
    # The long context needs more than max_seq_len tokens; its answer, the last words, lies in
    # the second window only, so the first is trained toward [CLS].
    assert len(tokenizer.encode(train[0].context)) > max_seq_len
    assert len(rows) == 2
    assert arrays["start_positions"][rows[0]] == arrays["end_positions"][rows[0]] == 0
    window, row = windows[rows[1]], rows[1]
    first = arrays["start_positions"][row] - window.context_offset
    last = arrays["end_positions"][row] - window.context_offset
    assert train[0].context[window.char_starts[first]:window.char_ends[last]] == "Martin Sekulić"

    evaluation = squad.read_squad(V2_DEV, is_training=False, version_2_with_negative=True).examples
    start_logits, end_logits = _oracle_logits(arrays, np.random.default_rng(0))
    predictions = squad.postprocess(evaluation, windows, start_logits, end_logits, n_best_size=20,
                                    max_answer_length=30, version_2_with_negative=True)
    # Casing and accents come back as written, though the tokenizer lower-cases and strips them.
    assert predictions.answers == {"a1": "Martin Sekulić", "a2": "", "a3": "Đuka Mandić",
                                   "a4": "1891", "a5": ""}
    assert predictions.null_odds["a1"] < 0 < predictions.null_odds["a2"]
    scores = squad.evaluate(evaluation, predictions, version_2_with_negative=True)
    assert scores["exact"] == scores["f1"] == scores["best_f1"] == 100.0
    assert (scores["HasAns_total"], scores["NoAns_total"]) == (3, 2)


# --- post-processing on fixed logits -------------------------------------------------------------

def _greek_windows():
    """8 one-token words, query "which": windows over words 0-4 and 3-7, context from position 3."""
    example = squad.SquadExample("g", "Which", GREEK.title(), "", -1, False, ("Gamma Delta",))
    _, windows = squad.featurize([example], fixture_tokenizer(), 9, doc_stride=3,
                                 max_query_length=2)
    assert [w.char_starts.size for w in windows] == [5, 5]
    # delta (word 3) is max-context in window 0, epsilon (word 4) in window 1.
    assert windows[0].is_max_context.tolist() == [True, True, True, True, False]
    assert windows[1].is_max_context.tolist() == [False, True, True, True, True]
    start, end = np.zeros((2, 9), np.float32), np.zeros((2, 9), np.float32)
    # window 0: tokens CLS ? SEP alpha beta gamma delta epsilon SEP
    start[0, [0, 7, 5]] = [9.0, 8.0, 3.0]  # [CLS]; epsilon is not max-context here; gamma
    end[0, [0, 4, 6]] = [9.0, 6.0, 2.0]  # [CLS]; beta lies before gamma; delta
    # window 1: tokens CLS ? SEP delta epsilon zeta eta theta SEP
    start[1, [3, 4]] = [7.0, 4.0]  # delta is not max-context here; epsilon
    end[1, [6, 7, 4]] = [5.0, 1.5, 0.5]  # eta, theta, epsilon
    return example, windows, start, end


def test_postprocess_v1_keeps_only_valid_spans_and_never_answers_cls():
    example, windows, start, end = _greek_windows()
    short = squad.postprocess([example], windows, start, end, n_best_size=3, max_answer_length=2,
                              version_2_with_negative=False)
    assert short.answers == {"g": "Gamma Delta"} and short.null_odds == {}
    top = 1 / (1 + math.exp(-0.5))
    assert short.nbest["g"] == [
        dict(text="Gamma Delta", probability=pytest.approx(top), start_logit=3.0, end_logit=2.0),
        dict(text="Epsilon", probability=pytest.approx(1 - top), start_logit=4.0, end_logit=0.5)]
    longer = squad.postprocess([example], windows, start, end, n_best_size=3, max_answer_length=3,
                               version_2_with_negative=False)
    assert longer.answers == {"g": "Epsilon Zeta Eta"}


def test_postprocess_v2_null_score_is_the_minimum_over_windows():
    example, windows, start, end = _greek_windows()
    kwargs = dict(n_best_size=3, max_answer_length=2, version_2_with_negative=True)
    # Window 0's [CLS] scores 18 but window 1's scores 0: the null score is 0, the best span 5.
    result = squad.postprocess([example], windows, start, end, **kwargs)
    assert result.answers == {"g": "Gamma Delta"} and result.null_odds == {"g": -5.0}
    assert [n["text"] for n in result.nbest["g"]] == ["Gamma Delta", "Epsilon", ""]
    probabilities = np.exp([5.0, 4.5, 0.0]) / np.exp([5.0, 4.5, 0.0]).sum()
    np.testing.assert_allclose([n["probability"] for n in result.nbest["g"]], probabilities)
    start[1, 0] = end[1, 0] = 3.0  # null score 6 now beats the best span by 1
    result = squad.postprocess([example], windows, start, end, **kwargs)
    assert result.answers == {"g": ""} and result.null_odds == {"g": 1.0}
    lenient = squad.postprocess([example], windows, start, end, null_score_diff_threshold=1.5,
                                **kwargs)
    assert lenient.answers == {"g": "Gamma Delta"}


def test_prediction_files_are_the_official_json(tmp_path):
    example, windows, start, end = _greek_windows()
    result = squad.postprocess([example], windows, start, end, n_best_size=3, max_answer_length=2,
                               version_2_with_negative=True)
    squad.write_predictions(result, tmp_path / "p.json", null_odds_path=tmp_path / "odds.json",
                            nbest_path=tmp_path / "nbest.json")
    assert json.loads((tmp_path / "p.json").read_text()) == {"g": "Gamma Delta"}
    assert json.loads((tmp_path / "odds.json").read_text()) == {"g": -5.0}
    assert json.loads((tmp_path / "nbest.json").read_text())["g"][0]["text"] == "Gamma Delta"


# --- official scores -----------------------------------------------------------------------------

def test_normalize_answer_drops_case_punctuation_articles_and_spacing():
    assert squad.normalize_answer("The  Eiffel-Tower, (Paris)!") == "eiffeltower paris"
    assert squad.normalize_answer("an apple a day; theater") == "apple day theater"
    assert squad.normalize_answer("The") == ""


def test_v1_scores_take_the_best_answer_and_count_missing_predictions():
    gold = {"q1": ["the Eiffel Tower", "Eiffel Tower."], "q2": ["Gustave Eiffel"],
            "q3": ["The"], "q4": ["1889"]}
    predictions = {"q1": "eiffel tower", "q2": "Eiffel", "q3": "a"}  # q4 unanswered
    scores = squad.evaluate_v1(gold, predictions)
    # q1 exact; q2 F1 2*(1*0.5)/1.5; q3 both normalize to "" (exact 1, but v1.1 F1 0); q4 0.
    assert scores == pytest.approx({"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 4})


def test_v2_scores_splits_and_best_thresholds_as_the_official_script():
    gold = {"q1": ["Paris"], "q2": [], "q3": ["New York City", "NYC"], "q4": []}
    predictions = {"q1": "Paris", "q2": "", "q3": "New York", "q4": "London"}
    null_odds = {"q1": -2.0, "q2": 3.0, "q3": 0.5, "q4": 1.5}
    scores = squad.evaluate_v2(gold, predictions, null_odds)
    # Headline: odds over 1.0 are scored as "" (q2, q4: both unanswerable, so both right).
    # q3's F1: precision 1, recall 2/3 -> 0.8.
    assert scores == pytest.approx({
        "exact": 75.0, "f1": 95.0, "total": 4,
        "HasAns_exact": 50.0, "HasAns_f1": 90.0, "HasAns_total": 2,
        "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 2,
        # By rising odds from 2 (both unanswerable right): q1 +1 -> 3 at -2; q3 +0 / +0.8;
        # q4 answered wrongly -1; q2 answered "" 0.
        "best_exact": 75.0, "best_exact_thresh": -2.0, "best_f1": 95.0, "best_f1_thresh": 0.5})
    plain = squad.evaluate_v2(gold, predictions)
    # Without null odds: raw scores (q4 wrong), no best_* keys. Empty vs empty F1 is 1 in v2.0.
    assert plain == pytest.approx({"exact": 50.0, "f1": 70.0, "total": 4, "HasAns_exact": 50.0,
                                   "HasAns_f1": 90.0, "HasAns_total": 2, "NoAns_exact": 50.0,
                                   "NoAns_f1": 50.0, "NoAns_total": 2})
    assert squad.evaluate_v2({"q": ["The"]}, {"q": "an"})["f1"] == 100.0


def test_v2_scores_need_every_prediction():
    with pytest.raises(ValueError, match="1 questions have no prediction"):
        squad.evaluate_v2({"q1": ["x"], "q2": []}, {"q1": "x"})


# --- loss sums -----------------------------------------------------------------------------------

def test_loss_sums_average_start_and_end_cross_entropy_over_real_windows():
    rng = np.random.default_rng(1)
    start, end = rng.normal(size=(2, 3, 7)).astype(np.float32)
    start_positions, end_positions = np.array([0, 3, 6]), np.array([0, 5, 2])
    weights = np.array([1.0, 1.0, 0.0], np.float32)  # the last row is padding
    input_mask = np.ones((3, 7), np.int32)
    input_mask[0, 5:] = 0  # a shorter window: its padding is outside the softmax
    batch = dict(start_positions=start_positions, end_positions=end_positions,
                 example_weights=weights, input_mask=input_mask)
    sums = squad.loss_sums((jnp.asarray(start), jnp.asarray(end)), batch)
    changed_padding = start.copy()
    changed_padding[0, 5:] = 50.0
    assert float(squad.loss_sums((jnp.asarray(changed_padding), jnp.asarray(end)), batch)[
        "loss_sum"]) == pytest.approx(float(sums["loss_sum"]), rel=1e-6)

    def nll(logits, labels):
        logits = np.where(input_mask > 0, logits, -np.inf)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return -log_probs[np.arange(3), labels]

    per_window = (nll(start, start_positions) + nll(end, end_positions)) / 2
    assert float(sums["count"]) == 2.0
    assert float(sums["loss_sum"]) == pytest.approx(per_window[:2].sum(), rel=1e-5)
    hits = lambda logits, labels: float(  # noqa: E731
        ((np.where(input_mask > 0, logits, -np.inf).argmax(-1) == labels) * weights).sum())
    assert float(sums["start_correct"]) == hits(start, start_positions)
    assert float(sums["end_correct"]) == hits(end, end_positions)
    halves = [squad.loss_sums((jnp.asarray(start[s]), jnp.asarray(end[s])),
                              {k: v[s] for k, v in batch.items()})
              for s in (slice(0, 1), slice(1, 3))]
    assert float(halves[0]["loss_sum"] + halves[1]["loss_sum"]) == pytest.approx(
        float(sums["loss_sum"]), rel=1e-6)


# --- bad input -----------------------------------------------------------------------------------

def _mutated(tmp_path, mutate) -> Path:
    dataset = json.loads(V2_DEV.read_text(encoding="utf-8"))
    mutate(dataset)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dataset), encoding="utf-8")
    return path


def _qa(dataset, index=0):
    return dataset["data"][0]["paragraphs"][0]["qas"][index]


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("data"), "missing field 'data'"),
    (lambda d: d["data"][0]["paragraphs"][0].pop("context"),
     r"paragraphs\[0\]: missing field 'context'"),
    (lambda d: _qa(d).pop("id"), r"qas\[0\]: missing field 'id'"),
    (lambda d: _qa(d, 1).update(id="a1"),
     "question 'a1': field 'id' is used by an earlier question"),
    (lambda d: _qa(d).pop("question"), "question 'a1': missing field 'question'"),
    (lambda d: _qa(d).update(is_impossible="no"),
     "question 'a1': field 'is_impossible' must be bool"),
    (lambda d: _qa(d)["answers"][1].update(answer_start="12"),
     r"question 'a1': answers\[1\]: field 'answer_start' must be int"),
    (lambda d: _qa(d)["answers"][0].update(answer_start=10_000),
     r"question 'a1': answers\[0\]: field 'answer_start' 10000 puts the answer outside"),
    (lambda d: _qa(d)["answers"][0].pop("text"),
     r"question 'a1': answers\[0\]: missing field 'text'"),
    (lambda d: _qa(d).update(answers=[]), "question 'a1': field 'answers' is empty"),
])
def test_malformed_records_name_the_file_question_and_field(tmp_path, mutate, message):
    path = _mutated(tmp_path, mutate)
    with pytest.raises(TaskDataError, match=message) as raised:
        squad.read_squad(path, is_training=True, version_2_with_negative=True)
    assert str(path) in str(raised.value)


def test_v1_task_refuses_unanswerable_questions_and_bad_json_names_the_line(tmp_path):
    with pytest.raises(TaskDataError, match="question 'a2': field 'is_impossible' is true"):
        squad.read_squad(V2_DEV, is_training=False, version_2_with_negative=False)
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    with pytest.raises(TaskDataError, match=r"broken.json:2: invalid JSON"):
        squad.read_squad(broken, is_training=False, version_2_with_negative=True)


def test_windows_need_room_for_context():
    with pytest.raises(ValueError, match="max_query_length"):
        squad.featurize([], fixture_tokenizer(), 16, doc_stride=4, max_query_length=13)
