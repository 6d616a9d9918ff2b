"""Beam search down a complete label tree with static shapes.

Level by level, each query keeps ``b`` nodes; their ``B_l`` children are scored
(``[n, b, B_l]``), flattened to ``c = b * B_l`` candidates and the best ``b``
(``k`` at the leaves) are kept with ``lax.top_k``.  Padding nodes are ``-1``
with score ``-inf``; dummy leaves (``perm == -1``) are never returned.

Score transform and combiner (PECOS's default post-processor ``"l3-hinge"``,
``pecos.xmc.base.PostProcessor``): a child's linear score ``v`` becomes
``exp(-max(1 - v, 0)^3)`` and is *multiplied* by its parent's score, so a path
score is the product of its nodes' transformed scores (the root has 1).  We
accumulate it in log space, ``sum(-max(1 - v, 0)^3)``, which orders candidates
identically and never underflows; the returned scores are ``exp`` of it, as PECOS's.
``transform="l2-hinge"`` squares instead of cubing, ``exp(-max(1 - v, 0)^2)``:
Parabel's probability of a squared-hinge node classifier (Prabhu et al., WWW
2018), as Omikuji's reimplementation computes it (``LossType::Hinge``).

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

from jxmc.tree.merge import merge_duplicates
from jxmc.types import TopK


def l3_hinge_log(v: jax.Array) -> jax.Array:
    """``log`` of PECOS's l3-hinge transform: ``-max(1 - v, 0)^3``."""
    return -jnp.maximum(1.0 - v, 0.0) ** 3


def l2_hinge_log(v: jax.Array) -> jax.Array:
    """``log`` of Parabel's squared-hinge probability: ``-max(1 - v, 0)^2``."""
    return -jnp.maximum(1.0 - v, 0.0) ** 2


TRANSFORMS = {"l3-hinge": l3_hinge_log, "l2-hinge": l2_hinge_log}


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
        logits = score_fn(level, parents)  # [n, b, B]
        cand = parents[:, :, None] * B + jnp.arange(B, dtype=jnp.int32)
        s = logp[:, :, None] + log_t(logits)
        ok = parents[:, :, None] >= 0
        if level == D:
            ok = ok & (perm[jnp.maximum(cand, 0)] >= 0)
        s = jnp.where(ok, s, -jnp.inf).reshape(n, -1)
        cand = jnp.where(ok, cand, -1).reshape(n, -1)
        if level == D and merge_copies:
            labels = jnp.where(cand >= 0, perm[jnp.maximum(cand, 0)], -1)
            out = merge_duplicates(labels, s, k, reduce="max")
            return TopK(out.ids, jnp.where(out.ids >= 0, jnp.exp(out.scores), -jnp.inf))
        width = min(k if level == D else beam, s.shape[1])
        logp, idx = jax.lax.top_k(s, width)
        parents = jnp.where(jnp.isfinite(logp), jnp.take_along_axis(cand, idx, axis=1), -1)
    ids = jnp.where(parents >= 0, perm[jnp.maximum(parents, 0)], -1)
    scores = jnp.where(ids >= 0, jnp.exp(logp), -jnp.inf)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = jnp.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = jnp.pad(scores, ((0, 0), (0, pad)), constant_values=-jnp.inf)
    return TopK(ids, scores)
