"""Sparse row updates of a label table: a train step touches only the rows it scores.

The shortlist levels (``t >= 2``) of a :mod:`jxmc.nn.cascade` network score a
batch on the gathered rows ``w[cand]`` of their table ``{"w": [K_t, h_t], "b":
f32[K_t]}`` (:func:`jxmc.nn.heads.score_shortlist`).  Differentiating the loss
with respect to the table gives a dense ``f32[K_t, h_t]`` gradient (the
scatter-add transpose of the gather), and AdamW then passes over the whole table
and its two ``f32`` moments every step.  Here instead:

1. the table enters the loss as a constant; the forward adds a zero *score delta*
   ``ds: f32[n, c_t]`` to the shortlist scores (:func:`zero_deltas`), so the
   gradient with respect to it is the scores' gradient ``gs``, and no ``K_t x h_t``
   buffer exists;
2. the gradient of a row scored by the points ``i`` (once or more) is ``sum gs_ij x_i``
   over them: :func:`row_segments` (``jnp.unique`` of static size; padding ids
   ``-1`` dropped) gives the distinct rows, and :func:`chunk_coefficients` a chunk of
   rows' ``[rows, n]`` coefficient matrix, whose product with the features ``x:
   [n, h_t]`` is their gradients, formed and applied a chunk of rows at a time
   (:func:`jxmc.train.sparse_step.make_sparse_train_step`),
   and their norms come from ``x x^T`` (:func:`row_sq_norms`); these are exactly the
   non-zero rows of the dense gradient, without its ``n x c_t x h_t`` products;
3. those rows alone are updated (:func:`update_rows`) by

   * ``"rowwise-adagrad"``: one ``f32`` accumulator per row, ``a_r += mean(g_r^2)``
     over the row's ``h_t + 1`` entries (weights and bias), ``w_r -= lr g_r /
     (sqrt(a_r) + eps)`` -- FBGEMM's row-wise Adagrad of DLRM's embedding tables
     (Naumov et al., arXiv:1906.00091, 2019; Gupta et al., "Training recommender
     systems at scale", 2021), ``4 K_t`` bytes of state instead of Adam's ``8 K_t h_t``;
   * ``"sgd"``: ``w_r -= lr g_r``, no state (ELMO's choice for its flat head,
     Zhang et al., ICML 2025);

   with AdamW-style decoupled weight decay ``w_r -= lr wd w_r`` on the touched rows
   only, and the result rounded back to the table's dtype (``bfloat16`` or
   ``float8_e4m3fn``) by unbiased stochastic rounding
   (:func:`jxmc.nn.lowp.stochastic_round`; Gupta et al., ICML 2015; its random
   bits hashed from the element index, :func:`jxmc.nn.lowp.hashed_bits`), so
   updates below half an ulp survive in expectation.  Biases stay ``f32`` (``K_t``
   floats) and are updated on the same rows.

Level 1 (scored densely over its ``K_1`` nodes) and the encoder stay on the optax
AdamW path (:mod:`jxmc.train.optim`); :func:`jxmc.train.sparse_step.make_sparse_train_step`
puts the two together.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jxmc.nn.lowp import from_bits, stochastic_round, to_bits

HEAD_UPDATES = ("adam", "rowwise-adagrad", "sgd")
"""``adam``: the dense optax AdamW path; the others: this module's sparse row updates."""
HEAD_DTYPES = ("float32", "bfloat16", "float8_e4m3fn")
"""Storage dtypes of the shortlist tables' ``w`` (the sparse updates only)."""
TABLE_KEYS = ("w", "b")


def shortlist_levels(heads: dict) -> tuple[str, ...]:
    """The names ``level_t`` (``t >= 2``) of ``heads``, the levels scored on a shortlist."""
    return tuple(sorted((k for k in heads if k.startswith("level_") and int(k[6:]) >= 2),
                        key=lambda k: int(k[6:])))


def split_tables(params: dict, names: tuple[str, ...]) -> tuple[dict, dict]:
    """``(rest, tables)``: ``params`` without the ``w``/``b`` of ``heads[name]`` for
    ``names``, and ``{name: {"w", "b"}}`` (other keys, e.g. ``proj_w``, stay in ``rest``)."""
    heads = dict(params["heads"])
    tables = {}
    for name in names:
        head = dict(heads[name])
        tables[name] = {k: head.pop(k) for k in TABLE_KEYS}
        heads[name] = head
    return {**params, "heads": heads}, tables


