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

from jxmc.ops.ids import csr_to_padded
from jxmc.ops.sparse import csr_to_ell, max_row_nnz
from jxmc.types import Batch, SparseRows

__all__ = ["iterate_batches"]


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
    the widest row of the whole matrix, so all batches share one shape.  Rows
    are laid out by :func:`jxmc.ops.sparse.csr_to_ell` (longer rows keep their
    ``z`` largest magnitudes) and labels by :func:`jxmc.ops.ids.csr_to_padded`
    (longer rows keep their ``m`` smallest ids).
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
            labels = csr_to_padded(Y[idx], m)
            if pad:
                labels = np.pad(labels, ((0, pad), (0, 0)), constant_values=-1)
        else:
            labels = np.full((batch_size, 1), -1, np.int32)
        yield Batch(x, labels, valid)
