"""SQuAD v1.1 / v2.0 span question answering: reader, windows, loss sums, answers, official scores.

The recipe is google-research/bert's `run_squad.py`: the question is cut to `max_query_length`
tokens; the context is tokenized once and cut into windows whose starts are `doc_stride` tokens
apart (the last window reaches the end), each fed as `[CLS] question [SEP] window [SEP]`; a token
seen by several windows belongs to the one where it has the most context on both sides. Training
answers are mapped to tokens through character offsets, and windows that do not contain the
answer (and every window of an unanswerable v2.0 question) are trained toward [CLS] (position 0).
Predicted answers are sliced out of the original context through the same offsets, never decoded
from tokens, so casing, accents and spacing come back as written.

Scores follow the published definitions of the official v1.1 and v2.0 evaluation scripts, keys
and 0-100 scale included; v2.0's best thresholds are searched over the null odds
(null score minus best span score) that post-processing writes, as the official script does.
The `Squad` family (bert/tasks/family.py) wires them into bert.finetune.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import os
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from bert import heads
from bert.files import write_atomically
from bert.model import BertConfig
from bert.objectives import cross_entropy
from bert.tasks import SkipCount, TaskDataError
from bert.tasks.classification import text_lines
from bert.tasks.family import FineTuneTask, Family, Split, check
from bert.tokenizer import Tokenizer

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question on one context paragraph."""

    qas_id: str
    question: str
    context: str
    answer_text: str  # the answer trained on (the first of `answers`); "" when there is none
    answer_start: int  # its character offset in `context`; -1 when there is none
    is_impossible: bool  # v2.0: the context does not answer the question
    gold_answers: tuple[str, ...]  # the text of every entry of `answers`, as the scripts score them


class SquadData(NamedTuple):
    examples: list[SquadExample]
    skipped: SkipCount  # training answers not found at their answer_start, skipped as run_squad does


def _is_whitespace(char: str) -> bool:
    """run_squad's word separator (narrow no-break space included, other Unicode spaces not)."""
    return char in " \t\r\n" or ord(char) == 0x202F


class _Words(NamedTuple):
    """run_squad's whitespace-separated words of a context."""

    texts: list[str]
    spans: list[tuple[int, int]]  # [start, end) characters of each word
    of_char: list[int]  # each character's word (whitespace: the word before it; -1 before any)


@functools.lru_cache(maxsize=1)  # the questions on one paragraph come one after another
def _whitespace_words(context: str) -> _Words:
    words = _Words([], [], [])
    after_space = True
    for position, char in enumerate(context):
        if _is_whitespace(char):
            after_space = True
        else:
            if after_space:
                words.texts.append("")
                words.spans.append((position, position))
            words.texts[-1] += char
            words.spans[-1] = (words.spans[-1][0], position + 1)
            after_space = False
        words.of_char.append(len(words.texts) - 1)
    return words


def _answer_words(context: str, answer_start: int, answer_text: str) -> tuple[int, int]:
    """Indices of the words holding the answer's first and last characters."""
    of_char = _whitespace_words(context).of_char
    return of_char[answer_start], of_char[answer_start + len(answer_text) - 1]


def _answer_found(context: str, answer_start: int, answer_text: str) -> bool:
    """run_squad's check: the words holding the answer's first and last characters, and those
    between, joined by single spaces, contain the answer's words joined the same way."""
    first, last = _answer_words(context, answer_start, answer_text)
    words = _whitespace_words(context).texts
    return " ".join(answer_text.split()) in " ".join(words[first:last + 1])


