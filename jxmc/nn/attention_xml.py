"""The network of AttentionXML (You et al., "AttentionXML: Label Tree-based
Attention-Aware Deep Model for High-Performance Extreme Multi-Label Text
Classification", NeurIPS 2019, Section 3.2): word embeddings, a bidirectional
LSTM, multi-label attention, fully connected layers and one score per label
(here: per node of one tree level).

For a text of ``s`` words (ids ``i32[s]``, ``0`` = padding):

1. word representation: ``x_i = E[id_i]`` (``E: f32[V, e]``), with dropout;
2. BiLSTM (Section 3.2, "Bidirectional LSTM layer"): ``h_i = [h_i_fwd; h_i_bwd]``,
   ``f32[s, 2h]`` (``flax.linen.RNN`` over an ``LSTMCell`` each way, joined by
   ``nn.Bidirectional``; the backward pass starts at each text's last real word);
3. multi-label attention ("Multi-label attention"): node ``j`` has its own vector
   ``w_j: f32[2h]`` and attends over the words,
   ``alpha_ij = exp(h_i . w_j) / sum_t exp(h_t . w_j)`` over the *real* words only
   (the weights of padding are 0, those of the real words sum to 1), giving
   ``m_j = sum_i alpha_ij h_i: f32[2h]`` (:func:`label_attention`);
4. fully connected layers shared by all nodes, ReLU, then an output layer (also
   shared) giving the score ``s_j`` (a logit; ``sigmoid(s_j)`` is the node's
   probability).

A level's network scores only the nodes it is asked for (``cand: i32[n, c]``,
the candidates of Section 3.3 in training, the beam's children in prediction), so
the attention costs ``n * c * s * 2h`` whatever the level's size.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jxmc.ops.ids import hits
from jxmc.tree.beam import children, expand, keep, leaf_topk


def label_attention(H: jax.Array, mask: jax.Array, q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Multi-label attention (pure; traceable).

    Args:
      H: ``f32[n, s, h]`` the words' representations.
      mask: ``i32[n, s]`` (or bool) 1 at real words, 0 at padding; every row needs at
        least one real word.
      q: ``f32[n, c, h]`` the attention vector of each of the ``c`` nodes asked for.

    Returns:
      ``(m: f32[n, c, h], alpha: f32[n, c, s])``: each node's attended representation
      and its weights, 0 at padding and summing to 1 over the real words.
    """
    logits = jnp.einsum("nsh,nch->ncs", H, q)
    alpha = jax.nn.softmax(logits, axis=-1, where=mask[:, None, :] > 0)
    alpha = jnp.where(mask[:, None, :] > 0, alpha, 0.0)
    return jnp.einsum("ncs,nsh->nch", alpha, H), alpha


class AttentionXML(nn.Module):
    """One level's AttentionXML network (module docstring).

    Attributes:
      vocab_size: ``V`` rows of the word table (``0`` padding, ``1`` unknown words).
      emb_dim: ``e`` the word vectors' width.
      hidden: ``h`` LSTM units per direction.
      linear: widths of the shared fully connected layers (ReLU after each).
      n_nodes: ``K_t`` nodes of the level (rows of the attention table).
      dropout: dropout rate on the word vectors and before the fully connected layers.
    """

    vocab_size: int
    emb_dim: int
    hidden: int
    linear: tuple[int, ...]
    n_nodes: int
    dropout: float = 0.5

    @nn.compact
    def __call__(self, ids: jax.Array, mask: jax.Array, cand: jax.Array, *,
                 deterministic: bool = True, return_weights: bool = False):
        """``f32[n, c]``: the logits of the nodes ``cand: i32[n, c]`` (ids in
        ``[0, n_nodes)``; the caller masks its padding) for ``ids, mask: i32[n, s]``;
        with ``return_weights``, ``(logits, alpha: f32[n, c, s])`` (the attention
        weights, :func:`label_attention`).

        Dropout (``deterministic=False``) draws from the ``"dropout"`` rng.
        """
        x = nn.Embed(self.vocab_size, self.emb_dim, name="embed")(ids)
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        lengths = jnp.maximum(mask.sum(axis=1), 1).astype(jnp.int32)
        bi = nn.Bidirectional(nn.RNN(nn.LSTMCell(self.hidden), name="forward"),
                              nn.RNN(nn.LSTMCell(self.hidden), name="backward"), name="bilstm")
        H = bi(x, seq_lengths=lengths)  # f32[n, s, 2h]
        table = self.param("attention", nn.initializers.normal(stddev=0.1),
                           (self.n_nodes, 2 * self.hidden), jnp.float32)
        z, alpha = label_attention(H, mask, table[cand])
        for i, width in enumerate(self.linear):
            z = nn.Dropout(self.dropout)(z, deterministic=deterministic)
            z = nn.relu(nn.Dense(width, name=f"fc_{i}")(z))
        logits = nn.Dense(1, name="out")(z)[..., 0]
        return (logits, alpha) if return_weights else logits


