"""Per-level label tables scored only on a shortlist.

Each tree level ``t`` has a table ``{"w": f32[K_t, h_t], "b": f32[K_t]}``; the
score of node ``u`` for a representation ``x`` is ``x . w[u] + b[u]``
(CascadeXML's per-resolution classifiers, Kharbanda et al., NeurIPS 2022,
Section 3; LightXML's label-level "embedding" table, Jiang et al., AAAI 2021).
Scoring a shortlist gathers its rows, so the cost is ``n * c * h``, not
``n * K * h``; ``-1`` ids score ``-inf``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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


def score_shortlist(table: dict, x: jax.Array, ids: jax.Array,
                    delta: jax.Array | None = None) -> jax.Array:
    """``f32[n, c]`` scores of the rows ``ids: i32[n, c]`` for ``x: [n, h]``; ``-inf`` at ``-1``.
    ``delta: f32[n, c]`` (zeros) is added to the scores: its gradient is the scores'
    gradient, from which :mod:`jxmc.nn.sparse_rows` forms the rows' gradients."""
    safe = jnp.maximum(ids, 0)
    w, b = table["w"][safe], table["b"][safe]  # [n, c, h], [n, c]
    s = jnp.einsum("nh,nch->nc", x, w.astype(x.dtype), preferred_element_type=jnp.float32) + b
    if delta is not None:
        s = s + delta
    return jnp.where(ids >= 0, s, -jnp.inf)