def _field(record: Any, key: str, kind: type, where: str, *, default: Any = None) -> Any:
    """`record[key]`, checked to be a `kind`; `default` (when given) stands in for a missing key."""
    if not isinstance(record, dict):
        raise TaskDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        if default is not None:
            return default
        raise TaskDataError(f"{where}: missing field '{key}'")
    value = record[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TaskDataError(f"{where}: field '{key}' must be {kind.__name__}, "
                            f"got {json.dumps(value)[:60]}")
    return value


def _read_answers(qa: dict, context: str, where: str) -> list[tuple[str, int]]:
    answers = []
    for k, answer in enumerate(_field(qa, "answers", list, where, default=[])):
        field = f"{where}: answers[{k}]"
        text = _field(answer, "text", str, field)
        start = _field(answer, "answer_start", int, field)
        if not text.strip():
            raise TaskDataError(f"{field}: field 'text' is empty")
        if start < 0 or start + len(text) > len(context):
            raise TaskDataError(f"{field}: field 'answer_start' {start} puts the answer outside "
                                f"its context of {len(context)} characters")
        answers.append((text, start))
    return answers


def read_squad(path: str | Path, *, is_training: bool,
               version_2_with_negative: bool) -> SquadData:
    """Examples of a SQuAD v1.1 or v2.0 JSON file, in file order.

    Training trains on the first answer of each answerable question and skips (and counts) those
    whose text is not found at its answer_start, as run_squad does; `plausible_answers` are never
    read. Evaluation keeps every question. Malformed records raise `TaskDataError` naming the file,
    the question id (or the record's position) and the field.
    """
    try:
        dataset = json.loads("".join(text_lines(path, "utf-8")))
    except OSError as err:
        raise TaskDataError(f"{path}: cannot read SQuAD file ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise TaskDataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    examples: list[SquadExample] = []
    seen: set[str] = set()
    skipped = 0
    for i, article in enumerate(_field(dataset, "data", list, str(path))):
        for j, paragraph in enumerate(_field(article, "paragraphs", list, f"{path}: data[{i}]")):
            place = f"{path}: data[{i}].paragraphs[{j}]"
            context = _field(paragraph, "context", str, place)
            for k, qa in enumerate(_field(paragraph, "qas", list, place)):
                qas_id = _field(qa, "id", str, f"{place}.qas[{k}]")
                where = f"{path}: question {qas_id!r}"
                if qas_id in seen:
                    raise TaskDataError(f"{where}: field 'id' is used by an earlier question")
                seen.add(qas_id)
                question = _field(qa, "question", str, where)
                is_impossible = _field(qa, "is_impossible", bool, where, default=False)
                if is_impossible and not version_2_with_negative:
                    raise TaskDataError(f"{where}: field 'is_impossible' is true in a SQuAD v1.1 "
                                        "task; unanswerable questions need version 2.0")
                answers = _read_answers(qa, context, where)
                answer_text, answer_start = "", -1
                if not is_impossible and answers:
                    answer_text, answer_start = answers[0]
                if is_training and not is_impossible:
                    if not answers:
                        raise TaskDataError(f"{where}: field 'answers' is empty for an "
                                            "answerable training question")
                    if not _answer_found(context, answer_start, answer_text):
                        if not skipped:
                            found = context[answer_start:answer_start + len(answer_text)]
                            first_skipped = (f"{where}: answers[0] {answer_text!r} at "
                                             f"answer_start {answer_start}, where the context "
                                             f"has {found!r}")
                        skipped += 1
                        continue
                examples.append(SquadExample(
                    qas_id=qas_id, question=question, context=context, answer_text=answer_text,
                    answer_start=answer_start, is_impossible=is_impossible,
                    gold_answers=tuple(text for text, _ in answers)))
    if not skipped:
        return SquadData(examples, SkipCount())
    return SquadData(examples, SkipCount(skipped, (
        f"answers not found at their answer_start (first: {first_skipped}); answer_start "
        "counts characters of the context from 0")))


@dataclasses.dataclass(frozen=True, eq=False)
class SquadWindow:
    """Where one window's context tokens sit in its example's context, for post-processing."""

    example_index: int
    context_offset: int  # token position of the window's first context token
    char_starts: np.ndarray  # int32 [L]: [start, end) character span of each context token
    char_ends: np.ndarray  # int32 [L]
    is_max_context: np.ndarray  # bool [L]: this window is the token's best (run_squad's rule)

    def context_positions(self) -> range:
        return range(self.context_offset, self.context_offset + len(self.char_starts))


def window_spans(num_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of each window over `num_tokens` context tokens, as run_squad cuts them:
    starts `doc_stride` apart (less when a window is shorter), the last one reaching the end."""
    spans = []
    start = 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return spans or [(0, 0)]


def _best_window(spans: list[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """int [num_tokens]: the window where each token has the most context, scored as run_squad's
    _check_is_max_context does (min(left, right) + 0.01 * length; the first window wins ties)."""
    best = np.full(num_tokens, -1)
    best_score = np.full(num_tokens, -np.inf)
    for index, (start, length) in enumerate(spans):
        positions = np.arange(start, start + length)
        score = np.minimum(positions - start, start + length - 1 - positions) + 0.01 * length
        better = score > best_score[positions]
        best[positions[better]] = index
        best_score[positions[better]] = score[better]
    return best


def _answer_tokens(example: SquadExample, context_ids: list[int], starts: np.ndarray,
                   ends: np.ndarray, tokenizer: Tokenizer) -> tuple[int, int]:
    """First and last context token of the training answer, found as run_squad finds them: the
    tokens of the whitespace words holding the answer's first and last characters, narrowed to
    the first run (earliest start, then latest end) equal to the answer's own tokens when there
    is one, as _improve_answer_span does."""
    first, last = _answer_words(example.context, example.answer_start, example.answer_text)
    spans = _whitespace_words(example.context).spans
    begin, end = spans[max(first, 0)][0], spans[last][1]
    # Empty-span pieces (leading bytes of a byte-fallback character) count where they sit.
    inside = (starts < end) & ((ends > begin) | ((starts == ends) & (starts >= begin)))
    tokens = np.flatnonzero(inside)
    if not len(tokens):
        raise TaskDataError(f"question {example.qas_id!r}: field 'answers' "
                            f"{example.answer_text!r} covers no token of its context")
    span_start, span_end = int(tokens[0]), int(tokens[-1])
    answer_ids = tokenizer.encode(example.answer_text)
    for new_start in range(span_start, span_end + 1):
        for new_end in range(span_end, new_start - 1, -1):
            if context_ids[new_start:new_end + 1] == answer_ids:
                return new_start, new_end
    return span_start, span_end


def featurize(
    examples: Sequence[SquadExample], tokenizer: Tokenizer, max_seq_len: int, *,
    doc_stride: int, max_query_length: int,
) -> tuple[dict[str, np.ndarray], list[SquadWindow]]:
    """Model inputs and span labels of every window of every example, and the windows' maps.

    Arrays have one row per window: input_ids, segment_ids, input_mask int32 [N, max_seq_len]
    and start_positions, end_positions int32 [N] (0, i.e. [CLS], where the window lacks the
    answer). `windows[n]` maps row n back to its example and context characters.
    """
    if doc_stride < 1:
        raise ValueError(f"doc_stride must be at least 1, got {doc_stride}")
    if max_query_length + 3 >= max_seq_len:
        raise ValueError(f"max_query_length ({max_query_length}) + 3 must be below max_seq_len "
                         f"({max_seq_len}) to leave room for context tokens")
    questions = tokenizer.encode_batch([e.question for e in examples])
    contexts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    rows: list[np.ndarray] = []  # input_ids of each window, [max_seq_len]
    lengths: list[int] = []  # of each window's input
    first_context: list[int] = []  # each window's first segment-1 position
    positions: list[tuple[int, int]] = []
    windows: list[SquadWindow] = []
    for example_index, (example, question) in enumerate(zip(examples, questions)):
        if example.context not in contexts:
            ids, spans = tokenizer.encode_with_offsets(example.context)
            offsets = np.array(spans, np.int32).reshape(-1, 2)
            contexts[example.context] = (np.array(ids, np.int32), offsets[:, 0], offsets[:, 1])
        context_ids, starts, ends = contexts[example.context]
        question = question[:max_query_length]
        offset = len(question) + 2
        spans = window_spans(len(context_ids), max_seq_len - offset - 1, doc_stride)
        best = _best_window(spans, len(context_ids))
        answer = (_answer_tokens(example, context_ids.tolist(), starts, ends, tokenizer)
                  if example.answer_start >= 0 else None)
        for index, (start, length) in enumerate(spans):
            stop = start + length
            row = np.zeros(max_seq_len, np.int32)
            row[:offset] = [tokenizer.cls_id, *question, tokenizer.sep_id]
            row[offset:offset + length] = context_ids[start:stop]
            row[offset + length] = tokenizer.sep_id
            rows.append(row)
            lengths.append(offset + length + 1)
            first_context.append(offset)
            if answer is not None and start <= answer[0] and answer[1] < stop:
                positions.append((answer[0] - start + offset, answer[1] - start + offset))
            else:
                positions.append((0, 0))
            windows.append(SquadWindow(example_index, offset, starts[start:stop], ends[start:stop],
                                       best[start:stop] == index))
    token_positions = np.arange(max_seq_len)
    input_mask = token_positions < np.array(lengths, np.int32).reshape(-1, 1)  # (N, T)
    after_question = token_positions >= np.array(first_context, np.int32).reshape(-1, 1)
    labels = np.array(positions, np.int32).reshape(-1, 2)
    arrays = dict(
        input_ids=np.stack(rows) if rows else np.zeros((0, max_seq_len), np.int32),
        segment_ids=(input_mask & after_question).astype(np.int32),
        input_mask=input_mask.astype(np.int32),
        start_positions=labels[:, 0],
        end_positions=labels[:, 1],
    )
    return arrays, windows


_PADDING_LOGIT = -1e9  # exp() of it is 0 in float32


def loss_sums(outputs: tuple[Array, Array], batch: Mapping[str, Array]) -> dict[str, Array]:
    """Weighted sums over this (micro-)batch: loss_sum of (start CE + end CE) / 2 per window,
    count of real windows, and how many starts and ends the argmax gets right.

    outputs: start and end logits (B, T) of `BertForQuestionAnswering`. Padding is kept out of
    the softmax over positions (the original and transformers leave it in), so the loss of a
    window does not depend on how far it is padded: a length bucket cannot change it.
    """
    real = batch["input_mask"] > 0
    start_logits, end_logits = (jnp.where(real, logits, _PADDING_LOGIT) for logits in outputs)
    weights = batch["example_weights"].astype(jnp.float32)  # (B,)
    start_nll, start_correct = cross_entropy(start_logits, batch["start_positions"])
    end_nll, end_correct = cross_entropy(end_logits, batch["end_positions"])
    return dict(
        loss_sum=jnp.sum(weights * (start_nll + end_nll) / 2),
        count=jnp.sum(weights),
        start_correct=jnp.sum(weights * start_correct),
        end_correct=jnp.sum(weights * end_correct),
    )


@dataclasses.dataclass(frozen=True)
class SquadPredictions:
    answers: dict[str, str]  # {id: answer}: the official predictions file
    null_odds: dict[str, float]  # v2.0 {id: null score - best span score}; empty for v1.1
    nbest: dict[str, list[dict[str, Any]]]  # {id: [{text, probability, start_logit, end_logit}]}


class _Candidate(NamedTuple):
    window: SquadWindow | None  # None: the null answer ([CLS])
    start: int
    end: int
    start_logit: float
    end_logit: float


def _span_candidates(window: SquadWindow, start_logits: np.ndarray, end_logits: np.ndarray,
                     n_best_size: int, max_answer_length: int) -> list[_Candidate]:
    """run_squad's candidates of one window: pairs of its n-best starts and ends that lie in the
    context, in order, at most max_answer_length tokens apart, the start in its max-context
    window."""
    context = window.context_positions()
    starts = np.argsort(-start_logits, kind="stable")[:n_best_size]
    ends = np.argsort(-end_logits, kind="stable")[:n_best_size]
    candidates = []
    for start in starts.tolist():
        if start not in context or not window.is_max_context[start - context.start]:
            continue
        for end in ends.tolist():
            if end in context and start <= end < start + max_answer_length:
                candidates.append(_Candidate(window, start, end, float(start_logits[start]),
                                             float(end_logits[end])))
    return candidates


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    return [e / sum(exps) for e in exps]


def _nbest(example: SquadExample, candidates: list[_Candidate], null: _Candidate | None,
           n_best_size: int) -> list[tuple[str, _Candidate]]:
    """The n best distinct answers, best first, as write_predictions keeps them; with v2.0's
    `null` candidate the list always holds the null answer "" (appended when not among them)."""
    ranked = sorted(candidates + ([null] if null else []),
                    key=lambda c: c.start_logit + c.end_logit, reverse=True)
    nbest: list[tuple[str, _Candidate]] = []
    seen: set[str] = set()
    for candidate in ranked:
        if len(nbest) >= n_best_size:
            break
        window, text = candidate.window, ""
        if window is not None:
            first = candidate.start - window.context_offset
            last = candidate.end - window.context_offset
            text = example.context[window.char_starts[first]:window.char_ends[last]]
            if not text.strip() or text in seen:
                continue
        seen.add(text)
        nbest.append((text, candidate))
    if null and "" not in seen:
        nbest.append(("", null))
    return nbest


def postprocess(examples: Sequence[SquadExample], windows: Sequence[SquadWindow],
                start_logits: np.ndarray, end_logits: np.ndarray, *, n_best_size: int,
                max_answer_length: int, version_2_with_negative: bool,
                null_score_diff_threshold: float = 0.0) -> SquadPredictions:
    """Answers from the start and end logits (N, T) of every window, as run_squad's
    write_predictions chooses them.

    Candidates of all windows of an example are ranked by start + end logit; answers are sliced
    from the original context. v1.1 never answers [CLS]. v2.0's null score is the smallest
    [CLS] start + end over the example's windows; the answer is "" when the null score exceeds
    the best span's by more than `null_score_diff_threshold`.
    """
    if len(start_logits) != len(windows) or len(end_logits) != len(windows):
        raise ValueError(f"{len(windows)} windows but {len(start_logits)} start and "
                         f"{len(end_logits)} end logit rows")
    by_example: dict[int, list[int]] = collections.defaultdict(list)
    for row, window in enumerate(windows):
        by_example[window.example_index].append(row)
    # No span survives the filters: run_squad's zero-logit fallback entry, with no text.
    fallback = ("", _Candidate(None, 0, 0, 0.0, 0.0))
    answers, null_odds, nbest_lists = {}, {}, {}
    for example_index, example in enumerate(examples):
        candidates: list[_Candidate] = []
        null = _Candidate(None, 0, 0, math.inf, 0.0)  # every example has a window to lower it
        for row in by_example[example_index]:
            start_row, end_row = np.asarray(start_logits[row]), np.asarray(end_logits[row])
            if float(start_row[0]) + float(end_row[0]) < null.start_logit + null.end_logit:
                null = _Candidate(None, 0, 0, float(start_row[0]), float(end_row[0]))
            candidates += _span_candidates(windows[row], start_row, end_row, n_best_size,
                                           max_answer_length)
        nbest = _nbest(example, candidates, null if version_2_with_negative else None,
                       n_best_size) or [fallback]
        probabilities = _softmax([c.start_logit + c.end_logit for _, c in nbest])
        nbest_lists[example.qas_id] = [
            dict(text=text, probability=p, start_logit=c.start_logit, end_logit=c.end_logit)
            for (text, c), p in zip(nbest, probabilities)]
        if not version_2_with_negative:
            answers[example.qas_id] = nbest[0][0]
            continue
        text, span = next(((t, c) for t, c in nbest if c.window is not None), fallback)
        score_diff = null.start_logit + null.end_logit - span.start_logit - span.end_logit
        null_odds[example.qas_id] = score_diff
        answers[example.qas_id] = "" if score_diff > null_score_diff_threshold else text
    return SquadPredictions(answers, null_odds, nbest_lists)


def write_predictions(predictions: SquadPredictions, path: str | Path, *,
                      null_odds_path: str | Path | None = None,
                      nbest_path: str | Path | None = None) -> None:
    """The official {id: answer} JSON; optionally the {id: null odds} and n-best JSON files."""
    files = [(path, predictions.answers), (null_odds_path, predictions.null_odds),
             (nbest_path, predictions.nbest)]
    for file, content in files:
        if file is not None:
            write_atomically(file, json.dumps(content, indent=4, ensure_ascii=False) + "\n")


# --- The official evaluation, v1.1 and v2.0 -----------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop ASCII punctuation, then the articles a/an/the, then collapse whitespace."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, *, empty_matches_empty: bool) -> float:
    """F1 of the normalized tokens shared by both. v2.0 (`empty_matches_empty`) scores two
    answers that normalize to nothing as 1 and one of them alone as 0; v1.1 scores both 0."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if empty_matches_empty and not (predicted and expected):
        return float(predicted == expected)
    shared = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if not shared:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def gold_answers(examples: Sequence[SquadExample]) -> dict[str, tuple[str, ...]]:
    """{id: every answer text}: what the official scripts read from the dataset file."""
    return {e.qas_id: e.gold_answers for e in examples}


def evaluate_v1(gold: Mapping[str, Sequence[str]],
                predictions: Mapping[str, str]) -> dict[str, float]:
    """The official v1.1 scores: exact_match and f1 (0-100), each the best over the question's
    answers; a question without a prediction scores 0."""
    if not gold:
        raise ValueError("no questions to score")
    exact = f1 = 0.0
    for qas_id, answers in gold.items():
        if not answers:
            raise ValueError(f"question {qas_id!r} has no gold answer to score against")
        if qas_id in predictions:
            exact += max(exact_match(predictions[qas_id], a) for a in answers)
            f1 += max(token_f1(predictions[qas_id], a, empty_matches_empty=False) for a in answers)
    return {"exact_match": 100.0 * exact / len(gold), "f1": 100.0 * f1 / len(gold)}


def _best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float],
                    null_odds: Mapping[str, float],
                    has_answer: Mapping[str, bool]) -> tuple[float, float]:
    """The official find_best_thresh: walk the questions by rising null odds, each step moving the
    threshold past one more (so it keeps its prediction instead of answering ""), and keep the best
    total; starting from "all answered with \"\"", which scores every unanswerable one."""
    total = best = float(sum(not has for has in has_answer.values()))
    best_threshold = 0.0
    for qas_id in sorted(null_odds, key=null_odds.__getitem__):
        if qas_id not in scores:
            continue
        if has_answer[qas_id]:
            total += scores[qas_id]
        elif predictions[qas_id]:
            total -= 1
        if total > best:
            best, best_threshold = total, null_odds[qas_id]
    return 100.0 * best / len(scores), best_threshold


def evaluate_v2(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                null_odds: Mapping[str, float] | None = None, *,
                na_prob_thresh: float = 1.0) -> dict[str, float]:
    """The official v2.0 scores (0-100): exact, f1, total, HasAns_* and NoAns_* (when the split is
    not empty) and, given the null odds, best_exact(_thresh) and best_f1(_thresh).

    A question with no answers has the gold [""]. As with the official script's --na-prob-file,
    questions whose null odds exceed `na_prob_thresh` are scored as if answered "".
    """
    missing = [qas_id for qas_id in gold if qas_id not in predictions]
    if not gold:
        raise ValueError("no questions to score")
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[0]!r}")
    has_answer = {qas_id: bool(answers) for qas_id, answers in gold.items()}
    exact_raw, f1_raw = {}, {}
    for qas_id, answers in gold.items():
        scored = [a for a in answers if normalize_answer(a)] or [""]
        prediction = predictions[qas_id]
        exact_raw[qas_id] = max(exact_match(prediction, a) for a in scored)
        f1_raw[qas_id] = max(token_f1(prediction, a, empty_matches_empty=True) for a in scored)
    odds = {qas_id: 0.0 for qas_id in predictions} if null_odds is None else null_odds

    def thresholded(raw: dict[str, float]) -> dict[str, float]:
        return {q: float(not has_answer[q]) if odds[q] > na_prob_thresh else score
                for q, score in raw.items()}

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    results = {"exact": 100.0 * sum(exact.values()) / len(gold),
               "f1": 100.0 * sum(f1.values()) / len(gold), "total": float(len(gold))}
    for name, wanted in (("HasAns", True), ("NoAns", False)):
        subset = [q for q in gold if has_answer[q] == wanted]
        if subset:
            results[f"{name}_exact"] = 100.0 * sum(exact[q] for q in subset) / len(subset)
            results[f"{name}_f1"] = 100.0 * sum(f1[q] for q in subset) / len(subset)
            results[f"{name}_total"] = float(len(subset))
    if null_odds is not None:
        results["best_exact"], results["best_exact_thresh"] = _best_threshold(
            predictions, exact_raw, null_odds, has_answer)
        results["best_f1"], results["best_f1_thresh"] = _best_threshold(
            predictions, f1_raw, null_odds, has_answer)
    return results


