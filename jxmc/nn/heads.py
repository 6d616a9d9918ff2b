"""Per-level label tables scored only on a shortlist.

Each tree level ``t`` has a table ``{"w": f32[K_t, h_t], "b": f32[K_t]}``; the
score of node ``u`` for a representation ``x`` is ``x . w[u] + b[u]``
(CascadeXML's per-resolution classifiers, Kharbanda et al., NeurIPS 2022,
Section 3; LightXML's label-level "embedding" table, Jiang et al., AAAI 2021).
Scoring a shortlist gathers its rows, so the cost is ``n * c * h``, not
``n * K * h``; ``-1`` ids score ``-inf``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jxmc.nn import lowp


def table_init(key: jax.Array, rows: int, width: int, *, std: float = 0.02) -> dict:
    """``{"w": f32[rows, width] ~ N(0, std^2), "b": f32[rows] = 0}``, traceable, so
    ``jxmc.sharding.create_sharded`` can create a table directly in its sharded layout."""
    w = jax.random.normal(key, (rows, width), jnp.float32) * jnp.float32(std)
    return {"w": w, "b": jnp.zeros(rows, jnp.float32)}


def init_table(key: jax.Array, rows: int, width: int, *, std: float = 0.02) -> dict:
    """:func:`table_init` as numpy arrays."""
    return jax.tree_util.tree_map(np.asarray, table_init(key, rows, width, std=std))


def score_dense(table: dict, x: jax.Array) -> jax.Array:
    """``f32[n, K]`` scores of every row of ``table`` for ``x: [n, h]``."""
    w = table["w"].astype(x.dtype)
    return jnp.einsum("nh,kh->nk", x, w, preferred_element_type=jnp.float32) + table["b"]


GATHER_CHUNK_BYTES = 64 * 2**20
"""Bytes (counted as f32) of the rows :func:`score_shortlist` gathers at a time."""


@jax.custom_jvp
def _constant(w: jax.Array) -> jax.Array:
    """``w``, refusing a gradient: reading a table as its bit patterns would silently
    make it zero (the bf16/fp8 tables of the sparse train step are its constants, their
    rows updated by :mod:`jxmc.nn.sparse_rows`)."""
    return w


@functools.partial(_constant.defjvp, symbolic_zeros=True)
def _constant_jvp(primals, tangents):
    if not isinstance(tangents[0], jax.custom_derivatives.SymbolicZero):
        raise ValueError("score_shortlist: a table given with its 'bits' cannot be "
                         "differentiated (its rows take sparse updates, jxmc.nn.sparse_rows)")
    return primals[0], tangents[0]


def _scores(w: jax.Array, b: jax.Array, x: jax.Array, ids: jax.Array, dtype=None) -> jax.Array:
    """``f32[n, c]``: ``x . w[ids] + b[ids]`` (``-1`` ids read row 0); ``dtype``: the
    table's dtype when ``w`` holds its bit patterns (:func:`jxmc.nn.lowp.to_bits`)."""
    safe = jnp.maximum(ids, 0)
    rows = w[safe] if dtype is None else lowp.from_bits(w[safe], dtype)  # [n, c, h]
    return (jnp.einsum("nh,nch->nc", x, rows.astype(x.dtype), preferred_element_type=jnp.float32)
            + b[safe])


def score_shortlist(table: dict, x: jax.Array, ids: jax.Array,
                    delta: jax.Array | None = None) -> jax.Array:
    """``f32[n, c]`` scores of the rows ``ids: i32[n, c]`` for ``x: [n, h]``; ``-inf`` at ``-1``.
    ``delta: f32[n, c]`` (zeros) is added to the scores: its gradient is the scores'
    gradient, from which :mod:`jxmc.nn.sparse_rows` forms the rows' gradients.
    ``table``: ``{"w": [K, h], "b": f32[K]}``, and ``"bits"``: ``w``'s bit patterns where
    the caller holds them (the sparse train step, :func:`jxmc.nn.sparse_rows.as_bits`).

    When the gathered rows ``n x c x h`` (as f32) exceed :data:`GATHER_CHUNK_BYTES`,
    they are gathered a chunk of the shortlist at a time, in a ``lax.map`` whose body
    is rematerialised (``jax.checkpoint``): the backward pass gathers each chunk again
    instead of keeping all the rows.  At Amazon-3M scale these rows were the train
    step's largest temporary (``f32[128, 736, 768]``, 289 MB: XLA's CPU backend widens
    gathered bf16 rows to f32); a chunk is at most 64 MiB.  Only a table that needs no
    cast is read in chunks: ``w`` in ``x``'s dtype, or one given with its ``"bits"``,
    which the loop reads (XLA moves a cast of the gathered rows before the gather, out
    of the loop: a cast of the whole table, and a ``bitcast_convert`` of a whole table
    that does not fuse into a gather is a copy; a bitcast of the gathered bits stays in
    the loop).  The scores are those of one gather, and so are the gradients with
    respect to ``x``, ``delta`` and ``w`` (a dense table's accumulates over the chunks).

    Raises:
      ValueError: differentiating ``w`` of a table given with its ``"bits"``, gathered
        in chunks.
    """
    n, c = ids.shape
    size = max(1, GATHER_CHUNK_BYTES // (n * table["w"].shape[1] * 4))
    if c <= size or ("bits" not in table and table["w"].dtype != x.dtype):
        s = _scores(table["w"], table["b"], x, ids)
    else:
        k = -(-c // size)
        size = -(-c // k)  # k chunks of equal width
        parts = jnp.pad(ids, ((0, 0), (0, k * size - c)), constant_values=-1)
        parts = parts.reshape(n, k, size).swapaxes(0, 1)  # [k, n, size]
        w, b = table["w"], table["b"]
        if "bits" in table:
            src, dtype = table["bits"], w.dtype
            _constant(w)  # a gradient of w is refused: the loop does not read w
        else:
            src, dtype = w, None
        one = jax.checkpoint(lambda part: _scores(src, b, x, part, dtype))
        s = jax.lax.map(one, parts).swapaxes(0, 1).reshape(n, k * size)[:, :c]
    return jnp.where(ids >= 0, s if delta is None else s + delta, -jnp.inf)
