"""Fixed-shape device batches from host CSR matrices.

CSR stays on the host; a device sees :class:`jxmc.types.Batch` with static
shapes: features in ELL layout (``indices: i32[n, z]``, ``values: f32[n, z]``),
positives as ``labels: i32[n, m]`` padded with -1, and ``valid: bool[n]`` so the
last, partly filled batch has the same shape as the others (one compilation).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from jxmc.types import Batch, SparseRows


def _row_positions(indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.diff(indptr)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths)
    return rows, pos


def max_row_nnz(M: sp.csr_matrix) -> int:
    """The largest number of stored entries in a row (at least 1)."""
    return max(1, int(np.diff(M.indptr).max(initial=0)))


def csr_to_ell(X: sp.csr_matrix, z: int | None = None) -> SparseRows:
    """Converts CSR rows to ELL rows of width ``z``.

    Args:
      X: ``csr_matrix`` f32[n, d].
      z: the width; default the largest row's nnz.  Rows with more than ``z``
        entries keep the ``z`` of largest magnitude (ties by feature id).

    Returns:
      numpy :class:`SparseRows`: ``indices: i32[n, z]`` (padding 0) and
      ``values: f32[n, z]`` (padding 0.0).
    """
    X = sp.csr_matrix(X)
    n = X.shape[0]
    z = max_row_nnz(X) if z is None else int(z)
    if z < 1:
        raise ValueError(f"z must be >= 1, got {z}")
    indices = np.zeros((n, z), np.int32)
    values = np.zeros((n, z), np.float32)
    rows, pos = _row_positions(X.indptr)
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


def labels_to_padded(Y: sp.csr_matrix, m: int | None = None) -> np.ndarray:
    """Positive label ids of each row, ``i32[n, m]`` padded with -1.

    Args:
      Y: ``csr_matrix`` [n, L]; stored non-zeros are positives.
      m: the width; default the largest row's count.  Rows with more positives
        keep the first ``m`` by id.
    """
    Y = sp.csr_matrix(Y)
    Y.eliminate_zeros()
    m = max_row_nnz(Y) if m is None else int(m)
    out = np.full((Y.shape[0], m), -1, np.int32)
    rows, pos = _row_positions(Y.indptr)
    keep = pos < m
    Ys = Y.copy()
    Ys.sort_indices()
    out[rows[keep], pos[keep]] = Ys.indices[keep]
    return out


def iterate_batches(
    X: sp.csr_matrix,
    Y: sp.csr_matrix | None = None,
    *,
    batch_size: int,
    z: int | None = None,
    m: int | None = None,
    rng: np.random.Generator | None = None,
) -> Iterator[Batch]:
    """Yields fixed-shape :class:`Batch` es over the rows of ``X`` (and ``Y``).

    Every batch has ``batch_size`` rows; the last is padded with inert rows
    (``valid`` False, no features, labels -1).  With ``rng`` the row order is a
    random permutation, otherwise the input order.  ``z`` and ``m`` default to
    the widest row of the whole matrix, so all batches share one shape.
    """
    n = X.shape[0]
    X = sp.csr_matrix(X, dtype=np.float32)
    z = max_row_nnz(X) if z is None else z
    if Y is not None:
        Y = sp.csr_matrix(Y)
        m = max_row_nnz(Y) if m is None else m
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, max(n, 1), batch_size):
        idx = order[start:start + batch_size]
        pad = batch_size - len(idx)
        x = csr_to_ell(X[idx], z)
        valid = np.ones(batch_size, bool)
        if pad:
            x = SparseRows(np.pad(x.indices, ((0, pad), (0, 0))), np.pad(x.values, ((0, pad), (0, 0))))
            valid[len(idx):] = False
        if Y is not None:
            labels = labels_to_padded(Y[idx], m)
            if pad:
                labels = np.pad(labels, ((0, pad), (0, 0)), constant_values=-1)
        else:
            labels = np.full((batch_size, 1), -1, np.int32)
        yield Batch(x, labels, valid)
