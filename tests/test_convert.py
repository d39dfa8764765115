"""Hugging Face ⇄ model folder conversion is exact: same outputs, same bits, loud on bad input."""
import glob
import json
import os
import sys

import jax
import numpy as np
import optax
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from bert import checkpoint, convert
from bert.convert import ConversionError
from bert.data.corpus import read_sentences
from bert.model import BertConfig, BertForPreTraining, init_params
from bert.tokenizer import SentencePieceTokenizer, load_tokenizer, train_sentencepiece
from bert.train import TrainState
from bert.wordpiece import WordPieceTokenizer
from tests import hf_reference

VOCAB_SIZE = 100


def _leaves(params) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def _init(model, seed: int):
    return jax.jit(lambda key: init_params(model, key))(jax.random.key(seed))


def assert_same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


def _hf_folder(directory: str, model: torch.nn.Module, *, cased: bool = False) -> str:
    model.save_pretrained(directory)
    hf_reference.write_vocab(directory, cased=cased)
    return directory


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def pretraining(workspace):
    """A random HF BertForPreTraining folder, its from-hf import and a batch to run both on."""
    model = hf_reference.pretraining_model(hf_reference.hf_config(VOCAB_SIZE), seed=3)
    hf_dir = _hf_folder(str(workspace / "hf"), model)
    report = convert.import_hf(hf_dir, str(workspace / "model"))
    batch = hf_reference.random_batch(VOCAB_SIZE, seed=3)
    return model, hf_dir, str(workspace / "model"), report, batch


def _assert_close(ours: dict, theirs: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        assert ours[key].shape == theirs[key].shape, key
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-4, rtol=0, err_msg=key)


def test_pretraining_folder_matches_transformers_layer_by_layer(pretraining):
    model, hf_dir, model_dir, report, batch = pretraining
    assert report.initialised == []
    assert os.path.exists(os.path.join(hf_dir, "model.safetensors"))
    config = checkpoint.read_model_config(model_dir)
    assert (config.num_layers, config.hidden_size, config.num_heads, config.intermediate_size,
            config.vocab_size, config.max_position_embeddings) == (2, 64, 4, 128, VOCAB_SIZE, 64)
    ours = hf_reference.jax_outputs(checkpoint.load_params(model_dir), config, batch)
    theirs = hf_reference.torch_outputs(model, batch)
    _assert_close(ours, theirs, ("hidden_states", "mlm_logits", "nsp_logits"))


def test_imported_tokenizer_is_the_folders_wordpiece(pretraining):
    _, hf_dir, model_dir, _, _ = pretraining
    tokenizer = load_tokenizer(os.path.join(model_dir, checkpoint.TOKENIZER_DIR))
    assert isinstance(tokenizer, WordPieceTokenizer)
    text = "The naïve cat sat on the mat in 北京, unable to play!"
    assert tokenizer.encode(text) == transformers.BertTokenizerFast.from_pretrained(hf_dir).encode(
        text, add_special_tokens=False)


@pytest.mark.parametrize("pooler", [True, False])
def test_bare_encoder_folder_matches_and_reports_initialised_heads(workspace, pooler):
    model = hf_reference.bare_model(hf_reference.hf_config(VOCAB_SIZE), pooler=pooler, seed=4)
    hf_dir = _hf_folder(str(workspace / f"bare-{pooler}"), model, cased=True)
    assert not any(k.startswith("bert.") for k in load_file(os.path.join(hf_dir, "model.safetensors")))
    model_dir = str(workspace / f"bare-{pooler}-model")
    report = convert.import_hf(hf_dir, model_dir)
    heads = {"mlm/transform/kernel", "mlm/transform/bias", "mlm/layer_norm/scale",
             "mlm/layer_norm/bias", "mlm/output_bias", "nsp/kernel", "nsp/bias"}
    pooler_params = {"bert/pooler/kernel", "bert/pooler/bias"}
    assert set(report.initialised) == heads | (set() if pooler else pooler_params)
    assert "initialised" in report.summary() and "mlm/output_bias" in report.summary()

    config = checkpoint.read_model_config(model_dir)
    batch = hf_reference.random_batch(VOCAB_SIZE, seed=4)
    ours = hf_reference.jax_outputs(checkpoint.load_params(model_dir), config, batch)
    theirs = hf_reference.torch_outputs(model, batch)
    _assert_close(ours, theirs, ("hidden_states", "pooled_output") if pooler else ("hidden_states",))


