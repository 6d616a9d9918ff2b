"""The train step whose shortlist label tables take sparse row updates
(:mod:`jxmc.nn.sparse_rows`) while everything else follows optax: no ``K x h``
gradient and no pass over a whole table per step.  Its state is a
:class:`jxmc.train.step.TrainState` whose ``opt_state`` is ``(optax state of the rest,
row state)`` and whose tables are held as bit patterns (:func:`init_sparse_state`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import jxmc.nn.sparse_rows as sparse_rows
from jxmc.train.step import TrainState


class RowUpdate(NamedTuple):
    """The sparse row updates of :func:`make_sparse_train_step` (:mod:`jxmc.nn.sparse_rows`).

    Attributes:
      update: ``"rowwise-adagrad"`` or ``"sgd"``.
      tables: every level under ``params["heads"]`` whose ``w``/``b`` take row updates
        (never differentiated densely; the shortlist levels ``t >= 2``).
      trained: those of ``tables`` this phase updates (the others are frozen).
      lr: the schedule ``step -> f32[]`` of their learning rate.
      weight_decay: decoupled decay of the touched rows.
      clip_norm: the global norm of all the step's gradients (dense and rows) is
        clipped to this; None: no clipping.
      eps: row-wise Adagrad's ``eps``.
      dtype: the tables' storage dtype (``w``; held in the state as its bit patterns).
    """

    update: str
    tables: tuple[str, ...]
    trained: tuple[str, ...]
    lr: Callable
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0
    eps: float = 1e-8
    dtype: str = "float32"


def init_sparse_state(params, tx: optax.GradientTransformation, rows: RowUpdate,
                      seed: int) -> TrainState:
    """A fresh state for :func:`make_sparse_train_step`: ``params`` whole, the tables'
    ``w`` cast to ``rows.dtype`` and held as bit patterns
    (:func:`jxmc.nn.sparse_rows.as_bits`; :func:`sparse_params` gives the floats back),
    ``opt_state = (tx state of the rest, row state)`` (the row state:
    :func:`jxmc.nn.sparse_rows.init_row_state` of every table in ``rows.tables``)."""
    params = jax.tree_util.tree_map(jnp.array, params)
    params = sparse_rows.as_bits(sparse_rows.cast_tables(params, rows.tables, rows.dtype),
                                 rows.tables)
    rest, tables = sparse_rows.split_tables(params, rows.tables)
    return TrainState(jnp.zeros((), jnp.int32), params,
                      (tx.init(rest), sparse_rows.init_row_state(tables, rows.update)),
                      jax.random.PRNGKey(seed))


def sparse_params(params, rows: RowUpdate):
    """The params of a :func:`init_sparse_state` state with float tables (``rows.dtype``)."""
    return sparse_rows.as_floats(params, rows.tables, rows.dtype)


ROW_CHUNK = 8192
"""Rows whose gradients (``f32[ROW_CHUNK, h]``) are formed and applied at a time."""


def _chunks(m: int) -> tuple[int, int]:
    """``(chunks, size)``: ``m`` slots in chunks of ``ROW_CHUNK`` (one chunk of ``m``)."""
    return (1, m) if m <= ROW_CHUNK else (-(-m // ROW_CHUNK), ROW_CHUNK)


def _sq_norm(grads: sparse_rows.RowGrads, x: jax.Array) -> jax.Array:
    """``f32[]``: the squared norm of every row's weight gradient, ``sum_k coef_k (x x^T)
    coef_k^T`` over the rows (:func:`jxmc.nn.sparse_rows.row_sq_norms`), a chunk of
    ``ROW_CHUNK`` rows' coefficients at a time."""
    chunks, size = _chunks(grads.rows.shape[0])
    gram = x @ x.T

    def part(i):
        coef = sparse_rows.chunk_coefficients(grads, i * size, size)
        return jnp.sum(sparse_rows.row_sq_norms(coef, x, gram))

    if chunks == 1:
        return part(0)
    return jax.lax.fori_loop(0, chunks, lambda i, acc: acc + part(i), jnp.zeros((), jnp.float32))


