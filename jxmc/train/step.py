"""The train state and the jitted train step ``(state, batch) -> (state, metrics)``:
:func:`make_train_step` (every parameter by its gradient and optax), or
:func:`jxmc.train.sparse_step.make_sparse_train_step` (the label tables of the shortlist levels by sparse
row updates, :mod:`jxmc.nn.sparse_rows`; the rest by optax).

The state is donated, so XLA updates parameters and optimizer moments in place.
Everything that changes a compiled shape (spec, levels trained) is bound
before ``jit``; batches have fixed shapes, so the step compiles once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
    """Attributes:
      step: i32[] optimizer steps taken in the current phase.
      params: the parameter pytree (f32).
      opt_state: the optax state.
      rng: u32[2] the PRNG key for dropout.
    """

    step: Any
    params: Any
    opt_state: Any
    rng: Any


def init_state(params, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh state on copies of ``params`` (the step donates its state, never the caller's)."""
    params = jax.tree_util.tree_map(jnp.array, params)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                      jax.random.PRNGKey(seed))


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation):
    """Jits ``step(state, batch) -> (state, metrics)``.

    Args:
      loss_fn: ``(params, batch, rng) -> (loss: f32[], metrics: dict of f32[])``.
      tx: the optimizer.
    """

    def step(state: TrainState, batch):
        rng, sub = jax.random.split(state.rng)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, sub)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        return TrainState(state.step + 1, params, opt_state, rng), metrics

    return jax.jit(step, donate_argnums=0)

