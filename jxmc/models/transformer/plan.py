"""The train state and step of each phase of a cascade network's training
(:func:`jxmc.models.transformer.common.fit_phases`): AdamW for the encoder and the
dense level, and -- with ``head_update`` other than ``adam`` -- sparse row updates of
the shortlist levels' tables (:mod:`jxmc.nn.sparse_rows`), checked options, and one
step compiled from shapes alone (:func:`compile_train_step`: its memory analysis at
any scale without allocating the tables).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jxmc import sharding
from jxmc.errors import ConfigError
from jxmc.nn import cascade, sparse_rows
from jxmc.train.optim import make_optimizer, warmup_linear
from jxmc.train.sparse_step import (
    RowUpdate,
    init_sparse_state,
    make_sparse_train_step,
    sparse_params,
)
from jxmc.train.step import init_state, make_train_step


class PhasePlan(NamedTuple):
    """The train state and step of each phase (:func:`phase_plan`).

    Attributes:
      start: ``(params, p, seed) -> TrainState`` a fresh state for phase ``p``
        (the shortlist tables cast to ``head_dtype`` on the sparse path).
      step: ``(p, state) -> step(state, batch) -> (state, metrics)`` phase ``p``'s
        jitted step (on the mesh, if any; ``step.jitted`` then is the ``jax.jit``).
      params: ``state.params -> params`` with float tables (the sparse state holds
        their bit patterns: :func:`jxmc.train.sparse_step.init_sparse_state`).
    """

    start: Callable
    step: Callable
    params: Callable


def phase_plan(config, spec: cascade.Spec, perm, names: tuple[str, ...],
               phases: list[tuple[int, ...]], total_steps: int, mesh=None) -> PhasePlan:
    """What :func:`~jxmc.models.transformer.common.fit_phases` builds per phase: the
    optimizer (AdamW, a fresh schedule of ``total_steps`` per phase, frozen tables),
    and with a sparse ``head_update`` the row updates of the shortlist tables (:class:`jxmc.train.sparse_step.RowUpdate`).

    Args:
      names: the levels under ``params["heads"]``; perm: i32[K_D] the leaf labels.

    Raises:
      ConfigError: what :func:`head_options` raises.
    """
    update, dtype = head_options(config, mesh)
    sparse = update != "adam"
    tables = sparse_rows.shortlist_levels(dict.fromkeys(names)) if sparse else ()
    warmup = int(config.warmup * total_steps)
    perm_d = jnp.asarray(perm)

    def optimizer(p: int):
        trained = {f"level_{t}" for t in phases[p]}
        return make_optimizer(lr_encoder=config.lr_encoder, lr_heads=config.lr_heads,
                              total_steps=total_steps, warmup_steps=warmup,
                              weight_decay=config.weight_decay,
                              clip_norm=None if sparse else config.clip_norm,
                              frozen_heads=tuple(k for k in names if k not in trained))

    def row_update(p: int) -> RowUpdate:
        trained = tuple(k for k in tables if int(k[6:]) in phases[p])
        lr = warmup_linear(config.lr_rows or config.lr_heads, total_steps, warmup)
        return RowUpdate(update, tables, trained, lr, config.weight_decay, config.clip_norm,
                         dtype=dtype)

    def start(params, p: int, seed: int):
        tx = optimizer(p)
        if sparse:
            return init_sparse_state(params, tx, row_update(p), seed)
        if mesh is None:
            return init_state(params, tx, seed)
        return sharding.init_train_state(params, tx, seed, mesh=mesh)

    def step(p: int, state):
        tx = optimizer(p)
        if sparse:
            loss = functools.partial(cascade.row_loss_fn, perm=perm_d, spec=spec,
                                     train_levels=phases[p], mesh=mesh)
            fn = make_sparse_train_step(lambda prm, b, r, d, f=loss: f(prm, b, r, d), tx,
                                        row_update(p))
        else:
            loss = functools.partial(cascade.loss_fn, perm=perm_d, spec=spec,
                                     train_levels=phases[p], mesh=mesh)
            fn = make_train_step(lambda prm, b, r, f=loss: f(prm, b, r), tx)
        if mesh is not None:
            return sharding.shard_train_step(fn, state, mesh)
        return fn

    def floats(params):
        return sparse_params(params, row_update(0)) if sparse else params

    return PhasePlan(start, step, floats)


def compile_train_step(params, spec: cascade.Spec, perm, config, *,
                       batch_size: int, positives: tuple[int, ...],
                       phases: list[tuple[int, ...]] | None = None, phase: int = 0):
    """One train step of a cascade network compiled from shapes alone (nothing of the
    size of a table is allocated): ``jax.stages.Compiled``, whose
    ``memory_analysis()`` gives the step's temporary bytes.

    Args:
      params: ``{"encoder", "heads"}`` of arrays or ``jax.ShapeDtypeStruct`` (the
        shortlist tables' ``w`` in any dtype: cast to ``config.head_dtype`` as in
        :func:`~jxmc.models.transformer.common.fit_phases`).
      spec: the network; perm: i32[K_D] (or its ``ShapeDtypeStruct``).
      config: the options (``head_update``, ``head_dtype``, learning rates, ``max_len``; a
        :class:`jxmc.models.transformer.common.TextConfig`).
      batch_size: points per step; positives: per level, the width ``m_t`` of the
        positive nodes' buffer.
      phases, phase: the levels trained (default: all, one phase).
    """
    depth = len(spec.branching)
    phases = phases or [tuple(range(1, depth + 1))]
    plan = phase_plan(config, spec, np.zeros(perm.shape, np.int32), tuple(params["heads"]),
                      phases, 1)
    state = jax.eval_shape(lambda prm: plan.start(prm, phase, 0), params)
    i32 = jnp.int32
    batch = {"ids": jax.ShapeDtypeStruct((batch_size, config.max_len), i32),
             "mask": jax.ShapeDtypeStruct((batch_size, config.max_len), i32),
             "valid": jax.ShapeDtypeStruct((batch_size,), jnp.bool_),
             "pos": tuple(jax.ShapeDtypeStruct((batch_size, m), i32) for m in positives)}
    step = plan.step(phase, state)
    return getattr(step, "jitted", step).lower(state, batch).compile()


def head_options(config, mesh=None) -> tuple[str, str]:
    """``(head_update, head_dtype)`` of ``config`` (``("adam", "float32")`` when it has
    none), checked.

    Raises:
      ConfigError: a value not in :data:`jxmc.nn.sparse_rows.HEAD_UPDATES` /
        :data:`~jxmc.nn.sparse_rows.HEAD_DTYPES`; a low-precision table with ``adam``
        (optax's moments would follow the table's dtype); a sparse update on a ``mesh``.
    """
    update = getattr(config, "head_update", "adam")
    dtype = getattr(config, "head_dtype", "float32")
    if update not in sparse_rows.HEAD_UPDATES:
        raise ConfigError(f"option head_update={update!r} is not one of "
                          f"{', '.join(sparse_rows.HEAD_UPDATES)}")
    if dtype not in sparse_rows.HEAD_DTYPES:
        raise ConfigError(f"option head_dtype={dtype!r} is not one of "
                          f"{', '.join(sparse_rows.HEAD_DTYPES)}")
    if update == "adam" and dtype != "float32":
        raise ConfigError(f"head_dtype={dtype} needs a sparse head_update (rowwise-adagrad or "
                          "sgd); adam keeps float32 tables")
    if update != "adam" and mesh is not None:
        raise ConfigError(f"head_update={update} does not run on a device mesh yet; "
                          "use head_update=adam with --mesh")
    return update, dtype
