"""One entry per label: merge the duplicate ids of candidate lists, then top-``k``.

Two users: beam search over a tree with label copies (label disentanglement,
:mod:`jxmc.tree.disentangle`), where a label reached through several leaves keeps
its *best* path score (``reduce="max"``), and ensembles of trees (Parabel, Bonsai),
where each label's scores from the trees are *added* (``reduce="sum"``; divided by
the number of trees this is Parabel's average, a label missing from a tree's list
counting 0 there).

Static shapes: the candidates of a row are sorted by id (``lax.sort``), the first
entry of each run of equal ids carries the run's max or sum, the others get
``-inf``, and ``lax.top_k`` keeps ``k``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jxmc.ops.ids import pad_topk
from jxmc.types import TopK

_PAD = jnp.iinfo(jnp.int32).max


def merge_duplicates(ids: jax.Array, scores: jax.Array, k: int, *, reduce: str = "max") -> TopK:
    """Top-``k`` distinct labels of candidate lists with repeated ids.

    Args:
      ids: ``i32[n, c]`` label ids, ``-1`` for padding (never returned).
      scores: ``f32[n, c]`` their scores (any scale for ``"max"``; summed as they
        are for ``"sum"``).
      k: labels returned per row.
      reduce: ``"max"`` (a label's best score) or ``"sum"`` (the sum of its scores).

    Returns:
      :class:`TopK` ``ids: i32[n, k]`` distinct per row (``-1`` padded when fewer
      than ``k`` labels), ``scores: f32[n, k]`` descending (``-inf`` at padding).

    Raises:
      ValueError: an unknown ``reduce``.
    """
    if reduce not in ("max", "sum"):
        raise ValueError(f"reduce must be 'max' or 'sum', got {reduce!r}")
    n, c = ids.shape
    key = jnp.where(ids >= 0, ids, _PAD)
    if reduce == "max":  # by id, best score first within an id
        sid, neg = jax.lax.sort((key, -scores), dimension=1, num_keys=2)
        ss = -neg
    else:
        sid, ss = jax.lax.sort((key, scores), dimension=1, num_keys=1)
    first = jnp.concatenate([jnp.ones((n, 1), bool), sid[:, 1:] != sid[:, :-1]], axis=1)
    if reduce == "sum":
        run = jnp.cumsum(first, axis=1) - 1  # run index of each entry within its row
        seg = run + jnp.arange(n, dtype=run.dtype)[:, None] * c
        sums = jax.ops.segment_sum(jnp.where(sid != _PAD, ss, 0.0).ravel(), seg.ravel(),
                                   num_segments=n * c).reshape(n, c)
        ss = jnp.take_along_axis(sums, run, axis=1)
    val = jnp.where(first & (sid != _PAD), ss, -jnp.inf)
    top, idx = jax.lax.top_k(val, min(k, c))
    out = jnp.where(jnp.isfinite(top), jnp.take_along_axis(sid, idx, axis=1), -1)
    top = jnp.where(out >= 0, top, -jnp.inf)
    return TopK(*pad_topk(out, top, k))


merge_duplicates_jit = jax.jit(merge_duplicates, static_argnames=("k", "reduce"))


@functools.partial(jax.jit, static_argnames=("k",))
def average_lists(ids: jax.Array, scores: jax.Array, *, k: int, n_lists: int) -> TopK:
    """Parabel's ensemble average: ``sum`` merge of ``n_lists`` concatenated top
    lists (``ids, scores: [n, n_lists * c]``, scores as probabilities), divided by
    ``n_lists``."""
    out = merge_duplicates(ids, scores, k, reduce="sum")
    return TopK(out.ids, jnp.where(out.ids >= 0, out.scores / n_lists, -jnp.inf))
