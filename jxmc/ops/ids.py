"""Padded id sets: the one home of the id and padding helpers every family uses.

An id set is ``i32[n, c]`` with ``-1`` at padding; padded scores are ``-inf``
(:mod:`jxmc.types`).  Each function works on numpy arrays or, where noted, on
traced ``jax`` arrays inside ``jit``.

* :func:`pow2`: the next power of two (shape buckets, so that few programs compile).
* :func:`pad_axis`: pad one axis to a multiple (device-count divisibility).
* :func:`pad_topk`: widen a ``(ids, scores)`` pair to ``k`` columns with ``-1`` / ``-inf``.
* :func:`csr_to_padded`: the column ids of each CSR row, ``-1`` padded.
* :func:`dedupe`, :func:`hits`: set operations on padded id rows (traceable).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp


def pow2(x: int, least: int = 1) -> int:
    """The smallest power of two ``>= max(x, least)`` (``least`` itself rounded up)."""
    return 1 << max(int(x) - 1, int(least) - 1, 0).bit_length()


def pad_axis(a, axis: int, multiple: int, value):
    """``a`` padded with ``value`` at the end of ``axis`` to a multiple of ``multiple``
    (numpy or jax; returned unchanged when already a multiple)."""
    extra = -a.shape[axis] % multiple
    if not extra:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, extra)
    xp = np if isinstance(a, np.ndarray) else jnp
    return xp.pad(a, widths, constant_values=value)


def pad_topk(ids, scores, k: int):
    """``(ids: i32[n, k], scores: f32[n, k])`` from ``c <= k`` columns: ``-1`` ids and
    ``-inf`` scores appended (numpy or jax; unchanged when ``c == k``).

    Raises:
      ValueError: more than ``k`` columns.
    """
    c = ids.shape[1]
    if c > k:
        raise ValueError(f"{c} columns, more than k={k}")
    if c == k:
        return ids, scores
    xp = np if isinstance(ids, np.ndarray) else jnp
    return (xp.pad(ids, ((0, 0), (0, k - c)), constant_values=-1),
            xp.pad(scores, ((0, 0), (0, k - c)), constant_values=-np.inf))


def csr_to_padded(M: sp.spmatrix, width: int | None = None) -> np.ndarray:
    """``i32[n, m]`` the column ids of each row's stored non-zeros, ascending, ``-1`` padded.

    Args:
      M: a sparse ``[n, C]`` matrix; explicit zeros are dropped.
      width: ``m``; default the largest row's count (at least 1).  Rows with more
        entries keep their ``m`` smallest ids.
    """
    M = sp.csr_matrix(M, copy=True)
    M.eliminate_zeros()
    M.sort_indices()
    lengths = np.diff(M.indptr)
    m = max(1, int(lengths.max(initial=0))) if width is None else int(width)
    out = np.full((M.shape[0], m), -1, np.int32)
    rows = np.repeat(np.arange(M.shape[0]), lengths)
    pos = np.arange(M.nnz) - np.repeat(M.indptr[:-1], lengths)
    keep = pos < m
    out[rows[keep], pos[keep]] = M.indices[keep]
    return out


def dedupe(ids: jax.Array) -> jax.Array:
    """``i32[n, c]`` with each id kept once per row (sorted), repeats and padding ``-1`` last
    (traceable)."""
    big = jnp.iinfo(jnp.int32).max
    s = jnp.sort(jnp.where(ids >= 0, ids, big), axis=1)
    first = jnp.concatenate([jnp.ones_like(s[:, :1], bool), s[:, 1:] != s[:, :-1]], axis=1)
    s = jnp.where(first & (s != big), s, big)
    s = jnp.sort(s, axis=1)
    return jnp.where(s == big, -1, s)


def hits(ids: jax.Array, positives: jax.Array) -> jax.Array:
    """``bool[n, c]``: whether ``ids[i, j]`` is one of ``positives: i32[n, m]`` (``-1``
    never hits; traceable)."""
    eq = ids[:, :, None] == positives[:, None, :]
    return eq.any(-1) & (ids >= 0)
