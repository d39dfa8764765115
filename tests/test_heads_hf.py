"""Every fine-tuning head computes what transformers' PyTorch head computes, and converts both ways.

Weights cross through bert.convert only; no model is downloaded. Each head runs on a batch with
padding (multiple choice: 2 questions × 3 choices) and must give transformers' logits within 1e-4.
"""
import json
import os

import jax
import numpy as np
import pytest
import transformers
from safetensors.numpy import load_file

from bert import checkpoint, convert
from bert.convert import ConversionError
from bert.heads import TASK_FILE, TaskHead, load_task_model, read_task_head, save_task_head
from bert.model import BertConfig, init_params
from bert.wordpiece import WordPieceTokenizer
from tests import hf_reference

VOCAB_SIZE = 100
CONFIG = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=64, num_layers=2, num_heads=4,
                    intermediate_size=128, max_position_embeddings=64)
HEADS = {
    "sequence_classification": TaskHead("sequence_classification", ("negative", "neutral", "positive")),
    "regression": TaskHead("regression"),
    "token_classification": TaskHead("token_classification", ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")),
    "question_answering": TaskHead("question_answering"),
    "multiple_choice": TaskHead("multiple_choice"),
}
AUTO_CLASSES = {
    "sequence_classification": transformers.AutoModelForSequenceClassification,
    "regression": transformers.AutoModelForSequenceClassification,
    "token_classification": transformers.AutoModelForTokenClassification,
    "question_answering": transformers.AutoModelForQuestionAnswering,
    "multiple_choice": transformers.AutoModelForMultipleChoice,
}
UNPOOLED = ("token_classification", "question_answering")  # transformers' models have no pooler
POOLER = ["bert/pooler/bias", "bert/pooler/kernel"]


def _leaves(params) -> dict[str, np.ndarray]:
    return {"/".join(str(k.key) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def _assert_same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


def _assert_close(ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-4, rtol=0, err_msg=key)


def _batch(kind: str, seed: int) -> dict[str, np.ndarray]:
    """Padded rows with two segments; multiple choice as (2 questions, 3 choices, T)."""
    choices = kind == "multiple_choice"
    batch = hf_reference.random_batch(VOCAB_SIZE, batch_size=6 if choices else 3, seq_len=12, seed=seed)
    del batch["masked_lm_positions"]
    return {k: v.reshape(2, 3, -1) for k, v in batch.items()} if choices else batch


def _hf_config(head: TaskHead) -> transformers.BertConfig:
    """As transformers users make them: regression by num_labels=1, labels by id2label."""
    if head.kind == "regression":
        return hf_reference.hf_config(VOCAB_SIZE, num_labels=1)
    if head.labels:
        return hf_reference.hf_config(VOCAB_SIZE, id2label=dict(enumerate(head.labels)),
                                      label2id={label: i for i, label in enumerate(head.labels)})
    return hf_reference.hf_config(VOCAB_SIZE)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("heads_hf")


@pytest.fixture(scope="module", params=list(HEADS))
def from_transformers(request, workspace):
    """A random transformers model of each head, saved as transformers saves it, and imported."""
    kind = request.param
    model = hf_reference.task_model(kind, _hf_config(HEADS[kind]), seed=11)
    hf_dir = str(workspace / f"hf-{kind}")
    model.save_pretrained(hf_dir)
    hf_reference.write_vocab(hf_dir, cased=False)
    report = convert.import_hf(hf_dir, str(workspace / f"imported-{kind}"))
    return kind, model, hf_dir, str(workspace / f"imported-{kind}"), report


def test_imported_head_gives_transformers_logits(from_transformers):
    kind, model, _, model_dir, report = from_transformers
    head, ours, params = load_task_model(model_dir)
    assert head == HEADS[kind]
    assert report.initialised == (POOLER if kind in UNPOOLED else [])
    assert f"task: {kind}" in report.summary()
    batch = _batch(kind, seed=1)
    expected_shape = {"regression": (3, 1), "sequence_classification": (3, 3),
                      "token_classification": (3, 12, 5), "question_answering": (3, 12),
                      "multiple_choice": (2, 3)}[kind]
    outputs = hf_reference.jax_task_outputs(ours, params, batch)
    assert all(v.shape == expected_shape for v in outputs.values())
    _assert_close(outputs, hf_reference.torch_task_outputs(model, batch))


def test_transformers_to_model_folder_and_back_is_bit_exact(from_transformers, workspace):
    kind, _, hf_dir, model_dir, _ = from_transformers
    back = str(workspace / f"back-{kind}")
    convert.main(["to-hf", "--input", model_dir, "--output", back])
    _assert_same_bits(load_file(os.path.join(back, "model.safetensors")),
                      load_file(os.path.join(hf_dir, "model.safetensors")))
    original, exported = (transformers.AutoConfig.from_pretrained(d) for d in (hf_dir, back))
    assert exported.architectures == original.architectures == [hf_reference.TASK_CLASSES[kind].__name__]
    assert exported.id2label == original.id2label and exported.label2id == original.label2id


@pytest.mark.parametrize("kind", list(HEADS))
def test_fine_tuned_folder_loads_in_transformers_with_its_labels_and_same_logits(kind, workspace):
    """A model folder as fine-tuning leaves it → to-hf → AutoModelFor... → from-hf, all exact."""
    head = HEADS[kind]
    model = head.model(CONFIG)
    fresh = jax.jit(lambda key: init_params(model, key))(jax.random.key(5))
    noise = jax.random.normal(jax.random.key(6), (sum(x.size for x in jax.tree.leaves(fresh)),))
    # Biases are zero and scales one at init: move every value, so no misplaced one hides.
    leaves, treedef = jax.tree.flatten(fresh)
    offsets = np.cumsum([0] + [x.size for x in leaves])
    params = jax.device_get(jax.tree.unflatten(treedef, [
        leaf + 0.05 * noise[a:b].reshape(leaf.shape) for leaf, a, b in zip(leaves, offsets, offsets[1:])]))
    folder = str(workspace / f"tuned-{kind}")
    checkpoint.write_model_description(folder, CONFIG, WordPieceTokenizer(hf_reference.vocab(cased=False)))
    save_task_head(folder, head)
    checkpoint.save_params(folder, params)

    hf_dir = str(workspace / f"tuned-{kind}-hf")
    convert.export_hf(folder, hf_dir)
    theirs, info = AUTO_CLASSES[kind].from_pretrained(hf_dir, output_loading_info=True)
    assert type(theirs) is hf_reference.TASK_CLASSES[kind]
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set() and not info["error_msgs"]
    if kind in ("sequence_classification", "token_classification"):
        assert theirs.config.id2label == dict(enumerate(head.labels))
        assert theirs.config.label2id == {label: i for i, label in enumerate(head.labels)}
    if kind in ("sequence_classification", "regression"):
        assert theirs.config.num_labels == (1 if kind == "regression" else 3)
        assert theirs.config.problem_type == (
            "regression" if kind == "regression" else "single_label_classification")
    batch = _batch(kind, seed=2)
    _assert_close(hf_reference.jax_task_outputs(model, params, batch),
                  hf_reference.torch_task_outputs(theirs.eval(), batch))

    back = str(workspace / f"tuned-{kind}-back")
    report = convert.import_hf(hf_dir, back)
    assert read_task_head(back) == head
    restored, original = _leaves(checkpoint.load_params(back)), _leaves(params)
    if kind in UNPOOLED:  # the one param transformers' model does not have, and reads nothing
        assert report.initialised == POOLER
        for name in POOLER:
            del restored[name], original[name]
    _assert_same_bits(restored, original)


def test_named_regression_value_and_default_labels_round_trip(workspace):
    """A regression label name travels as id2label; transformers' LABEL_i names come back."""
    head = TaskHead("regression", ("similarity",))
    values = convert.config_to_hf(CONFIG, head=head)
    assert values["id2label"] == {"0": "similarity"} and values["problem_type"] == "regression"
    assert convert.task_head_from_hf(values, [], "config.json") == head
    unnamed = convert.config_to_hf(CONFIG, head=TaskHead("regression"))
    assert unnamed["id2label"] == {"0": "LABEL_0"}
    assert convert.task_head_from_hf(unnamed, [], "config.json") == TaskHead("regression")
    # transformers leaves id2label out of config.json for its default of two labels.
    plain = {"architectures": ["BertForTokenClassification"]}
    assert convert.task_head_from_hf(plain, [], "config.json") == TaskHead(
        "token_classification", ("LABEL_0", "LABEL_1"))


def test_span_head_is_found_by_its_tensors_without_architectures():
    assert convert.task_head_from_hf({}, ["bert.pooler.dense.bias", "qa_outputs.weight"], "c") == \
        TaskHead("question_answering")
    pretraining = {"architectures": ["BertForMaskedLM"]}
    assert convert.task_head_from_hf(pretraining, ["cls.predictions.bias"], "c") is None


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("values, message", [
    ({}, r"architectures \(absent\) does not say which head classifier.weight belongs to"),
    ({"architectures": ["BertForSequenceClassification"], "problem_type": "multi_label_classification"},
     "problem_type is 'multi_label_classification'"),
    ({"architectures": ["BertForSequenceClassification"], "problem_type": "regression", "num_labels": 3},
     "problem_type is 'regression' with 3 labels"),
    ({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "a", "2": "b"}},
     r"id2label ids must be 0..1, got 0, 2"),
    ({"architectures": ["BertForTokenClassification"], "id2label": {"0": "a", "1": "a"}},
     "id2label: labels: repeated 'a'"),
    ({"architectures": "BertForSequenceClassification"}, "architectures must be a list of class names"),
    ({"architectures": ["BertForSequenceClassification", "BertForMultipleChoice"]},
     "architectures names several task heads: BertForMultipleChoice, BertForSequenceClassification"),
])
def test_configs_that_do_not_say_one_head_are_refused(values, message):
    with pytest.raises(ConversionError, match=f"^HF_DIR/config.json: {message}"):
        convert.task_head_from_hf(values, ["classifier.weight", "classifier.bias"], "HF_DIR/config.json")


@pytest.mark.parametrize("from_transformers", ["sequence_classification"], indirect=True)
def test_head_tensors_must_be_there_and_fit_the_labels(from_transformers):
    kind, _, hf_dir, _, _ = from_transformers
    tensors = convert.read_hf_tensors(hf_dir)
    head = HEADS[kind]
    two_labels = TaskHead(kind, ("negative", "positive"))
    with pytest.raises(ConversionError, match=r"mis-shaped tensors: classifier.bias \(3,\) \(expected "
                                              r"\(2,\)\), classifier.weight \(3, 64\) \(expected \(2, 64\)\)"):
        convert.params_from_hf(tensors, CONFIG, jax.random.key(0), source="HF_DIR", head=two_labels)
    del tensors["classifier.bias"]
    with pytest.raises(ConversionError, match="^HF_DIR: missing tensors: classifier.bias$"):
        convert.params_from_hf(tensors, CONFIG, jax.random.key(0), source="HF_DIR", head=head)
    tensors["cls.seq_relationship.bias"] = np.zeros(2, np.float32)
    with pytest.raises(ConversionError, match="unknown tensors: cls.seq_relationship.bias"):
        convert.params_from_hf(tensors, CONFIG, jax.random.key(0), source="HF_DIR", head=head)


@pytest.mark.parametrize("from_transformers", ["sequence_classification"], indirect=True)
def test_folder_whose_params_do_not_fit_its_task_json_is_refused(from_transformers, workspace):
    kind, _, _, model_dir, _ = from_transformers
    wrong = workspace / "wrong-labels"
    tokenizer = WordPieceTokenizer(hf_reference.vocab(cased=False))
    checkpoint.write_model_description(str(wrong), CONFIG, tokenizer)
    checkpoint.save_params(str(wrong), checkpoint.load_params(model_dir))
    save_task_head(str(wrong), TaskHead(kind, ("negative", "positive")))
    with pytest.raises(SystemExit, match=r"error: .*wrong-labels: params do not fit "
                                         r"BertForSequenceClassification: mis-shaped classifier/bias "
                                         r"\(3,\) \(expected \(2,\)\)"):
        convert.main(["to-hf", "--input", str(wrong), "--output", str(workspace / "never")])
    os.remove(wrong / TASK_FILE)
    with pytest.raises(SystemExit, match=r"unexpected classifier/bias, classifier/kernel.*"
                                         r"names its head in task.json"):
        convert.main(["to-hf", "--input", str(wrong), "--output", str(workspace / "never")])
    assert not (workspace / "never").exists()


@pytest.mark.parametrize("text, message", [
    ('{"task": "ner", "labels": []}', ": task: 'ner' is not one of sequence_classification, regression"),
    ('{"labels": ["a", "b"]}', ": task is missing"),
    ('{"task": "token_classification", "labels": ["O"]}',
     ": labels: a token_classification head takes at least 2 labels, got 1"),
    ('{"task": "multiple_choice", "labels": ["a"]}', ": labels: a multiple_choice head takes no labels, got 1"),
    ('{"task": "sequence_classification", "labels": "ab"}', ": labels: expected a list of strings"),
    ('{"task": "sequence_classification", "labels": ["a", 1]}', r": labels: \[1\] are not non-empty strings"),
    ('{"task": "regression", "label": []}', ": unknown fields label"),
    ('{"task": ', ":1: invalid JSON"),
])
def test_bad_task_json_names_the_file_and_field(tmp_path, text, message):
    (tmp_path / TASK_FILE).write_text(text)
    with pytest.raises(ValueError, match=f"^{tmp_path}/task.json{message}"):
        read_task_head(str(tmp_path))


def test_task_json_is_the_documented_format(tmp_path):
    head = HEADS["token_classification"]
    save_task_head(str(tmp_path), head)
    assert json.loads((tmp_path / TASK_FILE).read_text()) == {
        "task": "token_classification", "labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]}
    assert read_task_head(str(tmp_path)) == head
    assert read_task_head(str(tmp_path / "elsewhere")) is None
