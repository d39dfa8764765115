"""The time-to-accuracy benchmark's pieces: one scorer that agrees with our own MLM head, fixed
masks, and the run_mlm_flax-style collator's proportions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from benchmarks import mlm_scorer, run_mlm_flax
from bert import checkpoint, convert
from bert.model import BertConfig, BertForPreTraining, init_params
from bert.wordpiece import train_wordpiece

EVAL_TEXT = ("The Congress shall have power to lay and collect taxes.\n"
             "The people of the United States are the source of all power.\n" * 20)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta")
    (root / "eval").mkdir()
    (root / "eval" / "a.txt").write_text(EVAL_TEXT)
    (root / "eval" / "b.txt").write_text(EVAL_TEXT.upper())
    vocab = train_wordpiece(EVAL_TEXT.splitlines(), 200)
    vocab.save(root / "vocab")
    return root, vocab


def test_masks_are_fixed_by_the_seed_and_cover_fifteen_percent(corpus):
    root, _ = corpus
    pattern = str(root / "eval" / "*.txt")
    first = mlm_scorer.masked_windows(str(root / "vocab"), pattern, max_seq_len=32, seed=3)
    again = mlm_scorer.masked_windows(str(root / "vocab"), pattern, max_seq_len=32, seed=3)
    other = mlm_scorer.masked_windows(str(root / "vocab"), pattern, max_seq_len=32, seed=4)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["input_ids"], other["input_ids"])
    masked = first["labels"] >= 0
    real = first["input_mask"].sum(1) - 2  # [CLS] and [SEP] are never masked
    np.testing.assert_array_equal(masked.sum(1), np.maximum(1, np.round(0.15 * real)))
    assert not masked[:, 0].any()
    tokenizer = transformers.BertTokenizerFast(str(root / "vocab" / "vocab.txt"))
    assert (first["input_ids"][masked] == tokenizer.mask_token_id).all()


def test_scorer_agrees_with_our_own_mlm_head_on_an_exported_model(corpus, tmp_path):
    root, vocab = corpus
    config = BertConfig.from_preset("tiny", vocab_size=vocab.vocab_size, max_position_embeddings=64)
    model = BertForPreTraining(config)
    params = init_params(model, jax.random.key(0))
    # Make the head's answers depend on the input: an untrained model predicts nearly constants.
    params = jax.tree.map(lambda a: a * 8.0 if a.ndim == 2 else a, params)
    folder, hf_dir = str(tmp_path / "model"), str(tmp_path / "hf")
    checkpoint.write_model_description(folder, config, vocab)
    checkpoint.save_params(folder, params)
    convert.export_hf(folder, hf_dir)
    windows = mlm_scorer.masked_windows(str(root / "vocab"), str(root / "eval" / "*.txt"),
                                        max_seq_len=32, seed=0)
    scored = mlm_scorer.score(hf_dir, windows)

    correct = total = 0
    for row, mask, labels in zip(windows["input_ids"], windows["input_mask"], windows["labels"]):
        positions = np.flatnonzero(labels >= 0)
        logits, _ = model.apply({"params": params}, jnp.asarray(row[None], jnp.int32),
                                jnp.zeros((1, len(row)), jnp.int32), jnp.asarray(mask[None]),
                                jnp.asarray(positions[None], jnp.int32))
        correct += int((np.asarray(logits[0]).argmax(-1) == labels[positions]).sum())
        total += len(positions)
    assert scored["masked"] == total
    assert scored["mlm_accuracy"] == pytest.approx(correct / total, abs=1.5 / total)
    assert 0 < scored["mlm_accuracy"] < 1


def test_run_mlm_flax_collator_masks_like_the_example():
    class Tokenizer:
        all_special_ids = [0, 1, 2, 3, 4]
        mask_token_id = 4

        def __len__(self):
            return 1000

    rows = np.random.default_rng(0).integers(5, 1000, (400, 128))
    rows[:, 0], rows[:, -1] = 2, 3
    inputs, labels = run_mlm_flax.mask_tokens(rows, Tokenizer(), np.random.default_rng(1))
    chosen = labels >= 0
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert chosen.mean() == pytest.approx(0.15 * 126 / 128, rel=0.03)
    np.testing.assert_array_equal(labels[chosen], rows[chosen])
    assert (inputs[chosen] == 4).mean() == pytest.approx(0.8, abs=0.02)
    assert (inputs[chosen] == rows[chosen]).mean() == pytest.approx(0.1, abs=0.02)
    np.testing.assert_array_equal(inputs[~chosen], rows[~chosen])