def merge_tables(rest: dict, tables: dict) -> dict:
    """The inverse of :func:`split_tables`."""
    heads = dict(rest["heads"])
    for name, t in tables.items():
        heads[name] = {**heads[name], **t}
    return {**rest, "heads": heads}


def cast_tables(params: dict, names: tuple[str, ...], dtype) -> dict:
    """``params`` with ``heads[name]["w"]`` stored as ``dtype`` (round to nearest) for
    ``names``; numpy stays numpy."""
    dtype = jnp.dtype(dtype)
    heads = dict(params["heads"])
    for name in names:
        w = heads[name]["w"]
        if w.dtype != dtype:
            heads[name] = {**heads[name], "w": w.astype(dtype)}
    return {**params, "heads": heads}


def init_row_state(tables: dict, update: str) -> dict:
    """Per level ``{"acc": f32[K_t]}`` zeros for ``rowwise-adagrad``, ``{}`` for ``sgd``."""
    if update == "rowwise-adagrad":
        return {name: {"acc": jnp.zeros(t["b"].shape[0], jnp.float32)}
                for name, t in tables.items()}
    return {name: {} for name in tables}


def zero_deltas(ids_shapes: dict) -> dict:
    """``{name: f32[n, c]}`` zero score offsets for the shortlist ids of shapes
    ``ids_shapes[name] = (n, c)`` (from ``jax.eval_shape`` of the loss)."""
    out = {}
    for name, shape in ids_shapes.items():
        n, c = shape.shape if hasattr(shape, "shape") else shape
        out[name] = jnp.zeros((n, c), jnp.float32)
    return out


class RowGrads(NamedTuple):
    """A batch's row gradients in factored form (:func:`row_segments`), ``m = n c``:

    rows: i32[m] each distinct row once (``-1`` in the unused slots); slot: i32[m] the
    slot of each scored entry ``(i, j)`` (row-major); g: f32[m] its score gradient
    (0 at padding ids); gb: f32[m] the rows' bias gradients; c: the shortlist width.
    """
    rows: jax.Array
    slot: jax.Array
    g: jax.Array
    gb: jax.Array
    c: int


def row_segments(ids: jax.Array, gs: jax.Array) -> RowGrads:
    """The distinct rows a batch scored and, per scored entry, its row's slot and its
    score gradient: row ``r``'s gradient is ``sum over (i, j) with ids[i, j] = r of
    gs[i, j] x_i`` (the scores ``s_ij = x_i . w_r + b_r``).  Static shapes (``jnp.unique``
    of size ``n c``); ``ids: i32[n, c]`` (``-1`` padding), ``gs: f32[n, c]``."""
    n, c = ids.shape
    flat = ids.reshape(-1)
    m = flat.shape[0]
    rows, inv = jnp.unique(flat, size=m, fill_value=-1, return_inverse=True)
    inv = inv.reshape(-1).astype(jnp.int32)
    g = jnp.where(flat >= 0, gs.reshape(m).astype(jnp.float32), 0.0)
    return RowGrads(rows, inv, g, jax.ops.segment_sum(g, inv, num_segments=m), c)


def chunk_coefficients(grads: RowGrads, start, size: int) -> jax.Array:
    """``coef: f32[size, n]`` of the slots ``start .. start + size - 1``: ``coef[k, i]``
    the summed ``gs`` of point ``i`` on row ``rows[start + k]``, so the rows' weight
    gradients are ``coef @ x`` (``x: [n, h]``), without the ``n x c x h`` products.
    Formed a chunk at a time, never all ``[n c, n]`` (quadratic in the batch: 48 MB at
    ``n = 128, c = 736``, 0.77 GB at ``n = 512``)."""
    n = grads.g.shape[0] // grads.c
    point = jnp.repeat(jnp.arange(n, dtype=jnp.int32), grads.c)
    local = grads.slot - start
    at = jnp.where((local >= 0) & (local < size), local, size)  # out of the chunk: dropped
    return jnp.zeros((size, n), jnp.float32).at[at, point].add(grads.g, mode="drop")


def row_coefficients(ids: jax.Array, gs: jax.Array):
    """``(rows: i32[m], coef: f32[m, n], gb: f32[m])``, ``m = n c``: :func:`row_segments`
    with every slot's coefficients at once (:func:`chunk_coefficients` of all ``m``);
    each distinct row once (``-1``, zero coefficients, in the unused slots)."""
    grads = row_segments(ids, gs)
    return grads.rows, chunk_coefficients(grads, 0, grads.rows.shape[0]), grads.gb


