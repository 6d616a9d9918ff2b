"""Beam search down a complete label tree with static shapes, and the one
expansion step every beam in jxmc takes.

Level by level, each query keeps ``b`` nodes (the kept clusters); their ``B_l``
children are scored (:func:`expand`: ``c = b * B_l`` candidates) and the best
``b`` (``k`` at the leaves) are kept with ``lax.top_k`` (:func:`keep`).  Padding
nodes are ``-1`` with score ``-inf``; dummy leaves (``perm == -1``) are never
returned.  :func:`beam_search` (XR-Linear, Parabel, Bonsai) and the transformer
heads' cascade (:func:`jxmc.nn.cascade.forward`, which adds the positives'
parents to the kept clusters in training) are both made of these two steps.

A path score is accumulated in log space: a child's raw score ``v`` adds
``log_t(v)`` to its parent's path score (:func:`expand`).  Score transform and
combiner of :func:`beam_search` (PECOS's default post-processor ``"l3-hinge"``,
``pecos.xmc.base.PostProcessor``): ``v`` becomes ``exp(-max(1 - v, 0)^3)`` and is
*multiplied* by its parent's score, so a path score is the product of its nodes'
transformed scores (the root has 1).  We accumulate ``sum(-max(1 - v, 0)^3)``,
which orders candidates identically and never underflows; the returned scores
are ``exp`` of it, as PECOS's.  ``transform="l2-hinge"`` squares instead of
cubing, ``exp(-max(1 - v, 0)^2)``: Parabel's probability of a squared-hinge node
classifier (Prabhu et al., WWW 2018), as Omikuji's reimplementation computes it
(``LossType::Hinge``).  The transformer heads use ``log_t = log sigmoid``
(CascadeXML's and LightXML's product of probabilities).

Label copies (label disentanglement, :mod:`jxmc.tree.disentangle`): when a label
sits at several leaves (``merge_copies=True``), every candidate leaf of the last
level is mapped to its label and each label keeps its *best* path score (the max
over its copies reached by the beam; :func:`jxmc.tree.merge.merge_duplicates`),
so the top-``k`` never repeats a label.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jxmc.ops.ids import pad_topk
from jxmc.ops.topk import top_k
from jxmc.tree.merge import merge_duplicates
from jxmc.types import TopK


def l3_hinge_log(v: jax.Array, xp=jnp) -> jax.Array:
    """``log`` of PECOS's l3-hinge transform: ``-max(1 - v, 0)^3`` (``xp``: ``jnp``, or
    ``numpy`` for the host beam, :mod:`jxmc.models.tree_linear.host_beam`)."""
    return -xp.maximum(1.0 - v, 0.0) ** 3


def l2_hinge_log(v: jax.Array, xp=jnp) -> jax.Array:
    """``log`` of Parabel's squared-hinge probability: ``-max(1 - v, 0)^2``."""
    return -xp.maximum(1.0 - v, 0.0) ** 2


TRANSFORMS = {"l3-hinge": l3_hinge_log, "l2-hinge": l2_hinge_log}


def children(parents: jax.Array, B: int) -> jax.Array:
    """``i32[n, p * B]``: the children ``u * B + j`` of ``parents: i32[n, p]`` in order
    (``-1`` stays ``-1``; :mod:`jxmc.tree.label_tree`'s numbering)."""
    c = parents[:, :, None] * B + jnp.arange(B, dtype=jnp.int32)
    return jnp.where(parents[:, :, None] >= 0, c, -1).reshape(parents.shape[0], -1)


