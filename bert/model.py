"""The BERT encoder and its pretraining heads as a functional Flax (linen) model.

Reads top to bottom: config and presets, embeddings, attention, feed-forward, block, encoder,
pooler, heads. Params are a plain pytree (see `init_params`); `apply` is pure. Every parameter
carries logical axis names (vocab, embed, heads, kv, mlp, ...) which `bert.partitioning` maps onto
a device mesh, so data / FSDP / tensor parallelism never touch this file.

Shape letters: B batch, T sequence, H hidden, N heads, D head size, I intermediate, V vocabulary,
P masked positions per sequence.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert import ops

Array = jax.Array

# (num_layers, hidden_size, num_heads); the intermediate size is 4 × hidden as in the paper.
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of one encoder. Serialised as JSON into every model folder."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    # Kept separate because any value > 0 forces the explicit softmax path during training;
    # 0 lets every step use the fused `jax.nn.dot_product_attention` (cuDNN flash on GPU).
    attention_dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # Activations and matmuls run in `dtype`; params and LayerNorm statistics stay float32.
    dtype: str = "float32"
    # Rematerialise each encoder block in the backward pass: "none", "full" or "dots"
    # (keep matmul outputs, recompute the rest).
    remat: str = "none"
    # Left-to-right attention: a token attends only to itself and earlier tokens, so its output
    # never depends on later ones (the paper's "LTR" ablation, Table 5). The pooler then reads
    # each row's last real token, the only one that has seen the whole input.
    causal: bool = False
    # A randomly initialised bidirectional LSTM (hidden_size / 2 units per direction) over the
    # last block's output, before the pooler and any head ("LTR + BiLSTM", Table 5).
    top_bilstm: bool = False
    # Where each block's LayerNorms sit. "post" (the paper's): x = LN(x + f(x)). "pre": x = x +
    # f(LN(x)), with one more LayerNorm ("final_norm") on the last block's output; the residual
    # stream is never normalised, so gradients reach the lower blocks undamped (at the demo's
    # size it measured no different from post-LN: docs/PERFORMANCE.md, "Time to accuracy").
    norm_position: str = "post"
    # Initial values of the learned position table: "normal" (the paper's, N(0, initializer_range)
    # truncated) or "sinusoidal" (Vaswani et al.'s sines and cosines, scaled to the same spread),
    # from which attention can tell near from far tokens at step 0 instead of having to learn it.
    # Only the start differs: the table stays learned and exports to transformers unchanged.
    position_init: str = "normal"
    # Initial attention weights: "normal" (the paper's) or "mimetic" (Trockman & Kolter 2023,
    # "Mimetic initialization of self-attention layers"): each head's W_q·W_k^T starts near a
    # multiple of the identity, so a token attends at step 0 to tokens like it (with sinusoidal
    # positions: to its neighbours), and W_v·W_o near minus the identity. At the demo's size it
    # leaves the masked-LM unigram plateau that the normal start stays on (docs/PERFORMANCE.md,
    # "Leaving the unigram plateau"). Only the start differs: the export to transformers is unchanged.
    attention_init: str = "normal"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"config.model.hidden_size={self.hidden_size} is not divisible by "
                f"config.model.num_heads={self.num_heads}"
            )
        if self.remat not in ("none", "full", "dots"):
            raise ValueError(f"config.model.remat must be none, full or dots, got {self.remat!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"config.model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.norm_position not in ("post", "pre"):
            raise ValueError(f"config.model.norm_position must be post or pre, got {self.norm_position!r}")
        if self.position_init not in ("normal", "sinusoidal"):
            raise ValueError("config.model.position_init must be normal or sinusoidal, "
                             f"got {self.position_init!r}")
        if self.attention_init not in ("normal", "mimetic"):
            raise ValueError("config.model.attention_init must be normal or mimetic, "
                             f"got {self.attention_init!r}")
        if self.top_bilstm and self.hidden_size % 2:
            raise ValueError(f"top_bilstm needs an even hidden_size, got {self.hidden_size}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BertConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown BertConfig keys: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "BertConfig":
        """A named size (tiny … large) with any field overridden; None overrides are ignored."""
        if name not in PRESETS:
            raise ValueError(f"config.model.preset={name!r} is not one of {', '.join(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        values: dict[str, Any] = dict(
            num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)


def _dense_init(config: BertConfig, names: tuple[str | None, ...]) -> Callable:
    return nn.with_logical_partitioning(
        nn.initializers.truncated_normal(config.initializer_range), names
    )


def sinusoidal_positions(length: int, width: int, std: float) -> Array:
    """(length, width) sines and cosines of geometric frequencies, scaled to standard deviation
    `std` (their own is 1/sqrt(2)): row t is [sin(t·w_i), cos(t·w_i)] for w_i = 10000^(-2i/width)."""
    frequencies = 10000.0 ** (-jnp.arange(0, width, 2, dtype=jnp.float32) / width)
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * frequencies[None, :]
    table = jnp.zeros((length, width), jnp.float32)
    table = table.at[:, 0::2].set(jnp.sin(angles)).at[:, 1::2].set(jnp.cos(angles[:, : width // 2]))
    return table * (std * jnp.sqrt(2.0))


def _position_init(config: BertConfig) -> Callable:
    if config.position_init == "normal":
        return _dense_init(config, (None, "embed"))

    def init(rng: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        del rng
        return sinusoidal_positions(shape[0], shape[1], config.initializer_range).astype(dtype)

    return nn.with_logical_partitioning(init, (None, "embed"))


def _zeros(names: tuple[str | None, ...]) -> Callable:
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=_zeros(("embed",)),
        name=name,
    )


class Embeddings(nn.Module):
    """Token + segment + learned position embeddings, then LayerNorm and dropout."""

    config: BertConfig

    def setup(self) -> None:
        cfg = self.config
        self.word_embeddings = nn.Embed(
            cfg.vocab_size, cfg.hidden_size, embedding_init=_dense_init(cfg, ("vocab", "embed"))
        )
        self.position_embeddings = nn.Embed(
            cfg.max_position_embeddings,
            cfg.hidden_size,
            embedding_init=_position_init(cfg),
        )
        self.token_type_embeddings = nn.Embed(
            cfg.type_vocab_size, cfg.hidden_size, embedding_init=_dense_init(cfg, (None, "embed"))
        )
        self.layer_norm = _layer_norm(cfg, "layer_norm")
        self.dropout = ops.Dropout(cfg.dropout_rate)

    def __call__(
        self, input_ids: Array, segment_ids: Array, position_ids: Array, deterministic: bool
    ) -> Array:
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(segment_ids)
        )  # (B, T, H)
        x = self.layer_norm(x)
        return self.dropout(x, deterministic=deterministic).astype(self.config.compute_dtype)


class FusedQKV(nn.Module):
    """Query, key and value projections as one (H, 3, N, D) kernel: one matmul instead of three.

    The params are those of `nn.DenseGeneral(features=(3, N, D))` (same names, shapes and
    initial values). With `query_rows`, queries are projected only for those rows of `x`, while
    keys and values are projected for every row (see `EncoderBlock`).
    """

    config: BertConfig
    initial_kernel: Array | None = None  # (H, 3, N, D): the mimetic start (see SelfAttention)

    @nn.compact
    def __call__(self, x: Array, query_rows: Array | None = None) -> tuple[Array, Array, Array]:
        cfg = self.config
        features = (3, cfg.num_heads, cfg.head_size)
        names = ("embed", None, "heads", "kv")
        init = _dense_init(cfg, names)

        def kernel_init(rng: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
            if self.initial_kernel is not None:
                return nn.with_logical_partitioning(lambda: self.initial_kernel.astype(dtype),
                                                    names)()
            # DenseGeneral draws its kernel as (H, 3·N·D): keep its initial values.
            return _reshape_boxed(init(rng, (shape[0], 3 * cfg.hidden_size), dtype), shape)

        kernel = self.param("kernel", kernel_init, (x.shape[-1], *features), jnp.float32)
        bias = self.param("bias", _zeros((None, "heads", "kv")), features, jnp.float32)
        kernel, bias = kernel.astype(cfg.compute_dtype), bias.astype(cfg.compute_dtype)
        x = x.astype(cfg.compute_dtype)
        if query_rows is None:
            qkv = _project(x, kernel) + bias  # (B, T, 3, N, D)
            return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        kv = _project(x, kernel[:, 1:]) + bias[1:]  # (B, T, 2, N, D)
        query = _project(query_rows.astype(cfg.compute_dtype), kernel[:, 0]) + bias[0]
        return query, kv[:, :, 0], kv[:, :, 1]


def _project(x: Array, kernel: Array) -> Array:
    """x (..., H) contracted with kernel (H, ...)."""
    return ops.dense_dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _rows(x: Array, positions: Array) -> Array:
    """x (B, T, H) at positions (B, Q): (B, Q, H)."""
    return jnp.take_along_axis(x, positions[..., None], axis=1)


def _reshape_boxed(value: Any, shape: tuple[int, ...]) -> Any:
    if isinstance(value, nn.meta.AxisMetadata):
        return nn.meta.replace_boxed(value, jnp.reshape(value.unbox(), shape))
    return jnp.reshape(value, shape)


# Mimetic start (Trockman & Kolter 2023): W_q·W_k^T ≈ ALPHA·Z + BETA_QK·I per head and
# W_v·W_o ≈ ALPHA·Z' - BETA_VO·I, Z and Z' with N(0, 1/H) entries. Chosen by measurement at the
# demo's size (docs/PERFORMANCE.md): a self-similarity score of about BETA_QK·D/√D at step 0.
MIMETIC_ALPHA, MIMETIC_BETA_QK, MIMETIC_BETA_VO = 0.3, 0.5, 0.3


def _factor(rng: Array, width: int, beta: float, rank: int) -> tuple[Array, Array]:
    """A, B (width, rank) with A·B^T the best rank-`rank` fit of ALPHA·Z + beta·I."""
    z = jax.random.normal(rng, (width, width), jnp.float32) / jnp.sqrt(width)
    u, s, vt = jnp.linalg.svd(MIMETIC_ALPHA * z + beta * jnp.eye(width))
    root = jnp.sqrt(s[:rank])
    return u[:, :rank] * root, vt[:rank].T * root


def mimetic_kernels(rng: Array, config: BertConfig) -> tuple[Array, Array]:
    """The fused QKV kernel (H, 3, N, D) and output kernel (N, D, H) of one mimetic block."""
    h, n, d = config.hidden_size, config.num_heads, config.head_size
    qk_rngs = jax.random.split(rng, n + 1)
    queries, keys = zip(*(_factor(qk_rngs[i], h, MIMETIC_BETA_QK, d) for i in range(n)))
    values, outputs = _factor(qk_rngs[n], h, -MIMETIC_BETA_VO, h)  # W_o = outputs^T
    qkv = jnp.stack([jnp.stack(queries, 1), jnp.stack(keys, 1), values.reshape(h, n, d)], 1)
    return qkv, outputs.T.reshape(n, d, h)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array, deterministic: bool,
                 query_rows: Array | None = None) -> Array:
        """x (B, T, H) -> (B, T, H); with query_rows (B, Q, H), some of x's rows, only those
        attend (to all of x): (B, Q, H). attention_mask broadcasts to (B, N, T|Q, T)."""
        cfg = self.config
        qkv_start = out_start = None
        if cfg.attention_init == "mimetic" and self.is_initializing():
            # One draw shapes both projections, so it is made here rather than in either's init.
            qkv_start, out_start = mimetic_kernels(self.make_rng("params"), cfg)
        out_init = _dense_init(cfg, ("heads", "kv", "embed"))
        if out_start is not None:
            out_init = nn.with_logical_partitioning(
                lambda rng, shape, dtype=jnp.float32: out_start.astype(dtype),
                ("heads", "kv", "embed"))
        query, key, value = FusedQKV(cfg, qkv_start, name="qkv")(x, query_rows)  # (B, T|Q, N, D)
        if cfg.attention_dropout_rate > 0.0 and not deterministic:
            context = self._attention_with_dropout(query, key, value, attention_mask)
        else:
            context = jax.nn.dot_product_attention(query, key, value, mask=attention_mask)
        return nn.DenseGeneral(
            features=cfg.hidden_size,
            axis=(-2, -1),
            dtype=cfg.compute_dtype,
            dot_general=ops.dense_dot_general,
            kernel_init=out_init,
            bias_init=_zeros(("embed",)),
            name="out",
        )(context)  # (B, T|Q, H)

    def _attention_with_dropout(
        self, query: Array, key: Array, value: Array, attention_mask: Array
    ) -> Array:
        """The paper's attention: softmax probabilities themselves are dropped out."""
        scale = 1.0 / jnp.sqrt(jnp.asarray(self.config.head_size, query.dtype))
        scores = jnp.einsum("btnd,bsnd->bnts", query * scale, key)  # (B, N, T, S)
        big_negative = jnp.finfo(jnp.float32).min
        scores = jnp.where(attention_mask, scores.astype(jnp.float32), big_negative)
        probs = jax.nn.softmax(scores, axis=-1).astype(query.dtype)
        probs = ops.Dropout(self.config.attention_dropout_rate)(probs, deterministic=False)
        return jnp.einsum("bnts,bsnd->btnd", probs, value)  # (B, T, N, D)