def row_sq_norms(coef: jax.Array, x: jax.Array, gram: jax.Array | None = None) -> jax.Array:
    """``f32[m]``: ``|coef_k @ x|^2`` per row without forming ``coef @ x``
    (``coef_k (x x^T) coef_k^T``; ``coef: f32[m, n]``, ``x: f32[n, h]``; ``gram``: ``x x^T``
    where the caller already has it, for chunks of one batch)."""
    gram = x @ x.T if gram is None else gram
    return jnp.maximum(jnp.sum((coef @ gram) * coef, -1), 0.0)


def as_bits(params: dict, names: tuple[str, ...]) -> dict:
    """``params`` with ``heads[name]["w"]`` held as its bit patterns (unsigned ints of
    the same width, :func:`jxmc.nn.lowp.to_bits`; numpy stays numpy): how the
    train state keeps the tables, so that the row scatter updates them in place (given a
    float table, XLA's CPU backend converts the whole table to f32 around a bf16
    scatter, and a ``bitcast_convert`` of a whole table is a copy)."""
    return _map_w(params, names, lambda w: (w.view(f"uint{8 * w.dtype.itemsize}")
                                            if isinstance(w, np.ndarray) else to_bits(w)))


def as_floats(params: dict, names: tuple[str, ...], dtype) -> dict:
    """The inverse of :func:`as_bits` (``dtype``: the tables' float dtype); under ``jit``
    the bitcast fuses into the row gathers that read it."""
    dtype = jnp.dtype(dtype)
    return _map_w(params, names, lambda w: (w.view(dtype) if isinstance(w, np.ndarray)
                                            else from_bits(w, dtype)))


def _map_w(params, names, f):
    heads = dict(params["heads"])
    for name in names:
        heads[name] = {**heads[name], "w": f(heads[name]["w"])}
    return {**params, "heads": heads}


def update_rows(table: dict, state: dict, rows: jax.Array, gw: jax.Array, gb: jax.Array, lr,
                key: jax.Array, *, update: str, dtype, weight_decay: float = 0.0,
                eps: float = 1e-8) -> tuple[dict, dict]:
    """One update of the rows ``rows`` of ``table`` (module docstring, step 3).

    Args:
      table: ``{"w": [K, h] the bit patterns of a ``dtype`` table (:func:`as_bits`),
        "b": f32[K]}``; state: its :func:`init_row_state`.
      dtype: the table's float dtype (f32, bf16 or fp8).
      rows: i32[m] distinct rows, ``-1`` ignored; gw: f32[m, h], gb: f32[m] their
        gradients (:func:`sum_duplicates`).
      lr: f32[] the learning rate; key: PRNG key of the stochastic rounding.
      update: ``"rowwise-adagrad"`` or ``"sgd"``.
      weight_decay: decoupled decay of the touched rows' weights (not the biases).

    Returns:
      ``(table', state')`` of the same shapes and dtypes; rows not in ``rows`` unchanged.

    Raises:
      ValueError: an unknown ``update``.
    """
    if update not in ("rowwise-adagrad", "sgd"):
        raise ValueError(f"update must be rowwise-adagrad or sgd, got {update!r}")
    K, h = table["w"].shape
    lr = jnp.asarray(lr, jnp.float32)
    safe = jnp.clip(rows, 0, K - 1)
    at = jnp.where(rows >= 0, rows, K)  # out of bounds: dropped by the scatters
    dtype = jnp.dtype(dtype)
    w = from_bits(table["w"][safe], dtype).astype(jnp.float32)
    b = table["b"][safe]
    state = dict(state)
    if update == "rowwise-adagrad":
        acc = state["acc"][safe] + (jnp.sum(gw * gw, -1) + gb * gb) / (h + 1)
        state["acc"] = state["acc"].at[at].set(acc, mode="drop")
        step = lr / (jnp.sqrt(acc) + eps)
    else:
        step = jnp.broadcast_to(lr, rows.shape)
    w_new = w - step[:, None] * gw - (lr * weight_decay) * w
    b_new = b - step * gb
    w_new = to_bits(stochastic_round(w_new, key, dtype, noise="hash"))  # no [m, h] bits
    return ({"w": table["w"].at[at].set(w_new, mode="drop"),
             "b": table["b"].at[at].set(b_new.astype(table["b"].dtype), mode="drop")}, state)