def expand(parents: jax.Array, parent_logp: jax.Array, B: int,
           logits_of: Callable[[jax.Array], jax.Array], log_t: Callable[[jax.Array], jax.Array],
           perm: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One beam expansion: the children of the kept clusters, scored (traceable).

    Args:
      parents: ``i32[n, p]`` the kept nodes of level ``l - 1`` (``-1`` padded).
      parent_logp: ``f32[n, p]`` their path scores.
      B: ``B_l``, children per parent.
      logits_of: ``(children: i32[n, p * B]) -> f32[n, p * B]`` their raw scores.
      log_t: raw score -> ``log`` of the node's transformed score (:data:`TRANSFORMS`,
        or ``jax.nn.log_sigmoid``).
      perm: at the leaf level, ``i32[K_D]`` the label of each leaf: dummy leaves
        (``-1``) are dropped.

    Returns:
      ``(cand: i32[n, p * B], logits: f32[n, p * B], logp: f32[n, p * B])`` the
      children (``-1`` under padding parents and at dummy leaves), their raw scores and
      path scores ``parent_logp + log_t(logits)`` (both ``-inf`` where ``cand`` is ``-1``).
    """
    cand = children(parents, B)
    logits = logits_of(cand)
    if perm is not None:
        cand = jnp.where((cand >= 0) & (perm[jnp.maximum(cand, 0)] >= 0), cand, -1)
    logits = jnp.where(cand >= 0, logits, -jnp.inf)
    logp = jnp.where(cand >= 0, jnp.repeat(parent_logp, B, axis=1) + log_t(logits), -jnp.inf)
    return cand, logits, logp


def keep(cand: jax.Array, logp: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """The ``width`` best candidates: ``(ids: i32[n, width], logp: f32[n, width])`` best
    first, ``-1`` where the path score is ``-inf`` (``width <= c``; traceable)."""
    lp, j = top_k(logp, width)
    return jnp.where(jnp.isfinite(lp), jnp.take_along_axis(cand, j, axis=1), -1), lp


def leaf_topk(leaves: jax.Array, logp: jax.Array, perm: jax.Array, k: int) -> TopK:
    """The kept leaves as labels: ``ids: i32[n, k]`` (``perm`` of each leaf, ``-1``
    padded) with ``scores: f32[n, k] = exp(logp)`` (``-inf`` padded); ``leaves`` of at
    most ``k`` columns."""
    ids = jnp.where(leaves >= 0, perm[jnp.maximum(leaves, 0)], -1)
    scores = jnp.where(ids >= 0, jnp.exp(logp), -jnp.inf)
    return TopK(*pad_topk(ids, scores, k))


def beam_search(score_fn: Callable[[int, jax.Array], jax.Array], perm: jax.Array,
                branching: tuple[int, ...], n: int, *, beam: int, k: int,
                transform: str = "l3-hinge", merge_copies: bool = False) -> TopK:
    """Top-``k`` labels by beam search (trace inside ``jit``; shapes are static).

    Args:
      score_fn: ``(level, parents: i32[n, b']) -> f32[n, b', B_level]`` linear
        scores of the children of ``parents`` (``level`` is 1-based, a Python int).
      perm: ``i32[K_D]`` label at each leaf position, ``-1`` for padding.
      branching: ``(B_1, ..., B_D)``.
      n: number of queries.
      beam: nodes kept per internal level.
      k: labels returned.
      transform: ``"l3-hinge"`` (PECOS) or ``"l2-hinge"`` (Parabel), see above.
      merge_copies: ``perm`` may repeat labels; each label is returned once, with
        its best score over the leaves reached.

    Returns:
      :class:`TopK` with ``ids: i32[n, k]`` (``-1`` where fewer than ``k``
      labels are reachable) and ``scores: f32[n, k]`` (``-inf`` there).

    Raises:
      ValueError: an unknown ``transform``.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {sorted(TRANSFORMS)}, got {transform!r}")
    log_t = TRANSFORMS[transform]
    parents = jnp.zeros((n, 1), jnp.int32)
    logp = jnp.zeros((n, 1), jnp.float32)
    D = len(branching)
    for level, B in enumerate(branching, start=1):
        def logits_of(_, level=level, parents=parents):  # [n, b, B] -> [n, b * B]
            return score_fn(level, parents).reshape(n, -1)

        cand, _, s = expand(parents, logp, B, logits_of, log_t, perm if level == D else None)
        if level == D and merge_copies:
            labels = jnp.where(cand >= 0, perm[jnp.maximum(cand, 0)], -1)
            out = merge_duplicates(labels, s, k, reduce="max")
            return TopK(out.ids, jnp.where(out.ids >= 0, jnp.exp(out.scores), -jnp.inf))
        parents, logp = keep(cand, s, min(k if level == D else beam, s.shape[1]))
    return leaf_topk(parents, logp, perm, k)