def test_pytorch_bin_with_tensorflow_names_and_stored_decoder_imports_identically(workspace, pretraining):
    """Old checkpoints: pickled, LayerNorm.gamma/beta, an explicit decoder copy, position_ids."""
    model, _, model_dir, _, _ = pretraining
    state = {}
    for name, tensor in model.state_dict().items():
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[name] = tensor.clone()
    assert "cls.predictions.decoder.weight" in state and "cls.predictions.decoder.bias" in state
    state["bert.embeddings.position_ids"] = torch.arange(64)[None]
    hf_dir = workspace / "bin"
    hf_dir.mkdir()
    torch.save(state, hf_dir / "pytorch_model.bin")
    (hf_dir / "config.json").write_text(hf_reference.hf_config(VOCAB_SIZE).to_json_string())
    hf_reference.write_vocab(str(hf_dir), cased=False)
    report = convert.import_hf(str(hf_dir), str(workspace / "bin-model"))
    assert report.initialised == []
    assert "bert.embeddings.position_ids" in report.ignored
    assert_same_bits(_leaves(checkpoint.load_params(str(workspace / "bin-model"))),
                     _leaves(checkpoint.load_params(model_dir)))


def test_pytorch_bin_without_torch_says_so(workspace, monkeypatch):
    (workspace / "needs-torch").mkdir()
    (workspace / "needs-torch" / "pytorch_model.bin").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"needs-torch/pytorch_model.bin needs PyTorch.*safetensors"):
        convert.read_hf_tensors(str(workspace / "needs-torch"))


def test_to_hf_loads_in_transformers_with_identical_weights_and_outputs(workspace, pretraining):
    model, _, model_dir, _, batch = pretraining
    convert.main(["to-hf", "--input", model_dir, "--output", str(workspace / "exported")])
    exported, info = transformers.BertForPreTraining.from_pretrained(
        str(workspace / "exported"), output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set() and not info["error_msgs"]
    original = model.state_dict()
    for name, tensor in exported.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert_same_bits(hf_reference.torch_outputs(exported.eval(), batch),
                     hf_reference.torch_outputs(model, batch))
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(workspace / "exported"))
    assert tokenizer.encode("the cat sat", add_special_tokens=False) == [
        hf_reference.vocab(cased=False).index(w) for w in ("the", "cat", "sat")]


def test_from_hf_to_hf_from_hf_is_bit_exact(workspace, pretraining):
    _, hf_dir, model_dir, _, _ = pretraining
    convert.main(["to-hf", "--input", model_dir, "--output", str(workspace / "trip-hf")])
    convert.main(["from-hf", "--input", str(workspace / "trip-hf"), "--output", str(workspace / "trip")])
    assert_same_bits(_leaves(checkpoint.load_params(str(workspace / "trip"))),
                     _leaves(checkpoint.load_params(model_dir)))
    assert_same_bits(load_file(os.path.join(workspace / "trip-hf", "model.safetensors")),
                     load_file(os.path.join(hf_dir, "model.safetensors")))
    assert checkpoint.read_model_config(str(workspace / "trip")) == checkpoint.read_model_config(model_dir)


@pytest.fixture(scope="module")
def sentencepiece(workspace) -> SentencePieceTokenizer:
    files = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "data", "sotu", "train", "*.txt")))
    return train_sentencepiece(read_sentences(files[:1]), 400, str(workspace / "spm" / "sp"))


