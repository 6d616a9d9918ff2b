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
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jxmc.types import TopK


def l3_hinge_log(v: jax.Array) -> jax.Array:
    """``log`` of PECOS's l3-hinge transform: ``-max(1 - v, 0)^3``."""
    return -jnp.maximum(1.0 - v, 0.0) ** 3


def beam_search(score_fn: Callable[[int, jax.Array], jax.Array], perm: jax.Array,
                branching: tuple[int, ...], n: int, *, beam: int, k: int) -> TopK:
    """Top-``k`` labels by beam search (trace inside ``jit``; shapes are static).

    Args:
      score_fn: ``(level, parents: i32[n, b']) -> f32[n, b', B_level]`` linear
        scores of the children of ``parents`` (``level`` is 1-based, a Python int).
      perm: ``i32[K_D]`` label at each leaf position, ``-1`` for padding.
      branching: ``(B_1, ..., B_D)``.
      n: number of queries.
      beam: nodes kept per internal level.
      k: labels returned.

    Returns:
      :class:`TopK` with ``ids: i32[n, k]`` (``-1`` where fewer than ``k``
      labels are reachable) and ``scores: f32[n, k]`` (``-inf`` there).
    """
    parents = jnp.zeros((n, 1), jnp.int32)
    logp = jnp.zeros((n, 1), jnp.float32)
    D = len(branching)
    for level, B in enumerate(branching, start=1):
        logits = score_fn(level, parents)  # [n, b, B]
        cand = parents[:, :, None] * B + jnp.arange(B, dtype=jnp.int32)
        s = logp[:, :, None] + l3_hinge_log(logits)
        ok = parents[:, :, None] >= 0
        if level == D:
            ok = ok & (perm[jnp.maximum(cand, 0)] >= 0)
        s = jnp.where(ok, s, -jnp.inf).reshape(n, -1)
        cand = jnp.where(ok, cand, -1).reshape(n, -1)
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
