"""The encoder and both pretraining heads compute what Hugging Face's PyTorch BERT computes."""
import jax
import numpy as np
import pytest
import torch
import transformers

from bert.convert import params_from_hf
from bert.model import BertConfig, BertForPreTraining, count_params
from tests import hf_reference


@pytest.fixture(scope="module")
def converted():
    hf_config = hf_reference.hf_config(vocab_size=100)
    model = hf_reference.pretraining_model(hf_config, seed=1)
    config = BertConfig(vocab_size=100, hidden_size=64, num_layers=2, num_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    params, report = params_from_hf(hf_reference.state_dict_numpy(model), config, jax.random.key(0))
    assert report.initialised == []
    batch = hf_reference.random_batch(vocab_size=100, batch_size=3, seq_len=12)
    return hf_reference.torch_outputs(model, batch), hf_reference.jax_outputs(params, config, batch), batch


def test_reference_batch_has_padding_and_both_segments(converted):
    _, _, batch = converted
    assert (batch["input_mask"] == 0).any() and (batch["input_mask"][0] == 1).all()
    assert set(np.unique(batch["segment_ids"][batch["input_mask"] == 1])) == {0, 1}


def test_every_hidden_layer_matches_transformers(converted):
    expected, actual, _ = converted
    assert actual["hidden_states"].shape == expected["hidden_states"].shape == (3, 3, 12, 64)
    for layer, (ours, theirs) in enumerate(zip(actual["hidden_states"], expected["hidden_states"])):
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0, err_msg=f"layer {layer}")


def test_mlm_logits_at_masked_positions_match_transformers(converted):
    expected, actual, _ = converted
    assert actual["mlm_logits"].shape == (3, 4, 100)
    np.testing.assert_allclose(actual["mlm_logits"], expected["mlm_logits"], atol=1e-4, rtol=0)


def test_nsp_logits_match_transformers(converted):
    expected, actual, _ = converted
    np.testing.assert_allclose(actual["nsp_logits"], expected["nsp_logits"], atol=1e-4, rtol=0)


def _hf_parameter_count(config: BertConfig) -> int:
    """transformers' own count (tied weights once), built on the meta device: no memory."""
    hf_config = transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
    )
    with torch.device("meta"):
        model = transformers.BertForPreTraining(hf_config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset, published", [("base", 110e6), ("large", 340e6)])
def test_parameter_counts_match_the_paper_and_transformers(preset, published):
    config = BertConfig.from_preset(preset, vocab_size=30522)
    ours = count_params(BertForPreTraining(config))
    assert abs(ours - published) / published < 0.03, ours
    assert ours == _hf_parameter_count(config)