def test_pretraining_workdir_exports_to_hf_and_back_unchanged(workspace, sentencepiece):
    """A work directory as bert.pretrain leaves it: config, tokenizer, orbax TrainState steps."""
    config = BertConfig.from_preset("tiny", vocab_size=sentencepiece.vocab_size,
                                    max_position_embeddings=64)
    model = BertForPreTraining(config)
    workdir = str(workspace / "workdir")
    checkpoint.write_model_description(workdir, config, sentencepiece)
    manager = checkpoint.CheckpointManager(workdir, keep=2, async_save=False)
    first = jax.device_get(_init(model, seed=0))
    init_opt_state = jax.jit(optax.adamw(1e-3).init)
    for step, params in ((1, first), (2, jax.tree.map(lambda x: x * 0.5 + 0.01, first))):
        state = TrainState(step=np.int32(step), params=params, opt_state=init_opt_state(params))
        manager.save(step, state, {"step": step}, force=True)
    manager.close()

    convert.export_hf(workdir, str(workspace / "workdir-hf"))
    exported = sorted(os.listdir(workspace / "workdir-hf"))
    assert exported == ["README.md", "config.json", "model.safetensors", "sentencepiece.model"]
    assert "cannot" in (workspace / "workdir-hf" / "README.md").read_text()
    hf_model, info = transformers.BertForPreTraining.from_pretrained(
        str(workspace / "workdir-hf"), output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()

    convert.import_hf(str(workspace / "workdir-hf"), str(workspace / "workdir-back"))
    assert_same_bits(_leaves(checkpoint.load_params(str(workspace / "workdir-back"))),
                     _leaves(state.params))  # the latest step, not the first
    assert checkpoint.read_model_config(str(workspace / "workdir-back")) == config
    back = load_tokenizer(str(workspace / "workdir-back" / checkpoint.TOKENIZER_DIR))
    assert isinstance(back, SentencePieceTokenizer) and back.fingerprint == sentencepiece.fingerprint
    batch = hf_reference.random_batch(config.vocab_size, seed=5)
    _assert_close(hf_reference.jax_outputs(state.params, config, batch),
                  hf_reference.torch_outputs(hf_model, batch),
                  ("hidden_states", "mlm_logits", "nsp_logits"))


def test_project_model_folder_exports_and_reimports_bit_exactly(workspace, sentencepiece):
    config = BertConfig(vocab_size=sentencepiece.vocab_size, hidden_size=48, num_layers=3,
                        num_heads=3, intermediate_size=80, max_position_embeddings=40,
                        type_vocab_size=3)
    params = _init(BertForPreTraining(config), seed=7)
    folder = str(workspace / "project-model")
    checkpoint.write_model_description(folder, config, sentencepiece)
    checkpoint.save_params(folder, params)
    convert.export_hf(folder, str(workspace / "project-hf"))
    hf_config = json.loads((workspace / "project-hf" / "config.json").read_text())
    assert (hf_config["num_hidden_layers"], hf_config["type_vocab_size"], hf_config["pad_token_id"]) == (
        3, 3, sentencepiece.pad_id)
    convert.import_hf(str(workspace / "project-hf"), str(workspace / "project-back"))
    assert_same_bits(_leaves(checkpoint.load_params(str(workspace / "project-back"))), _leaves(params))


# ------------------------------------------------------------------------------ bad input


@pytest.fixture()
def tensors(pretraining):
    return dict(load_file(os.path.join(pretraining[1], "model.safetensors")))


CONFIG = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=64, num_layers=2, num_heads=4,
                    intermediate_size=128, max_position_embeddings=64)


def _import(tensors):
    return convert.params_from_hf(tensors, CONFIG, jax.random.key(0), source="HF_DIR")


def test_unknown_and_misshaped_tensors_are_listed_together(tensors):
    tensors["classifier.weight"] = np.zeros((3, 64), np.float32)
    tensors["bert.encoder.layer.2.output.dense.bias"] = np.zeros(64, np.float32)
    tensors["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((96, 64), np.float32)
    with pytest.raises(ConversionError) as error:
        _import(tensors)
    message = str(error.value)
    assert message.startswith("HF_DIR: unknown tensors: bert.encoder.layer.2.output.dense.bias, classifier.weight")
    assert "bert.encoder.layer.0.intermediate.dense.weight (96, 64) (expected (128, 64))" in message


def test_missing_encoder_tensors_and_partial_heads_are_errors(tensors):
    del tensors["bert.encoder.layer.1.attention.self.key.bias"]
    with pytest.raises(ConversionError, match="missing tensors: encoder.layer.1.attention.self.key.bias"):
        _import(dict(tensors))
    tensors["bert.encoder.layer.1.attention.self.key.bias"] = np.zeros(64, np.float32)
    del tensors["cls.predictions.transform.LayerNorm.bias"]
    with pytest.raises(ConversionError, match="incomplete mlm: missing cls.predictions.transform.LayerNorm.bias"):
        _import(tensors)


def test_untied_decoder_is_refused(tensors):
    tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"] + 1
    with pytest.raises(ConversionError, match="decoder.weight differs from embeddings.word_embeddings"):
        _import(tensors)


def test_same_tensor_with_and_without_prefix_is_refused(tensors):
    tensors["embeddings.LayerNorm.bias"] = tensors["bert.embeddings.LayerNorm.bias"]
    with pytest.raises(ConversionError, match="both with and without the 'bert.' prefix"):
        _import(tensors)


@pytest.mark.parametrize("change, message", [
    ({"hidden_act": "gelu_new"}, "hidden_act is 'gelu_new'"),
    ({"model_type": "roberta"}, "model_type is 'roberta'"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"num_attention_heads": 5}, "not divisible"),
])
def test_configs_this_encoder_cannot_compute_are_refused(change, message):
    values = {**hf_reference.hf_config(VOCAB_SIZE).to_dict(), **change}
    with pytest.raises(ConversionError, match=message):
        convert.config_from_hf(values, "HF_DIR/config.json")


