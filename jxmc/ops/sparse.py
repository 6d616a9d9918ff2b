"""Sparse rows on the host and on the device, each conversion written once.

Host (``scipy.sparse``): :func:`normalise_rows` (unit L2 rows), :func:`add_bias`
(PECOS's bias column), :func:`csr_to_ell` (CSR to the fixed-width ELL layout the
device reads) and :func:`max_row_nnz`.  Device (JAX): :func:`ell_matmul` and
:func:`coo_matmul`, products of sparse rows with dense matrices.  Padded id
sets (labels, shortlists) live in :mod:`jxmc.ops.ids`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.types import SparseRows


def row_positions(indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, pos)``, both ``i64[nnz]``: the row of each stored entry and its place in the row."""
    lengths = np.diff(indptr)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths)
    return rows, pos


def max_row_nnz(M: sp.csr_matrix) -> int:
    """The largest number of stored entries in a row (at least 1)."""
    return max(1, int(np.diff(M.indptr).max(initial=0)))


def normalise_rows(M: sp.spmatrix, *, accumulate=np.float32) -> sp.csr_matrix:
    """``csr f32[n, d]``: each row of ``M`` scaled to unit L2 norm (zero rows stay zero).

    ``accumulate`` is the dtype the squared norms are summed and inverted in:
    ``float32`` for the data's feature rows (TF-IDF and XC files), ``float64``
    for PIFA label embeddings (:mod:`jxmc.embed`); each is the one its callers
    have always used, so the trees and models they build do not move.
    """
    M = sp.csr_matrix(M, dtype=np.float32)
    sq = np.asarray(M.multiply(M).sum(axis=1), dtype=accumulate).ravel()
    scale = np.zeros_like(sq)
    nz = sq > 0
    scale[nz] = 1.0 / np.sqrt(sq[nz])
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ M, dtype=np.float32)


def add_bias(X: sp.spmatrix, bias: float, *, sort_indices: bool = True) -> sp.csr_matrix:
    """``csr f32[n, d + 1]``: ``X`` with a constant column ``bias`` appended (PECOS's
    bias term; column ``d`` is the bias feature).

    ``sort_indices=False`` keeps each row's entry order: the order is the
    summation order of the device COO products, so the label-embedding methods,
    whose rows were never sorted, keep their models bit for bit.
    """
    X = sp.csr_matrix(X, dtype=np.float32)
    ones = sp.csr_matrix(np.full((X.shape[0], 1), bias, np.float32))
    out = sp.hstack([X, ones], format="csr", dtype=np.float32)
    if sort_indices:
        out.sort_indices()
    return out


def csr_to_ell(X: sp.csr_matrix, z: int | None = None) -> SparseRows:
    """Converts CSR rows to ELL rows of width ``z``.

    Args:
      X: ``csr_matrix`` f32[n, d].
      z: the width; default the largest row's nnz.  Rows with more than ``z``
        entries keep the ``z`` of largest magnitude (ties by feature id).

    Returns:
      numpy :class:`SparseRows`: ``indices: i32[n, z]`` (padding 0) and
      ``values: f32[n, z]`` (padding 0.0).

    Raises:
      ValueError: ``z < 1``.
    """
    X = sp.csr_matrix(X)
    n = X.shape[0]
    z = max_row_nnz(X) if z is None else int(z)
    if z < 1:
        raise ValueError(f"z must be >= 1, got {z}")
    indices = np.zeros((n, z), np.int32)
    values = np.zeros((n, z), np.float32)
    rows, pos = row_positions(X.indptr)
    cols, vals = X.indices, X.data
    if np.diff(X.indptr).max(initial=0) > z:
        # order each row by decreasing |value| so that the first z are kept
        order = np.lexsort((cols, -np.abs(vals), rows))
        cols, vals = cols[order], vals[order]
        keep = pos < z
        rows, pos, cols, vals = rows[keep], pos[keep], cols[keep], vals[keep]
    indices[rows, pos] = cols
    values[rows, pos] = vals
    return SparseRows(indices, values)


def ell_matmul(x: SparseRows, w: jax.Array) -> jax.Array:
    """``X @ W`` for X in ELL layout.

    Args:
      x: ``indices: i32[n, z]``, ``values: f32[n, z]``; padding ``(0, 0.0)`` is inert.
      w: ``f32[d, c]`` dense weights.

    Returns:
      ``f32[n, c]`` scores, ``sum_j values[i, j] * w[indices[i, j]]``.

    The product gathers ``n * z`` rows of ``w`` (memory ``n * z * c``); its
    gradient with respect to ``w`` is a scatter-add into ``d`` rows.
    """
    rows = jnp.take(w, x.indices, axis=0)  # [n, z, c]
    return jnp.einsum("nz,nzc->nc", x.values.astype(w.dtype), rows)


def coo_matmul(rows: jax.Array, cols: jax.Array, values: jax.Array, w: jax.Array, n: int) -> jax.Array:
    """``X @ W`` for X given as a flat list of non-zeros (COO), padded to a fixed length.

    Args:
      rows: ``i32[N]`` row of each non-zero, in ``[0, n)``.
      cols: ``i32[N]`` column (feature) of each non-zero, in ``[0, d)``.
      values: ``f32[N]``; padding entries have value 0.0 (any row/col), so they are inert.
      w: ``f32[d, c]``.
      n: the number of rows (static).

    Returns:
      ``f32[n, c]``.  Memory ``N * c``: unlike :func:`ell_matmul` it does not pay for
      the padding of short rows up to the longest, which matters for text whose
      document lengths vary by orders of magnitude.
    """
    contrib = values[:, None].astype(w.dtype) * jnp.take(w, cols, axis=0)
    return jax.ops.segment_sum(contrib, rows, num_segments=n)
