"""Products of padded sparse rows (ELL layout) with dense matrices."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jxmc.types import SparseRows


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
