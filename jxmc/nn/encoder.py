"""A BERT-family text encoder in Flax Linen that returns every layer's [CLS].

Devlin et al., "BERT", NAACL 2019 (post-LayerNorm Transformer encoder, Section 3);
the layer names and arithmetic follow Hugging Face's ``BertModel`` so that its
checkpoints load one-to-one (:mod:`jxmc.nn.weights`).

Why Linen rather than NNX: a Linen module is a pure function of an explicit
parameter pytree (``apply(params, ...)``), which is exactly what the rest of
jxmc passes around: method params are nested dicts of numpy arrays saved by
orbax, optax updates them directly, and the jitted train step donates them.
NNX would need ``nnx.split``/``nnx.merge`` at every one of those edges.

Compute dtype: ``dtype`` (bf16 on GPU/TPU, f32 on CPU, see
:func:`compute_dtype`); parameters stay f32, and the attention softmax, the
LayerNorms and the returned vectors are f32.

``cls_only=True`` computes the last layer for the [CLS] position alone (its
keys and values still come from every token): the [CLS] vectors are the same,
the mean-pooled output is not computed, and a 6-layer encoder does about 14 %
fewer FLOPs -- what CascadeXML and LightXML need, which read only [CLS] vectors.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The architecture, as in a Hugging Face ``config.json`` (``model_type: bert``)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BertConfig:
        """Reads the known keys of a ``config.json`` dict (others are ignored).

        Raises:
          ValueError: a model type, activation or position embedding this encoder lacks.
        """
        mtype = values.get("model_type", "bert")
        if mtype != "bert":
            raise ValueError(f"unsupported model_type {mtype!r} (only 'bert' is implemented)")
        if values.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {values.get('hidden_act')!r} (only 'gelu')")
        if values.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are implemented")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_json(self) -> str:
        return json.dumps({"model_type": "bert", "hidden_act": "gelu", **dataclasses.asdict(self)})


class EncoderOutput(NamedTuple):
    """Attributes:
      cls: f32[n, N, h] the [CLS] (first token) vector after each of the N layers.
      mean: f32[n, h] the last layer averaged over the non-padding tokens
        (sentence-transformers' mean pooling); None when called with ``cls_only``.
    """

    cls: jax.Array
    mean: jax.Array | None


def compute_dtype() -> jnp.dtype:
    """bf16 on GPU/TPU, f32 on CPU (where bf16 matmuls are slow and top-k falls back to sort)."""
    return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32


class _Layer(nn.Module):
    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic: bool, cls_only: bool = False):
        c = self.config
        n, s, h = x.shape
        nh = c.num_attention_heads
        dense = lambda f, name: nn.Dense(f, dtype=self.dtype, name=name)  # noqa: E731
        k = dense(h, "key")(x).reshape(n, s, nh, h // nh)
        v = dense(h, "value")(x).reshape(n, s, nh, h // nh)
        if cls_only:  # queries, and everything after attention, at position 0 only
            x = x[:, :1]
        q = dense(h, "query")(x).reshape(n, x.shape[1], nh, h // nh)
        logits = jnp.einsum("nqhd,nkhd->nhqk", q, k, preferred_element_type=jnp.float32)
        probs = jax.nn.softmax(logits / jnp.sqrt(h // nh).astype(jnp.float32) + bias, axis=-1)
        probs = nn.Dropout(c.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        ctx = jnp.einsum("nhqk,nkhd->nqhd", probs.astype(self.dtype), v).reshape(n, -1, h)
        a = dense(h, "attention_output")(ctx)
        a = nn.Dropout(c.hidden_dropout_prob)(a, deterministic=deterministic)
        x = nn.LayerNorm(c.layer_norm_eps, name="attention_ln")(x + a)
        f = nn.gelu(dense(c.intermediate_size, "intermediate")(x), approximate=False)
        f = dense(h, "output")(f)
        f = nn.Dropout(c.hidden_dropout_prob)(f, deterministic=deterministic)
        return nn.LayerNorm(c.layer_norm_eps, name="output_ln")(x + f).astype(self.dtype)


class BertEncoder(nn.Module):
    """``apply(params, ids, mask, deterministic=True) -> EncoderOutput``.

    Args (of ``__call__``):
      ids: i32[n, s] token ids (``s <= max_position_embeddings``).
      mask: i32[n, s] (or bool) 1 on real tokens, 0 on padding.
      deterministic: False enables dropout (pass ``rngs={"dropout": key}``).
      cls_only: the last layer at [CLS] only; ``mean`` is then None.

    Returns:
      :class:`EncoderOutput` in f32.
    """

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids, mask, deterministic: bool = True,
                 cls_only: bool = False) -> EncoderOutput:
        c = self.config
        s = ids.shape[1]
        init = nn.initializers.normal(0.02)
        x = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init, name="word_embeddings")(ids)
        x = x + nn.Embed(c.max_position_embeddings, c.hidden_size, embedding_init=init,
                         name="position_embeddings")(jnp.arange(s)[None, :])
        x = x + nn.Embed(c.type_vocab_size, c.hidden_size, embedding_init=init,
                         name="token_type_embeddings")(jnp.zeros_like(ids))
        x = nn.LayerNorm(c.layer_norm_eps, name="embeddings_ln")(x)
        x = nn.Dropout(c.hidden_dropout_prob)(x, deterministic=deterministic).astype(self.dtype)
        maskf = mask.astype(jnp.float32)
        bias = ((1.0 - maskf) * jnp.finfo(jnp.float32).min)[:, None, None, :]
        cls = []
        N = c.num_hidden_layers
        for i in range(N):
            x = _Layer(c, self.dtype, name=f"layer_{i}")(x, bias, deterministic,
                                                         cls_only and i == N - 1)
            cls.append(x[:, 0].astype(jnp.float32))
        if cls_only:
            return EncoderOutput(jnp.stack(cls, axis=1), None)
        xf = x.astype(jnp.float32)
        mean = (xf * maskf[:, :, None]).sum(1) / jnp.maximum(maskf.sum(1, keepdims=True), 1e-9)
        return EncoderOutput(jnp.stack(cls, axis=1), mean)


def init_params(config: BertConfig, key: jax.Array) -> dict:
    """Random f32 parameters (BERT's N(0, 0.02) embeddings, Linen's default dense init)."""
    ids = jnp.zeros((1, 2), jnp.int32)
    return BertEncoder(config).init(key, ids, jnp.ones_like(ids))["params"]