def evaluate(examples: Sequence[SquadExample], predictions: SquadPredictions, *,
             version_2_with_negative: bool) -> dict[str, float]:
    """The official scores of `predictions` on `examples` (read with is_training=False)."""
    gold = gold_answers(examples)
    if version_2_with_negative:
        return evaluate_v2(gold, predictions.answers, predictions.null_odds)
    return evaluate_v1(gold, predictions.answers)


# ------------------------------------------------------------------------------- the family


class Squad(Family):
    """`squad_v1` and `squad_v2`: spans over doc_stride windows of the context."""

    task_names = ("squad_v1", "squad_v2")
    head_kinds = ("question_answering",)
    selection_metric = "f1"

    def __init__(self, config: ConfigDict, tokenizer: Tokenizer,
                 pretrained: heads.Pretrained | None = None) -> None:
        super().__init__(config, tokenizer, pretrained)
        self.version_2 = config.task == "squad_v2"

    @classmethod
    def validate(cls, config: ConfigDict) -> None:
        for key in ("n_best_size", "max_answer_length", "doc_stride", "max_query_length"):
            check(int(config[key]) >= 1, key, f"must be a positive integer, got {config[key]}")
        check(config.max_query_length + 3 < config.max_seq_len, "max_query_length",
              f"{config.max_query_length} + 3 must be below config.max_seq_len="
              f"{config.max_seq_len} to leave room for context tokens")

    @classmethod
    def objective(cls, model: nn.Module) -> FineTuneTask:
        return FineTuneTask(
            model, loss_sums=loss_sums,
            sum_keys=("loss_sum", "count", "start_correct", "end_correct"),
            predictions=lambda logits: {"start_logits": logits[0], "end_logits": logits[1]})

    def load(self, name: str, path: str) -> Split:
        data = read_squad(path, is_training=name == "train", version_2_with_negative=self.version_2)
        features, windows = featurize(
            data.examples, self.tokenizer, self.config.max_seq_len,
            doc_stride=self.config.doc_stride, max_query_length=self.config.max_query_length)
        return Split(name, path, data.examples, features, extra=windows, skipped=data.skipped)

    def model(self, bert_config: BertConfig) -> nn.Module:
        return heads.BertForQuestionAnswering(bert_config)

    def _answers(self, split: Split, predictions: Mapping[str, np.ndarray]) -> SquadPredictions:
        c = self.config
        return postprocess(
            split.examples, split.extra, predictions["start_logits"], predictions["end_logits"],
            n_best_size=c.n_best_size, max_answer_length=c.max_answer_length,
            version_2_with_negative=self.version_2,
            null_score_diff_threshold=c.null_score_diff_threshold)

    def score(self, split: Split, predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
        return evaluate(split.examples, self._answers(split, predictions),
                        version_2_with_negative=self.version_2)

    def write(self, directory: str, split: Split, predictions: Mapping[str, np.ndarray]
              ) -> list[str]:
        path = os.path.join(directory, f"{split.name}_predictions.json")
        odds = path.replace(".json", ".null_odds.json") if self.version_2 else None
        nbest = path.replace(".json", ".nbest.json")
        write_predictions(self._answers(split, predictions), path, null_odds_path=odds,
                          nbest_path=nbest)
        return [p for p in (path, odds, nbest) if p]