def _update_in_chunks(table, state, grads: sparse_rows.RowGrads, x, scale, lr, key,
                      rows: RowUpdate):
    """:func:`jxmc.nn.sparse_rows.update_rows` of the distinct rows of ``grads`` a chunk
    of ``ROW_CHUNK`` at a time, each chunk's coefficients and gradients ``coef @ x``
    formed just before its update (never all ``[n c, n]`` or ``[m, h]`` of them; one
    chunk: a single update)."""
    m = grads.rows.shape[0]
    chunks, size = _chunks(m)

    def one(table, state, i, r, g, key):
        coef = sparse_rows.chunk_coefficients(grads, i * size, size)
        return sparse_rows.update_rows(table, state, r, (coef @ x) * scale, g * scale, lr, key,
                                       update=rows.update, dtype=rows.dtype,
                                       weight_decay=rows.weight_decay, eps=rows.eps)

    if chunks == 1:
        return one(table, state, 0, grads.rows, grads.gb, key)
    pad = chunks * size - m  # padding rows: -1, no gradient
    rows_ = jnp.pad(grads.rows, (0, pad), constant_values=-1).reshape(chunks, size)
    gb = jnp.pad(grads.gb, (0, pad)).reshape(chunks, size)

    def body(i, carry):
        return one(*carry, i, rows_[i], gb[i], jax.random.fold_in(key, i))

    return jax.lax.fori_loop(0, chunks, body, (table, state))


def make_sparse_train_step(loss_fn: Callable, tx: optax.GradientTransformation,
                           rows: RowUpdate):
    """Jits ``step(state, batch) -> (state, metrics)`` whose label tables ``rows.tables``
    take sparse row updates (:mod:`jxmc.nn.sparse_rows`): no ``K x h`` gradient, no
    pass over a whole table.

    Args:
      loss_fn: ``(params, batch, rng, deltas) -> (loss, (metrics, rows))`` with
        ``deltas`` and ``rows`` (per level ``(ids, x)``) as in
        :func:`jxmc.nn.cascade.row_loss_fn` (``deltas=None``: those of every level of
        ``rows.trained``).
      tx: the optimizer of every other parameter (built without clipping:
        ``make_optimizer(clip_norm=None)``).
      rows: the tables and their update.

    The state is :func:`init_sparse_state`'s; its ``rng`` also draws the stochastic
    rounding of the updated rows.
    """

    def step(state: TrainState, batch):
        rng, sub, r_round = jax.random.split(state.rng, 3)
        rest, tables = sparse_rows.split_tables(state.params, rows.tables)  # w: bits
        fixed = jax.lax.stop_gradient(sparse_rows.split_tables(
            sparse_params(state.params, rows), rows.tables)[1])
        # the bits beside the floats: a shortlist gathered in chunks reads them
        # (jxmc.nn.heads.score_shortlist); a float table is its own
        fixed = {k: {**t, "bits": tables[k]["w"]} if t["w"].dtype.itemsize < 4 else t
                 for k, t in fixed.items()}

        def loss(rest, deltas):
            return loss_fn(sparse_rows.merge_tables(rest, fixed), batch, sub, deltas)

        shapes = jax.eval_shape(lambda r: loss(r, None), rest)[1][1]
        deltas = sparse_rows.zero_deltas({k: shapes[k][0] for k in rows.trained})
        (value, (metrics, scored)), (g_rest, g_deltas) = jax.value_and_grad(
            loss, argnums=(0, 1), has_aux=True)(rest, deltas)
        grads = {k: sparse_rows.row_segments(scored[k][0], g_deltas[k]) for k in rows.trained}
        norm = jnp.sqrt(optax.tree.norm(g_rest, squared=True)
                        + sum(_sq_norm(grads[k], scored[k][1]) + jnp.sum(grads[k].gb ** 2)
                              for k in rows.trained))
        scale = (jnp.ones((), jnp.float32) if rows.clip_norm is None
                 else jnp.minimum(1.0, rows.clip_norm / jnp.maximum(norm, 1e-30)))
        g_rest = jax.tree_util.tree_map(lambda g: g * scale, g_rest)
        dense_state, row_state = state.opt_state
        updates, dense_state = tx.update(g_rest, dense_state, rest)
        rest = optax.apply_updates(rest, updates)
        lr = rows.lr(state.step)
        tables, row_state = dict(tables), dict(row_state)
        for i, k in enumerate(rows.trained):
            tables[k], row_state[k] = _update_in_chunks(
                tables[k], row_state[k], grads[k], scored[k][1], scale, lr,
                jax.random.fold_in(r_round, i), rows)
        params = sparse_rows.merge_tables(rest, tables)
        metrics = {**metrics, "loss": value, "grad_norm": norm}
        return TrainState(state.step + 1, params, (dense_state, row_state), rng), metrics

    return jax.jit(step, donate_argnums=0)
