"""XLA-friendly top-k: exact, chunked (never materialising all scores), approximate.

* :func:`top_k`: ``lax.top_k`` on f32 (a bf16 top-k on CPU falls back to a full
  sort, so scores are cast first).
* :func:`chunked_top_k`: the top-k of ``x @ W.T + b`` over ``K`` rows of ``W``,
  scanned ``chunk`` rows at a time with a running top-k, so the peak memory is
  ``n * (k + chunk)`` scores instead of ``n * K``.
* :func:`approx_top_k`: ``lax.approx_max_k`` (Chern et al., "TPU-KNN", NeurIPS
  2022) on TPU, where it is a fast partial reduction; exact elsewhere, where
  XLA lowers it to a sort anyway.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def top_k(scores: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``(values: f32[..., k], idx: i32[..., k])`` of ``scores: [..., c]``, best first.

    Raises:
      ValueError: ``k`` larger than the last axis.
    """
    if k > scores.shape[-1]:
        raise ValueError(f"k={k} exceeds the {scores.shape[-1]} candidates")
    return jax.lax.top_k(scores.astype(jnp.float32), k)


def approx_top_k(scores: jax.Array, k: int, *, recall_target: float = 0.95,
                 backend: str | None = None) -> tuple[jax.Array, jax.Array]:
    """Like :func:`top_k`; approximate (``lax.approx_max_k``) on TPU only."""
    if (backend or jax.default_backend()) == "tpu":
        return jax.lax.approx_max_k(scores.astype(jnp.float32), k, recall_target=recall_target)
    return top_k(scores, k)


def chunked_top_k(x: jax.Array, w: jax.Array, b: jax.Array | None, k: int, *,
                  chunk: int = 4096) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` of the dense scores ``x @ w.T + b`` without forming them all.

    Args:
      x: f32/bf16[n, h] queries.
      w: [K, h] label table; b: optional f32[K] biases.
      k: kept per query (``k <= K``).
      chunk: table rows scored per scan step.

    Returns:
      ``(values: f32[n, k], ids: i32[n, k])``, equal to ``lax.top_k`` of the
      dense scores (ties may be ordered differently).

    Raises:
      ValueError: ``k > K`` or ``chunk < 1``.
    """
    K, h = w.shape
    if k > K or chunk < 1:
        raise ValueError(f"need k <= K and chunk >= 1, got k={k}, K={K}, chunk={chunk}")
    chunk = min(chunk, K)
    steps = -(-K // chunk)
    pad = steps * chunk - K
    wp = jnp.pad(w, ((0, pad), (0, 0))).reshape(steps, chunk, h)
    bp = jnp.pad(jnp.zeros(K, jnp.float32) if b is None else b.astype(jnp.float32), (0, pad))
    bp = bp.reshape(steps, chunk)
    n = x.shape[0]

    def body(carry, inp):
        vals, ids = carry
        i, wc, bc = inp
        s = jnp.einsum("nh,ch->nc", x, wc.astype(x.dtype), preferred_element_type=jnp.float32) + bc
        cid = i * chunk + jnp.arange(chunk, dtype=jnp.int32)
        s = jnp.where(cid < K, s, -jnp.inf)
        allv = jnp.concatenate([vals, s], axis=1)
        alli = jnp.concatenate([ids, jnp.broadcast_to(cid, (n, chunk))], axis=1)
        v, j = jax.lax.top_k(allv, k)
        return (v, jnp.take_along_axis(alli, j, axis=1)), None

    init = (jnp.full((n, k), -jnp.inf, jnp.float32), jnp.full((n, k), -1, jnp.int32))
    (vals, ids), _ = jax.lax.scan(body, init, (jnp.arange(steps, dtype=jnp.int32), wp, bp))
    return vals, ids
