"""Fixed-size shortlists of tree nodes for training, traceable inside ``jit``.

Every function maps padded id tables (``-1`` = none) to a padded id table of a
static width; duplicates become ``-1``, so a shortlist never scores a node twice.
Level ``t`` nodes are ids in ``[0, K_t)``; the children of node ``u`` are
``u * B + arange(B)`` (:mod:`jxmc.tree.label_tree`).

* :func:`tfn` -- teacher-forced negatives: the children of the parents of the
  positive nodes, i.e. the positives' siblings (PECOS ``M = Y C``; Zhang et al.,
  "XR-Transformer", NeurIPS 2021, Section 4.2).
* :func:`man` -- matcher-aware negatives: the children of the parents that the
  model's own beam keeps at the previous level, with the positive parents added
  in training (LightXML's dynamic negative sampling, Jiang et al., AAAI 2021,
  Section 3.3; XR-Transformer's MAN).
* :func:`in_batch` -- positives of the other points of the batch.
* :func:`uniform` -- uniformly random nodes.

``in_batch`` and ``uniform`` return the positives followed by ``r`` sampled ids.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dedupe(ids: jax.Array) -> jax.Array:
    """``i32[n, c]`` with each id kept once per row (sorted), repeats and padding ``-1`` last."""
    big = jnp.iinfo(jnp.int32).max
    s = jnp.sort(jnp.where(ids >= 0, ids, big), axis=1)
    first = jnp.concatenate([jnp.ones_like(s[:, :1], bool), s[:, 1:] != s[:, :-1]], axis=1)
    s = jnp.where(first & (s != big), s, big)
    s = jnp.sort(s, axis=1)
    return jnp.where(s == big, -1, s)


def children(parents: jax.Array, B: int) -> jax.Array:
    """``i32[n, p * B]``: the children of ``parents: i32[n, p]`` (``-1`` stays ``-1``)."""
    c = parents[:, :, None] * B + jnp.arange(B, dtype=jnp.int32)
    return jnp.where(parents[:, :, None] >= 0, c, -1).reshape(parents.shape[0], -1)


def hits(ids: jax.Array, positives: jax.Array) -> jax.Array:
    """``bool[n, c]``: whether ``ids[i, j]`` is one of ``positives[i]`` (``-1`` never hits)."""
    eq = ids[:, :, None] == positives[:, None, :]
    return eq.any(-1) & (ids >= 0)


def tfn(positives: jax.Array, B: int) -> jax.Array:
    """``i32[n, m * B]``: the siblings (and selves) of ``positives: i32[n, m]``."""
    parents = dedupe(jnp.where(positives >= 0, positives // B, -1))
    return children(parents, B)


def man(beam_parents: jax.Array, B: int, positives: jax.Array | None = None) -> jax.Array:
    """``i32[n, (b + m) * B]``: children of the beam's parents ``i32[n, b]`` and, when
    ``positives: i32[n, m]`` (level-``t`` nodes) are given, of the positives' parents."""
    parents = beam_parents
    if positives is not None:
        parents = jnp.concatenate([parents, jnp.where(positives >= 0, positives // B, -1)], 1)
    return children(dedupe(parents), B)


def in_batch(positives: jax.Array, key: jax.Array, r: int) -> jax.Array:
    """``i32[n, m + r]``: own positives plus ``r`` positives drawn from the whole batch."""
    flat = positives.reshape(-1)
    pick = jax.random.randint(key, (positives.shape[0], r), 0, flat.shape[0])
    return dedupe(jnp.concatenate([positives, flat[pick]], axis=1))


def uniform(positives: jax.Array, key: jax.Array, r: int, n_nodes: int) -> jax.Array:
    """``i32[n, m + r]``: own positives plus ``r`` nodes drawn uniformly from ``[0, n_nodes)``."""
    neg = jax.random.randint(key, (positives.shape[0], r), 0, n_nodes, dtype=jnp.int32)
    return dedupe(jnp.concatenate([positives, neg], axis=1))
