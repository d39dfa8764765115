"""bert.features writes what transformers' output_hidden_states gives for the same text."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from bert import checkpoint, convert
from bert.features import extract_features, resolve_layers, tokenize_lines, write_features
from bert.tokenizer import load_tokenizer
from tests import hf_reference

LINES = [
    "The quick brown fox ran to the park.",
    "I like tea ||| and coffee, but naïve cats like 北京!",
    "",
    "A zebra? Unplayable xylophone.",
    "the cat sat on the mat ||| the dog ran",
]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A random HF BertModel folder with a WordPiece vocab, and its from-hf model folder."""
    root = tmp_path_factory.mktemp("features")
    model = hf_reference.bare_model(hf_reference.hf_config(vocab_size=90), pooler=True, seed=5)
    model.save_pretrained(str(root / "hf"))
    hf_reference.write_vocab(str(root / "hf"), cased=False)
    convert.import_hf(str(root / "hf"), str(root / "model"))
    (root / "lines.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return root, model


def _hf_reference(root, model, lines):
    """Token ids by BertTokenizerFast and every hidden state by transformers, for `lines`."""
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(root / "hf"))
    firsts, seconds = zip(*[(line.split(" ||| ") + [None])[:2] for line in lines])
    singles = [i for i, s in enumerate(seconds) if s is None]
    pairs = [i for i, s in enumerate(seconds) if s is not None]
    encoded = {}
    for rows, kwargs in ((singles, {}), (pairs, {"text_pair": [seconds[i] for i in pairs]})):
        batch = tokenizer([firsts[i] for i in rows], padding=True, return_tensors="pt", **kwargs)
        with torch.no_grad():
            hidden = model(**batch, output_hidden_states=True).hidden_states
        for j, row in enumerate(rows):
            n = int(batch["attention_mask"][j].sum())
            encoded[row] = (batch["input_ids"][j, :n].numpy(), batch["token_type_ids"][j, :n].numpy(),
                            np.stack([h[j, :n].numpy() for h in hidden]))
    return [encoded[i] for i in range(len(lines))]


def test_cli_output_equals_transformers_hidden_states(converted):
    root, model = converted
    out = root / "out.npz"
    result = subprocess.run(
        [sys.executable, "-m", "bert.features", "--checkpoint", str(root / "model"),
         "--input", str(root / "lines.txt"), "--output", str(out), "--layers=-1,0,1,-3",
         "--batch_size=2"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    arrays = dict(np.load(out))
    assert sorted(arrays) == ["input_ids", "layer_-1", "layer_-3", "layer_0", "layer_1", "mask",
                              "segment_ids"]
    reference = _hf_reference(root, model, LINES)
    longest = max(len(ids) for ids, _, _ in reference)
    assert arrays["input_ids"].shape == arrays["mask"].shape == (len(LINES), longest)
    assert arrays["input_ids"].dtype == np.int32 and arrays["layer_0"].dtype == np.float32
    for row, (ids, segments, hidden) in enumerate(reference):
        n = len(ids)
        assert arrays["mask"][row].tolist() == [1] * n + [0] * (longest - n)
        np.testing.assert_array_equal(arrays["input_ids"][row, :n], ids)
        np.testing.assert_array_equal(arrays["segment_ids"][row, :n], segments)
        for key, layer in (("layer_0", 0), ("layer_1", 1), ("layer_-1", 2), ("layer_-3", 0)):
            assert arrays[key].shape == (len(LINES), longest, 64)
            np.testing.assert_allclose(arrays[key][row, :n], hidden[layer], atol=1e-4, rtol=0,
                                       err_msg=f"line {row}, {key}")
            assert not arrays[key][row, n:].any()
    assert reference[2][0].tolist() == [2, 3]  # the blank line keeps its row: [CLS] [SEP]


def test_batch_size_and_padding_do_not_change_features(converted):
    root, _ = converted
    config = checkpoint.read_model_config(str(root / "model"))
    tokenizer = load_tokenizer(str(root / "model" / "tokenizer"))
    params = checkpoint.load_params(str(root / "model"))["bert"]
    one = extract_features(config, tokenizer, params, LINES, [-1], batch_size=1, progress=False)
    many = extract_features(config, tokenizer, params, LINES * 3, [-1], batch_size=4, progress=False)
    np.testing.assert_allclose(many["layer_-1"][: len(LINES)], one["layer_-1"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(many["layer_-1"][len(LINES):2 * len(LINES)], one["layer_-1"],
                               atol=1e-5, rtol=0)


def test_long_lines_are_truncated_longest_segment_first(converted):
    root, _ = converted
    tokenizer = load_tokenizer(str(root / "model" / "tokenizer"))
    lines = ["the cat sat on the mat and the dog ran", "the cat sat on ||| a dog ran to",
             "the ||| a dog ran to the park", "the cat"]
    ids, segments, mask, truncated = tokenize_lines(tokenizer, lines, max_seq_len=8)
    tokens = [[tokenizer.id_to_token(i) for i in row[m > 0]] for row, m in zip(ids, mask)]
    assert tokens == [
        ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "[SEP]"],
        ["[CLS]", "the", "cat", "sat", "[SEP]", "a", "dog", "[SEP]"],  # ties shorten the second
        ["[CLS]", "the", "[SEP]", "a", "dog", "ran", "to", "[SEP]"],
        ["[CLS]", "the", "cat", "[SEP]"],
    ]
    assert segments[1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert truncated == 3 and ids.shape == (4, 8)


def test_layers_count_from_the_top_and_bad_ones_are_named():
    assert resolve_layers([0, 1, 12, -1, -13], num_layers=12) == [0, 1, 12, 12, 0]
    with pytest.raises(ValueError, match=r"--layers: layer 3 .* 2-layer model \(valid: -3..2\)"):
        resolve_layers([3], num_layers=2)


def test_bad_inputs_stop_with_the_file_named(converted, tmp_path):
    root, _ = converted
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8"):
        write_features(str(root / "model"), str(tmp_path / "latin1.txt"), str(tmp_path / "o.npz"), [-1])
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"empty.txt is empty"):
        write_features(str(root / "model"), str(tmp_path / "empty.txt"), str(tmp_path / "o.npz"), [-1])
    with pytest.raises(ValueError, match=r"--max_seq_len=65 must lie in 3..64"):
        write_features(str(root / "model"), str(root / "lines.txt"), str(tmp_path / "o.npz"), [-1],
                       max_seq_len=65)
    assert not os.path.exists(tmp_path / "o.npz")
