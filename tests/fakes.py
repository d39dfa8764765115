"""Small synthetic inputs shared by tests: batches in the pipeline's exact format."""
from __future__ import annotations

import numpy as np
from ml_collections import ConfigDict

from bert.config import pretraining_config


def random_batch(batch_size: int = 8, seq_len: int = 16, num_predictions: int = 3,
                 vocab_size: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch with padding, both segments and some zero-weight prediction slots."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq_len // 2, seq_len + 1, batch_size)
    input_mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int32)
    segment_ids = ((np.arange(seq_len)[None, :] >= lengths[:, None] // 2) * input_mask).astype(np.int32)
    positions = np.stack([np.sort(rng.choice(np.arange(1, n - 1), num_predictions, replace=False))
                          for n in lengths]).astype(np.int32)
    weights = np.ones((batch_size, num_predictions), np.float32)
    weights[:, -1] = rng.integers(0, 2, batch_size)
    return dict(
        input_ids=(rng.integers(5, vocab_size, (batch_size, seq_len)) * input_mask).astype(np.int32),
        input_mask=input_mask,
        segment_ids=segment_ids,
        masked_lm_positions=positions * weights.astype(np.int32),
        masked_lm_ids=(rng.integers(5, vocab_size, (batch_size, num_predictions)) * weights).astype(np.int32),
        masked_lm_weights=weights,
        next_sentence_labels=rng.integers(0, 2, batch_size).astype(np.int32),
        next_sentence_weights=np.ones(batch_size, np.float32),
    )


def tiny_config(**overrides) -> ConfigDict:
    """A valid pretraining config small enough for unit tests (vocabulary 100, 16 tokens)."""
    c = pretraining_config()
    c.model.preset = "tiny"
    c.model.vocab_size = 100
    c.model.max_position_embeddings = 32
    c.batch_size = 8
    c.max_seq_len = 16
    c.max_predictions_per_seq = 3
    c.train_steps = 100
    c.warmup_steps = 0
    c.learning_rate = 3e-3
    c.data.train_files = "unused"
    for key, value in overrides.items():
        target = c
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return c
