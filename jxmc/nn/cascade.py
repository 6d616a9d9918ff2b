"""A multi-resolution shortlist network: an encoder plus one label table per tree level.

The encoder is any Flax module mapping a batch of token ids to per-layer features
(:class:`jxmc.nn.encoder.EncoderOutput`; BERT, :class:`jxmc.nn.encoder.BertEncoder`,
by default), so another encoder (a BiLSTM for AttentionXML) takes the same path.
Level ``t`` (1-based) of a complete label tree with branching ``(B_1, ..., B_D)``
is scored from its own representation (``layers[t-1]``: the concatenated
per-layer features -- BERT's [CLS] -- of those encoder layers, or the mean-pooled
output for ``()``), optionally projected (``proj_w: [h', h_t]``), against the
table ``level_t``.  Level 1 is scored densely; the shortlist of level ``t + 1`` is
the children of the ``beam`` best level-``t`` nodes (prediction); in training
(``positives`` given) the children of the parents ``spec.negatives`` chooses
(:func:`jxmc.tree.shortlist.train_parents`: by default ``tfn+man``, the beam's and the
positive level-``t`` nodes): one beam expansion per level
(:func:`jxmc.tree.beam.keep`, :func:`jxmc.tree.beam.expand`, as in
:func:`jxmc.tree.beam.beam_search`) -- CascadeXML (Kharbanda et al., NeurIPS
2022, Section 3.2), LightXML's dynamic negatives (Jiang et al., AAAI 2021,
Section 3.3) and XR-Transformer's TFN+MAN (Zhang et al., NeurIPS 2021, 4.2).

A node's path score is the sum of ``log sigmoid`` of its own and its
ancestors' scores (the product of probabilities of CascadeXML/LightXML at
prediction); the beam keeps the best path scores.  The loss of a level is
binary cross-entropy over its shortlist, summed over candidates and averaged
over the valid points of the batch.

On a device mesh (``mesh=``, :mod:`jxmc.sharding`: points on ``data``, every
level's table rows on ``model``) the two label-parallel steps are written by hand
rather than left to XLA's partitioner, which would gather the whole
``n x K_1`` dense level for its top-k and the ``n x c x h`` shortlist rows: the
dense level's top-k is :func:`jxmc.ops.topk.sharded_top_k` (each shard's best,
then a merge of ``M x beam`` candidates), and at prediction a shortlist is scored
by the shard owning each row, the ``n / D x c`` scores summed over ``model``
(exact zeros from the other shards), as XR-Linear's beam on a mesh
(:mod:`jxmc.models.tree_linear.mesh`).  The results are the single-device ones.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from jxmc.nn.heads import score_dense, score_shortlist
from jxmc.ops.ids import hits
from jxmc.ops.topk import sharded_top_k
from jxmc.sharding import DATA, MODEL
from jxmc.tree.beam import expand, keep, leaf_topk
from jxmc.tree.shortlist import NEGATIVES, man_parents, train_parents
from jxmc.types import TopK


class Spec(NamedTuple):
    """Static description of the network (hashable; a ``jit`` static argument).

    Attributes:
      encoder: the encoder, a (hashable) Flax module called as
        ``apply({"params": p}, ids: i32[n, s], mask: i32[n, s], deterministic=,
        cls_only=, rngs=)`` returning :class:`jxmc.nn.encoder.EncoderOutput`
        (``cls: f32[n, N, h]`` one feature per layer, ``mean: f32[n, h]``, which it may
        skip under ``cls_only``), e.g. ``BertEncoder(config, dtype)``.
      branching: ``(B_1, ..., B_D)``.
      layers: per level, the encoder layers (0-based) whose [CLS] are
        concatenated; ``()`` uses the mean-pooled last layer.
      beam: level-``t`` nodes whose children form the level-``t + 1`` shortlist.
      dropout: dropout on the representations in training.
      dtype: compute dtype name (``"float32"`` or ``"bfloat16"``).
      negatives: the training shortlist of levels ``2 .. D`` (one of
        :data:`jxmc.tree.shortlist.NEGATIVES`; :func:`jxmc.tree.shortlist.train_parents`);
        level 1 is scored densely whatever it is, prediction always uses the beam.
    """

    encoder: Any  # a flax.linen.Module
    branching: tuple[int, ...]
    layers: tuple[tuple[int, ...], ...]
    beam: int
    dropout: float = 0.0
    dtype: str = "float32"
    negatives: str = "tfn+man"


class Level(NamedTuple):
    """Attributes: ``ids: i32[n, c]`` level nodes (-1 padded), ``scores: f32[n, c]``
    their logits, ``logp: f32[n, c]`` their path scores (``-inf`` at padding), ``x:
    [n, h_t]`` the features the level's rows were scored on (after dropout and the
    projection, if any)."""

    ids: jax.Array
    scores: jax.Array
    logp: jax.Array
    x: jax.Array | None = None


def _representation(out, layers, dtype):
    if not layers:
        return out.mean.astype(dtype)
    return jnp.concatenate([out.cls[:, i] for i in layers], axis=-1).astype(dtype)


def keep_dense(level: Level, width: int, mesh=None) -> tuple[jax.Array, jax.Array]:
    """:func:`jxmc.tree.beam.keep` of a densely scored level (``level.ids`` node
    ``j`` in column ``j``, ``-1`` at dummy leaves): ``(ids: i32[n, width], logp:
    f32[n, width])``.  On a ``mesh`` the two-stage :func:`jxmc.ops.topk.sharded_top_k`
    (the columns split on ``model``; the same result, ties included), whose column
    ids are the node ids, so nothing of ``n x K`` is gathered."""
    if mesh is None:
        return keep(level.ids, level.logp, width)
    lp, j = sharded_top_k(level.logp, width, mesh=mesh)
    return jnp.where(jnp.isfinite(lp), j, -1), lp


def keep_rows(level: Level, width: int, mesh=None) -> tuple[jax.Array, jax.Array]:
    """:func:`jxmc.tree.beam.keep` of a shortlist level (``c`` columns, not split on
    ``model``); on a ``mesh`` each device keeps the best of its own ``data`` rows
    (XLA's partitioner would all-gather the ``n x c`` rows over ``data`` first)."""
    if mesh is None:
        return keep(level.ids, level.logp, width)
    return jax.shard_map(lambda c, lp: keep(c, lp, width), mesh=mesh,
                         in_specs=(P(DATA, None), P(DATA, None)),
                         out_specs=(P(DATA, None), P(DATA, None)),
                         check_vma=False)(level.ids, level.logp)


def score_shortlist_on_mesh(head: dict, x: jax.Array, cand: jax.Array, mesh) -> jax.Array:
    """:func:`jxmc.nn.heads.score_shortlist` with ``head``'s rows split on ``model``
    (``K`` a multiple of ``M``) and ``x: [n, h]``, ``cand: i32[n, c]`` on ``data``
    (``n`` a multiple of ``D``): each shard scores the candidates it owns, 0 for the
    others, and a ``psum`` of the ``f32[n / D, c]`` scores combines them (one
    owner per candidate: exact).  Returns ``f32[n, c]``, ``-inf`` at ``-1``."""
    width = head["w"].shape[0] // mesh.shape[MODEL]

    def local(xb, wb, bb, cb):  # [n/D, h], [K/M, h], [K/M], [n/D, c]
        loc = cb - jax.lax.axis_index(MODEL) * width
        mine = (cb >= 0) & (loc >= 0) & (loc < width)
        safe = jnp.clip(loc, 0, width - 1)
        s = jnp.einsum("nh,nch->nc", xb, wb[safe].astype(xb.dtype),
                       preferred_element_type=jnp.float32) + bb[safe]
        return jax.lax.psum(jnp.where(mine, s, 0.0), MODEL)

    s = jax.shard_map(local, mesh=mesh,
                      in_specs=(P(DATA, None), P(MODEL, None), P(MODEL), P(DATA, None)),
                      out_specs=P(DATA, None), check_vma=False)(x, head["w"], head["b"], cand)
    return jnp.where(cand >= 0, s, -jnp.inf)


def forward(params: dict, ids: jax.Array, mask: jax.Array, perm: jax.Array, *, spec: Spec,
            upto: int | None = None, positives: tuple | None = None,
            rng: jax.Array | None = None, mesh=None, deltas: dict | None = None) -> list[Level]:
    """Scores levels ``1 .. upto`` (default ``D``) for a batch of token ids.

    Args:
      params: ``{"encoder": ..., "heads": {"level_t": {"w", "b"[, "proj_w", "proj_b"]}}}``.
      ids, mask: i32[n, s] tokens and attention mask.
      perm: i32[K_D] label at each leaf position, -1 for padding leaves.
      positives: per level, i32[n, m_t] positive nodes (training: level ``t``'s
        shortlist is the children of the level-``t - 1`` parents ``spec.negatives``
        chooses from the beam and these).
      rng: a PRNG key enables dropout (training) and draws the ``in-batch`` /
        ``uniform`` negatives; None is deterministic.
      mesh: the :func:`jxmc.sharding.make_mesh` mesh the tables are split on
        (module docstring; ``n`` a multiple of ``D`` and every ``K_t`` of ``M``),
        or None (one device, or XLA's own partitioning).
      deltas: ``{"level_t": f32[n, c_t]}`` zero offsets added to the shortlist scores
        of those levels (``t >= 2``; their gradient gives the sparse row updates of
        :mod:`jxmc.nn.sparse_rows`), ``c_t`` the width of the level's ``ids``; None
        adds nothing.

    Raises:
      ValueError: an unknown ``spec.negatives``; sampled negatives without ``rng``.

    Returns:
      One :class:`Level` per level.
    """
    if spec.negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {', '.join(NEGATIVES)}, "
                         f"got {spec.negatives!r}")
    dtype = jnp.dtype(spec.dtype)
    train = rng is not None
    rng0 = rng
    rngs = {}
    if train:
        rng, r_enc = jax.random.split(rng)
        rngs = {"dropout": r_enc}
    D = len(spec.branching) if upto is None else upto
    cls_only = all(spec.layers[t] for t in range(D))  # no level reads the mean-pooled output
    out = spec.encoder.apply({"params": params["encoder"]}, ids, mask, deterministic=not train,
                             rngs=rngs, cls_only=cls_only)
    n = ids.shape[0]
    levels: list[Level] = []
    for t in range(1, D + 1):
        x = _representation(out, spec.layers[t - 1], dtype)
        if train and spec.dropout > 0:
            rng, r = jax.random.split(rng)
            kept = jax.random.bernoulli(r, 1.0 - spec.dropout, x.shape)
            x = jnp.where(kept, x / (1.0 - spec.dropout), 0).astype(dtype)
        head = params["heads"][f"level_{t}"]
        if "proj_w" in head:
            x = (x @ head["proj_w"].astype(dtype) + head["proj_b"]).astype(dtype)
        B = spec.branching[t - 1]
        if t == 1:
            parents = jnp.zeros((n, 1), jnp.int32)
            plp = jnp.zeros((n, 1), jnp.float32)

            def logits_of(_, head=head, x=x):
                return score_dense(head, x)
        else:
            prev = levels[-1]
            prev = prev._replace(logp=jax.lax.stop_gradient(prev.logp))
            width = min(spec.beam, prev.ids.shape[1])
            kept, kept_lp = (keep_dense if t == 2 else keep_rows)(prev, width, mesh)
            n_prev = math.prod(spec.branching[:t - 1])  # at most K_{t-1} distinct parents
            if positives is None:  # the kept parents, whose path scores are at hand
                parents = man_parents(kept, None, n_prev)
                src_ids, src_lp = kept, kept_lp
            else:  # training: the parents the negatives option chooses
                key = None if rng0 is None else jax.random.fold_in(rng0, 1000 + t)
                parents = train_parents(spec.negatives, kept, positives[t - 2], n_prev, key)
                src_ids, src_lp = prev.ids, prev.logp
            if t == 2 and positives is not None:  # src: the dense level, node u at column u
                at = jnp.take_along_axis(src_lp, jnp.maximum(parents, 0), axis=1)
                plp = jnp.where(parents >= 0, at, -jnp.inf)  # (no n x p x K_1 compare)
            else:
                eq = (parents[:, :, None] == src_ids[:, None, :]) & (parents[:, :, None] >= 0)
                plp = jnp.max(jnp.where(eq, src_lp[:, None, :], -jnp.inf), -1)

            delta = None if deltas is None else deltas.get(f"level_{t}")

            def logits_of(cand, head=head, x=x, delta=delta):
                if mesh is not None and positives is None and delta is None:
                    return score_shortlist_on_mesh(head, x, cand, mesh)
                return score_shortlist(head, x, cand, delta)
        leaf_perm = perm if t == len(spec.branching) else None
        cand, s, logp = expand(parents, plp, B, logits_of, jax.nn.log_sigmoid, leaf_perm)
        levels.append(Level(cand, s, logp, x))
    return levels