class FeedForward(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        h = nn.Dense(
            cfg.intermediate_size,
            dtype=cfg.compute_dtype,
            dot_general=ops.dense_dot_general,
            kernel_init=_dense_init(cfg, ("embed", "mlp")),
            bias_init=_zeros(("mlp",)),
            name="intermediate",
        )(x)  # (B, T, I)
        h = ops.gelu(h)
        return nn.Dense(
            cfg.hidden_size,
            dtype=cfg.compute_dtype,
            dot_general=ops.dense_dot_general,
            kernel_init=_dense_init(cfg, ("mlp", "embed")),
            bias_init=_zeros(("embed",)),
            name="output",
        )(h)  # (B, T, H)


class EncoderBlock(nn.Module):
    """Transformer block: post-LayerNorm as in the paper, or pre-LayerNorm (norm_position)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array, deterministic: bool,
                 output_positions: Array | None = None) -> Array:
        """x (B, T, H) -> (B, T, H), or only the rows at output_positions (B, Q): (B, Q, H).

        The last block of a pretraining step runs this way: its outputs are read only at the
        masked positions and [CLS], so its queries, FFN and LayerNorms run on those rows alone.
        Keys and values still come from every row, so the rows computed equal the full block's.
        """
        cfg = self.config
        dropout = ops.Dropout(cfg.dropout_rate)
        query_rows = None
        if output_positions is not None:
            query_rows = _rows(x, output_positions)
            if attention_mask.shape[2] > 1:  # a mask per query (packed rows): keep those asked
                attention_mask = jnp.take_along_axis(
                    attention_mask, output_positions[:, None, :, None], axis=2)
        attention_norm = _layer_norm(cfg, "attention_norm")
        output_norm = _layer_norm(cfg, "output_norm")
        attention = SelfAttention(cfg, name="attention")
        mlp = FeedForward(cfg, name="mlp")
        if cfg.norm_position == "pre":
            # LayerNorm is per row, so the asked rows of LN(x) are LN of the asked rows.
            normed = attention_norm(x).astype(cfg.compute_dtype)
            normed_rows = None if query_rows is None else _rows(normed, output_positions)
            attended = attention(normed, attention_mask, deterministic, normed_rows)
            x = x if query_rows is None else query_rows
            x = x + dropout(attended, deterministic=deterministic).astype(x.dtype)
            transformed = mlp(output_norm(x).astype(cfg.compute_dtype))
            return (x + dropout(transformed, deterministic=deterministic)).astype(cfg.compute_dtype)
        attended = attention(x, attention_mask, deterministic, query_rows)
        x = x if query_rows is None else query_rows
        x = attention_norm(x + dropout(attended, deterministic=deterministic))
        x = x.astype(cfg.compute_dtype)
        transformed = mlp(x)
        x = output_norm(x + dropout(transformed, deterministic=deterministic))
        return x.astype(cfg.compute_dtype)


class BiLSTM(nn.Module):
    """One bidirectional LSTM layer, `units` per direction: (B, T, F) -> (B, T, 2·units), float32.

    Padding (input_mask 0) is skipped: the backward direction starts at each row's last real
    token. The encoder's top_bilstm is one with hidden_size / 2 units; the feature-based tagger
    (bert/tasks/feature_probe.py) stacks two.
    """

    units: int

    @nn.compact
    def __call__(self, x: Array, input_mask: Array) -> Array:
        lengths = jnp.sum(input_mask, axis=-1).astype(jnp.int32)  # (B,)
        return nn.Bidirectional(  # parent=None: the RNNs and cells belong to this module
            nn.RNN(nn.OptimizedLSTMCell(self.units, parent=None), parent=None),
            nn.RNN(nn.OptimizedLSTMCell(self.units, parent=None), reverse=True, keep_order=True,
                   parent=None),
            name="lstm")(x.astype(jnp.float32), seq_lengths=lengths)  # (B, T, 2·units)


def causal_mask(seq_len: int) -> Array:
    """(1, 1, T, S) True where query t may attend to key s: s <= t."""
    positions = jnp.arange(seq_len)
    return (positions[:, None] >= positions[None, :])[None, None]


def last_real_positions(input_mask: Array) -> Array:
    """(B, 1) index of each row's last real token (0 for an empty row)."""
    return jnp.maximum(jnp.sum(input_mask, axis=-1, keepdims=True) - 1, 0).astype(jnp.int32)


class EncoderOutput(NamedTuple):
    sequence_output: Array  # (B, T, H): output of the last block; (B, Q, H) at output_positions
    pooled_output: Array  # (B, H): tanh(dense([CLS])); (B, K, H) at cls_positions (B, K)
    # (B, T, H) per layer when asked for: index 0 is the embedding output, i the output of block i.
    hidden_states: tuple[Array, ...] | None


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class BertModel(nn.Module):
    """Embeddings, `num_layers` encoder blocks and the pooler: the part every task shares.

    `prune_last_layer` (default) lets the last block compute only the rows that
    `output_positions` asks for; False computes every row and gathers them after.
    """

    config: BertConfig
    prune_last_layer: bool = True

    def setup(self) -> None:
        cfg = self.config
        self.embeddings = Embeddings(cfg)
        block = EncoderBlock
        if cfg.remat != "none":
            block = nn.remat(
                EncoderBlock, policy=_REMAT_POLICIES[cfg.remat], static_argnums=(3,)
            )
        self.layers = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
        self.pooler = nn.Dense(
            cfg.hidden_size,
            dtype=cfg.compute_dtype,
            dot_general=ops.dense_dot_general,
            kernel_init=_dense_init(cfg, ("embed", "embed_out")),
            bias_init=_zeros(("embed_out",)),
        )
        if cfg.norm_position == "pre":  # the blocks' residual sum, normalised once at the top
            self.final_norm = _layer_norm(cfg, "final_norm")
        if cfg.top_bilstm:
            self.bilstm = BiLSTM(cfg.hidden_size // 2)

    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array,
        input_mask: Array,
        *,
        position_ids: Array | None = None,
        pack_ids: Array | None = None,
        cls_positions: Array | None = None,
        output_positions: Array | None = None,
        deterministic: bool = True,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        """input_ids, segment_ids, input_mask: int (B, T); input_mask is 1 on real tokens.

        Packed rows (several sequences per row, see bert/data/packing.py) also pass pack_ids
        (B, T) (k on the k-th sequence, 0 on padding) so that tokens attend only within their own
        sequence, and cls_positions (B, K), where the pooler reads each sequence's [CLS].

        With output_positions (B, Q), sequence_output holds only those rows, (B, Q, H), and the
        last block computes only them and the [CLS] rows (see EncoderBlock): what a head that
        reads a few positions needs, for a fraction of the last block's work.
        """
        cfg = self.config
        # The BiLSTM reads every row of the last block, so that block cannot be pruned.
        prune = output_positions is not None and self.prune_last_layer and not cfg.top_bilstm
        if prune and output_hidden_states:
            raise ValueError("output_positions and output_hidden_states exclude each other: the "
                             "last block computes only the asked rows")
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        x = self.embeddings(input_ids, segment_ids, position_ids, deterministic)  # (B, T, H)
        if pack_ids is None:
            attention_mask = input_mask.astype(bool)[:, None, None, :]  # (B, 1, 1, S)
        else:  # block diagonal; padding attends to padding, so no row is fully masked
            attention_mask = (pack_ids[:, :, None] == pack_ids[:, None, :])[:, None]  # (B, 1, T, S)
        one_cls = cls_positions is None  # pooled (B, H), not one per packed sequence (B, K, H)
        if cfg.causal:
            attention_mask = attention_mask & causal_mask(input_ids.shape[-1])  # (B, 1, T, S)
            if one_cls:  # the pooler reads the one row that has seen every token
                cls_positions = last_real_positions(input_mask)
        hidden_states = [x]
        for layer in self.layers[:-1]:
            x = layer(x, attention_mask, deterministic)
            hidden_states.append(x)
        if prune:  # [CLS] rows first, then the asked ones
            cls_rows = jnp.zeros_like(input_ids[:, :1]) if cls_positions is None else cls_positions
            x = self._top(self.layers[-1](x, attention_mask, deterministic,
                                          jnp.concatenate([cls_rows, output_positions], axis=1)))
            cls, x = x[:, : cls_rows.shape[1]], x[:, cls_rows.shape[1]:]
        else:
            # The top layer's output is what every head reads: normalised under pre-LN.
            x = self._top(self.layers[-1](x, attention_mask, deterministic))
            hidden_states.append(x)
            if cfg.top_bilstm:
                x = self.bilstm(x, input_mask).astype(cfg.compute_dtype)
            cls = x[:, :1] if cls_positions is None else _rows(x, cls_positions)
            if output_positions is not None:
                x = _rows(x, output_positions)
        if one_cls:
            cls = cls[:, 0]  # (B, H); else (B, K, H)
        pooled = jnp.tanh(self.pooler(cls))
        return EncoderOutput(x, pooled, tuple(hidden_states) if output_hidden_states else None)

    def _top(self, x: Array) -> Array:
        if self.config.norm_position == "pre":
            return self.final_norm(x).astype(self.config.compute_dtype)
        return x

    def word_embedding_table(self) -> Array:
        """(V, H) token embeddings; the MLM decoder is tied to them."""
        return self.embeddings.word_embeddings.embedding


class MaskedLMHead(nn.Module):
    """Dense + GELU + LayerNorm, then a decoder tied to the word embeddings plus an output bias."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, embedding_table: Array) -> Array:
        cfg = self.config
        h = nn.Dense(
            cfg.hidden_size,
            dtype=cfg.compute_dtype,
            dot_general=ops.dense_dot_general,
            kernel_init=_dense_init(cfg, ("embed", "embed_out")),
            bias_init=_zeros(("embed_out",)),
            name="transform",
        )(x)
        h = _layer_norm(cfg, "layer_norm")(ops.gelu(h))
        bias = self.param("output_bias", _zeros(("vocab",)), (cfg.vocab_size,), jnp.float32)
        logits = jnp.einsum(
            "...h,vh->...v", h.astype(cfg.compute_dtype), embedding_table.astype(cfg.compute_dtype)
        )
        return logits.astype(jnp.float32) + bias  # (..., V)


class BertForPreTraining(nn.Module):
    """The encoder with the MLM head (only on gathered masked positions) and the NSP head.

    The heads read the last block's output only at the masked positions and [CLS], so by
    default that block computes only those rows (`BertModel`'s output_positions): the same
    outputs and gradients for ~70% less of its work. `prune_last_layer=False` computes every row.
    """

    config: BertConfig
    prune_last_layer: bool = True

    def setup(self) -> None:
        cfg = self.config
        self.bert = BertModel(cfg, prune_last_layer=self.prune_last_layer)
        self.mlm = MaskedLMHead(cfg)
        self.nsp = nn.Dense(
            2,
            dtype=jnp.float32,
            kernel_init=_dense_init(cfg, ("embed", None)),
            bias_init=_zeros((None,)),
        )

    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array,
        input_mask: Array,
        masked_lm_positions: Array,
        *,
        position_ids: Array | None = None,
        pack_ids: Array | None = None,
        nsp_positions: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, Array]:
        """Returns MLM logits (B, P, V) at `masked_lm_positions` (B, P) and NSP logits (B, 2).

        NSP class 0 is IsNext and 1 is NotNext, as in the original release. Packed rows pass
        position_ids, pack_ids (B, T) and nsp_positions (B, K) (see BertModel); NSP logits are
        then (B, K, 2), one per packed sequence.
        """
        encoded = self.bert(
            input_ids, segment_ids, input_mask, position_ids=position_ids, pack_ids=pack_ids,
            cls_positions=nsp_positions, output_positions=masked_lm_positions,
            deterministic=deterministic,
        )
        # Running the head on P ≈ 0.15·T gathered rows instead of all T is most of its saving.
        mlm_logits = self.mlm(encoded.sequence_output, self.bert.word_embedding_table())  # (B, P, V)
        nsp_logits = self.nsp(encoded.pooled_output.astype(jnp.float32))
        return mlm_logits, nsp_logits


def dummy_inputs(batch_size: int = 1, seq_len: int = 8, num_predictions: int = 2) -> dict[str, Array]:
    """Shape-only inputs for initialisation and `jax.eval_shape`."""
    ids = jnp.zeros((batch_size, seq_len), jnp.int32)
    return dict(
        input_ids=ids,
        segment_ids=ids,
        input_mask=jnp.ones_like(ids),
        masked_lm_positions=jnp.zeros((batch_size, num_predictions), jnp.int32),
    )


def init_params(model: nn.Module, rng: Array) -> Any:
    """Fresh params as a plain pytree (logical-axis boxes removed)."""
    inputs = dummy_inputs()
    if not isinstance(model, BertForPreTraining):
        inputs.pop("masked_lm_positions")
    variables = model.init(rng, **inputs)
    return nn.meta.unbox(variables["params"])


def count_params(model: nn.Module) -> int:
    """Number of parameters, computed from shapes alone."""
    inputs = dummy_inputs()
    if not isinstance(model, BertForPreTraining):
        inputs.pop("masked_lm_positions")
    shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.key(0), **inputs)))
    return sum(x.size for x in jax.tree.leaves(shapes["params"]))
