"""Hugging Face reference models for equivalence tests: built from a config, never downloaded.

Every weight is drawn at random (LayerNorm scales around 1, biases non-zero too), because
transformers' own init leaves biases at 0 and scales at 1, which would hide a bias or scale
mapped to the wrong place.
"""
from __future__ import annotations

import functools
import os

import jax
import numpy as np
import torch
import transformers

from bert.model import BertConfig, BertForPreTraining, BertModel

# A small WordPiece vocabulary: specials, whole words, "##" continuations, punctuation, accented
# words and single CJK characters. The cased one adds capitalised and accented pieces.
_LOWER_WORDS = [
    "the", "a", "cat", "sat", "on", "mat", "dog", "ran", "to", "park", "in", "paris", "is", "big",
    "new", "york", "un", "##able", "##s", "##ing", "##ed", "##ly", "play", "run", "##n", "jump",
    "quick", "quickly", "brown", "fox", "cafe", "naive", "resume", "uber", "i", "like", "tea",
    "and", "coffee", "it", "was", "good", "bad", "but", "##er", "##est", "small", "old", "man",
]
_CASED_WORDS = ["The", "Cat", "Dog", "Paris", "New", "York", "I", "café", "naïve", "résumé", "über"]
_CJK = ["中", "国", "人", "大", "学", "日", "本", "北", "京"]
_PUNCTUATION = [".", ",", "!", "?", "'", '"', "(", ")", "-", ":", ";"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocab(cased: bool) -> list[str]:
    """The test vocabulary; the uncased one has no upper-case or accented pieces, as BERT's."""
    words = _LOWER_WORDS + (_CASED_WORDS if cased else [])
    return SPECIALS + ["[unused0]", "[unused1]"] + _PUNCTUATION + words + _CJK


def write_vocab(directory: str, *, cased: bool) -> list[str]:
    """vocab.txt + tokenizer_config.json in `directory`, as a Hugging Face BERT folder has them."""
    tokens = vocab(cased)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in tokens))
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write('{"do_lower_case": %s, "tokenizer_class": "BertTokenizer"}\n'
                % ("false" if cased else "true"))
    return tokens


def hf_config(vocab_size: int = 100, **overrides) -> transformers.BertConfig:
    """The small architecture the equivalence tests use (L=2, H=64, A=4, I=128, 64 positions)."""
    values = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=64, type_vocab_size=2)
    values.update(overrides)
    return transformers.BertConfig(**values)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Redraw every parameter (tied ones once) and switch to eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.05
            base = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            param.copy_(noise + base)
    return model.eval()


def pretraining_model(config: transformers.BertConfig, seed: int = 0) -> transformers.BertForPreTraining:
    torch.manual_seed(seed)
    return randomize(transformers.BertForPreTraining(config), seed)


def bare_model(config: transformers.BertConfig, *, pooler: bool,
               seed: int = 0) -> transformers.BertModel:
    torch.manual_seed(seed)
    return randomize(transformers.BertModel(config, add_pooling_layer=pooler), seed)


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}


def random_batch(vocab_size: int, batch_size: int = 3, seq_len: int = 12,
                 num_predictions: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Ids with padding in every row but the first, two segments, and masked positions."""
    rng = np.random.default_rng(seed)
    lengths = np.array([seq_len] + list(rng.integers(num_predictions + 2, seq_len, batch_size - 1)))
    mask = (np.arange(seq_len)[None] < lengths[:, None]).astype(np.int32)
    segment_ids = ((np.arange(seq_len)[None] >= (lengths // 2)[:, None]) * mask).astype(np.int32)
    input_ids = (rng.integers(5, vocab_size, (batch_size, seq_len)) * mask).astype(np.int32)
    positions = np.stack([rng.choice(np.arange(1, n - 1), num_predictions, replace=False)
                          for n in lengths]).astype(np.int32)
    return dict(input_ids=input_ids, segment_ids=segment_ids, input_mask=mask,
                masked_lm_positions=positions)


def torch_outputs(model: torch.nn.Module, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """hidden_states (L+1, B, T, H) and, for BertForPreTraining, MLM logits at the masked
    positions (B, P, V) and NSP logits (B, 2); for BertModel, the pooled output if it has one."""
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(batch["input_ids"]).long(),
            token_type_ids=torch.from_numpy(batch["segment_ids"]).long(),
            attention_mask=torch.from_numpy(batch["input_mask"]).long(),
            output_hidden_states=True,
        )
    result = {"hidden_states": np.stack([h.numpy() for h in out.hidden_states])}
    if isinstance(model, transformers.BertForPreTraining):
        positions = torch.from_numpy(batch["masked_lm_positions"]).long()
        logits = out.prediction_logits
        gathered = torch.gather(logits, 1, positions[..., None].expand(-1, -1, logits.shape[-1]))
        result["mlm_logits"] = gathered.numpy()
        result["nsp_logits"] = out.seq_relationship_logits.numpy()
    elif out.pooler_output is not None:
        result["pooled_output"] = out.pooler_output.numpy()
    return result


@functools.partial(jax.jit, static_argnums=0)
def _jax_forward(config: BertConfig, params: dict, batch: dict) -> dict:
    inputs = (batch["input_ids"], batch["segment_ids"], batch["input_mask"])
    encoded = BertModel(config).apply({"params": params["bert"]}, *inputs, output_hidden_states=True)
    mlm_logits, nsp_logits = BertForPreTraining(config).apply(
        {"params": params}, *inputs, batch["masked_lm_positions"])
    return {"hidden_states": jax.numpy.stack(encoded.hidden_states),
            "pooled_output": encoded.pooled_output, "mlm_logits": mlm_logits, "nsp_logits": nsp_logits}


def jax_outputs(params: dict, config: BertConfig, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same quantities as `torch_outputs`, from this project's BertForPreTraining params."""
    return {k: np.asarray(v) for k, v in _jax_forward(config, params, batch).items()}


# The transformers class of each task kind in bert/heads.py.
TASK_CLASSES = {
    "sequence_classification": transformers.BertForSequenceClassification,
    "regression": transformers.BertForSequenceClassification,
    "token_classification": transformers.BertForTokenClassification,
    "question_answering": transformers.BertForQuestionAnswering,
    "multiple_choice": transformers.BertForMultipleChoice,
}


def task_model(kind: str, config: transformers.BertConfig, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised transformers model with the head of `kind`."""
    torch.manual_seed(seed)
    return randomize(TASK_CLASSES[kind](config), seed)


def torch_task_outputs(model: torch.nn.Module, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`logits`, or `start_logits` and `end_logits` for QA; multiple-choice inputs are (B, C, T)."""
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(batch["input_ids"]).long(),
                    token_type_ids=torch.from_numpy(batch["segment_ids"]).long(),
                    attention_mask=torch.from_numpy(batch["input_mask"]).long())
    if isinstance(model, transformers.BertForQuestionAnswering):
        return {"start_logits": out.start_logits.numpy(), "end_logits": out.end_logits.numpy()}
    return {"logits": out.logits.numpy()}


def jax_task_outputs(model, params: dict, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same quantities as `torch_task_outputs`, from a bert.heads model."""
    out = jax.jit(model.apply)({"params": params}, batch["input_ids"], batch["segment_ids"],
                               batch["input_mask"])
    if isinstance(out, tuple):
        return {"start_logits": np.asarray(out[0]), "end_logits": np.asarray(out[1])}
    return {"logits": np.asarray(out)}