def level_loss(level: Level, positives: jax.Array, valid: jax.Array) -> jax.Array:
    """Binary cross-entropy over a level's shortlist: f32[] (sum over candidates,
    mean over ``valid: bool[n]`` points)."""
    y = hits(level.ids, positives).astype(jnp.float32)
    ok = (level.ids >= 0) & valid[:, None]
    bce = optax.sigmoid_binary_cross_entropy(jnp.where(ok, level.scores, 0.0), y)
    return jnp.sum(jnp.where(ok, bce, 0.0)) / jnp.maximum(valid.sum(), 1)


def loss_fn(params, batch: dict, rng, perm, *, spec: Spec, train_levels: tuple[int, ...],
            mesh=None):
    """``(loss: f32[], metrics)``: summed BCE of ``train_levels`` (1-based); ``mesh``
    as in :func:`forward` (the dense level's beam by the sharded top-k)."""
    levels = forward(params, batch["ids"], batch["mask"], perm, spec=spec,
                     upto=max(train_levels), positives=batch["pos"], rng=rng, mesh=mesh)
    losses = {f"loss_{t}": level_loss(levels[t - 1], batch["pos"][t - 1], batch["valid"])
              for t in train_levels}
    return sum(losses.values()), losses


def row_loss_fn(params, batch: dict, rng, deltas: dict | None, perm, *, spec: Spec,
                train_levels: tuple[int, ...], mesh=None):
    """:func:`loss_fn` with zero score ``deltas`` on the shortlist levels
    (:func:`forward`): ``(loss: f32[], (metrics, rows))``, ``rows``: per level of
    ``deltas`` (every trained level ``t >= 2`` when ``deltas`` is None) ``(ids, x)``:
    the rows it scored, ``i32[n, c_t]`` (``-1`` where the row has no gradient), which
    the gradient with respect to ``deltas`` belongs to, and the features ``x: f32[n,
    h_t]`` they were scored on (no gradient through them)."""
    levels = forward(params, batch["ids"], batch["mask"], perm, spec=spec,
                     upto=max(train_levels), positives=batch["pos"], rng=rng, mesh=mesh,
                     deltas=deltas)
    losses = {f"loss_{t}": level_loss(levels[t - 1], batch["pos"][t - 1], batch["valid"])
              for t in train_levels}
    names = (tuple(deltas) if deltas is not None
             else tuple(f"level_{t}" for t in train_levels if t >= 2))
    rows = {name: (levels[int(name[6:]) - 1].ids,
                   jax.lax.stop_gradient(levels[int(name[6:]) - 1].x.astype(jnp.float32)))
            for name in names}
    return sum(losses.values()), (losses, rows)


def predict_topk(params, ids, mask, perm, *, spec: Spec, k: int, mesh=None) -> TopK:
    """Top-``k`` labels (``ids: i32[n, k]``, ``scores: f32[n, k]`` = path probabilities);
    on a ``mesh`` (:func:`forward`) no collective moves more than the merged top-k
    candidates (``n / D x beam x M``, or ``k x M`` for a one-level tree) or a
    shortlist's ``n / D x c`` scores."""
    last = forward(params, ids, mask, perm, spec=spec, mesh=mesh)[-1]
    width = min(k, last.ids.shape[1])
    # a one-level tree's leaf level is the dense one
    leaves, lp = (keep_dense if len(spec.branching) == 1 else keep_rows)(last, width, mesh)
    return leaf_topk(leaves, lp, perm, k)