def test_cli_errors_name_the_folder_and_leave_nothing_behind(workspace, pretraining, capsys):
    empty = workspace / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text(hf_reference.hf_config(VOCAB_SIZE).to_json_string())
    hf_reference.write_vocab(str(empty), cased=False)
    with pytest.raises(SystemExit, match=r"error: .*no-weights holds no weights"):
        convert.main(["from-hf", "--input", str(empty), "--output", str(workspace / "never")])
    assert not any(p.startswith("never") for p in os.listdir(workspace))
    with pytest.raises(SystemExit, match="already exists and is not empty"):
        convert.main(["from-hf", "--input", pretraining[1], "--output", pretraining[2]])


def test_vocab_larger_than_the_embedding_table_is_refused(workspace, pretraining):
    hf_dir = workspace / "big-vocab"
    hf_dir.mkdir()
    for name in ("config.json", "model.safetensors"):
        (hf_dir / name).write_bytes((workspace / "hf" / name).read_bytes())
    tokens = hf_reference.SPECIALS + [f"[unused{i}]" for i in range(VOCAB_SIZE - 4)]
    (hf_dir / "vocab.txt").write_text("".join(t + "\n" for t in tokens))
    with pytest.raises(ConversionError, match=r"101 tokens but .*vocab_size=100"):
        convert.import_hf(str(hf_dir), str(workspace / "big-vocab-model"))


def test_sharded_safetensors_are_read(workspace, tensors):
    shard_dir = workspace / "sharded"
    shard_dir.mkdir()
    names = sorted(tensors)
    weight_map = {}
    for index, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        shard = f"model-0000{index + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(shard_dir / shard), metadata={"format": "pt"})
        weight_map.update({n: shard for n in part})
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert_same_bits(convert.read_hf_tensors(str(shard_dir)), tensors)


def test_bfloat16_safetensors_widen_exactly_without_torch(workspace, pretraining):
    model = pretraining[0]
    state = {name: t.to(torch.bfloat16) for name, t in model.state_dict().items()
             if not name.startswith("cls.predictions.decoder")}
    from safetensors.torch import save_file as save_torch_file  # only to write the fixture

    hf_dir = workspace / "bf16"
    hf_dir.mkdir()
    save_torch_file(state, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    tensors = convert.read_hf_tensors(str(hf_dir))
    assert tensors["bert.pooler.dense.bias"].dtype.name == "bfloat16"
    params, report = _import(tensors)
    assert "converted bfloat16 tensors to float32" in report.summary()
    np.testing.assert_array_equal(params["nsp"]["kernel"],
                                  state["cls.seq_relationship.weight"].float().numpy().T)


def test_pre_layer_norm_model_is_refused_by_to_hf_naming_the_key(workspace, sentencepiece):
    """transformers' BertModel is post-LN: a pre-LN export would load and compute nonsense."""
    config = BertConfig.from_preset("tiny", vocab_size=sentencepiece.vocab_size,
                                    max_position_embeddings=64, norm_position="pre")
    folder = str(workspace / "pre-ln-model")
    checkpoint.write_model_description(folder, config, sentencepiece)
    checkpoint.save_params(folder, _init(BertForPreTraining(config), seed=0))
    with pytest.raises(ConversionError, match=r"config\.model\.norm_position='pre'"):
        convert.export_hf(folder, str(workspace / "pre-ln-hf"))
    assert not (workspace / "pre-ln-hf").exists()