# --- one level's loss and the beam over the levels (Sections 3.3, 3.4) ---------------

def level_logits(module, params, ids, mask, cand, *, rng=None):
    """``f32[n, c]`` the logits of ``cand: i32[n, c]`` (``-1``: scored as node 0) by one
    level's ``module``; dropout on when an ``rng`` is given (training)."""
    train = rng is not None
    return module.apply({"params": params}, ids, mask, jnp.maximum(cand, 0),
                        deterministic=not train, rngs={"dropout": rng} if train else None)


def level_loss(params, batch, rng, *, module: AttentionXML, level: int, B: int, perm=None):
    """BCE of level ``level`` over its candidates: the children of ``batch["pos"][1]``
    (``i32[n, w]`` level ``level - 1`` nodes), targets ``batch["pos"][0]`` (the
    positive level nodes); summed over candidates, averaged over the valid points.
    ``perm``: at the label level, dummy leaves are no candidates."""
    cand = children(batch["pos"][1], B)
    ok = cand >= 0
    if perm is not None:
        ok &= perm[jnp.maximum(cand, 0)] >= 0
    logits = level_logits(module, params["heads"][f"level_{level}"], batch["ids"],
                           batch["mask"], cand, rng=rng)
    y = hits(cand, batch["pos"][0]).astype(jnp.float32)
    bce = optax.sigmoid_binary_cross_entropy(logits, y)
    per_point = jnp.where(ok, bce, 0.0).sum(1)
    valid = batch["valid"].astype(jnp.float32)
    loss = (per_point * valid).sum() / jnp.maximum(valid.sum(), 1.0)
    return loss, {}


def beam(heads, ids, mask, perm, *, modules, branching, depth: int, width: int):
    """Beam search over levels ``1 .. depth`` (traceable; Section 3.4).

    Returns:
      ``(nodes: i32[n, w], logp: f32[n, w])`` the best ``w = min(width, candidates)``
      level-``depth`` nodes (leaf positions at the label level, dummy leaves
      dropped), their path scores ``sum log sigmoid`` best first (``-1`` / ``-inf``
      padded).
    """
    n = ids.shape[0]
    parents = jnp.zeros((n, 1), jnp.int32)
    logp = jnp.zeros((n, 1), jnp.float32)
    D = len(branching)
    for t in range(1, depth + 1):
        def logits_of(cand, t=t):
            return level_logits(modules[t - 1], heads[f"level_{t}"], ids, mask, cand)

        cand, _, s = expand(parents, logp, int(branching[t - 1]), logits_of, jax.nn.log_sigmoid,
                            perm if t == D else None)
        parents, logp = keep(cand, s, min(width, s.shape[1]))
    return parents, logp


@functools.partial(jax.jit, static_argnames=("modules", "branching", "depth", "width"))
def beam_jit(heads, ids, mask, perm, *, modules, branching, depth, width):
    """:func:`beam`, compiled."""
    return beam(heads, ids, mask, perm, modules=modules, branching=branching, depth=depth,
                width=width)


@functools.partial(jax.jit, static_argnames=("modules", "branching", "depth", "beam_size", "k"))
def predict_topk(heads, ids, mask, perm, *, modules, branching, depth, beam_size, k):
    """:class:`TopK` of the labels: :func:`beam` over the levels above, then the leaves'
    ``k`` best (product of the level probabilities, Section 3.4)."""
    n = ids.shape[0]
    parents = jnp.zeros((n, 1), jnp.int32)
    logp = jnp.zeros((n, 1), jnp.float32)
    if depth > 1:
        parents, logp = beam(heads, ids, mask, perm, modules=modules, branching=branching,
                             depth=depth - 1, width=beam_size)

    def logits_of(cand):
        return level_logits(modules[depth - 1], heads[f"level_{depth}"], ids, mask, cand)

    cand, _, s = expand(parents, logp, int(branching[depth - 1]), logits_of, jax.nn.log_sigmoid,
                        perm)
    leaves, lp = keep(cand, s, min(k, s.shape[1]))
    return leaf_topk(leaves, lp, perm, k)
