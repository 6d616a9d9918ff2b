"""XLA-friendly top-k, written once for every method: exact, chunked (never
materialising all scores), approximate (TPU) and sharded (two stages on a mesh).

* :func:`top_k`: ``lax.top_k`` on f32 (a bf16 top-k on CPU falls back to a full
  sort, so scores are cast first).
* :func:`chunked_top_k`: the top-k of ``x @ W.T + b`` over ``K`` rows of ``W``,
  scanned ``chunk`` rows at a time with a running top-k, so the peak memory is
  ``n * (k + chunk)`` scores instead of ``n * K``.
* :func:`approx_top_k`: ``lax.approx_max_k`` (Chern et al., "TPU-KNN", NeurIPS
  2022) on TPU, where it is a fast partial reduction; exact elsewhere, where
  XLA lowers it to a sort anyway.
* :func:`sharded_top_k` / :func:`sharded_table_top_k`: top-k over labels split
  across the ``model`` axis of a mesh, in two stages.

Two stages on a mesh.  With the scores ``f32[n, L]`` split as ``[n / D, L / M]``
blocks (points on ``data``, labels on ``model``, :mod:`jxmc.sharding`):

1. every device takes the top ``k`` of its own block (``lax.top_k`` under
   ``jax.shard_map``) and turns the local ids into global ones
   (``shard offset + local id``, the offset being ``axis_index("model") * L / M``);
2. the ``k`` candidates of the ``M`` label shards are all-gathered along
   ``model``: ``n / D x M * k`` values and ids per device;
3. a final ``lax.top_k`` of those ``M * k`` candidates.

The ``n x L`` score matrix is never gathered: the only collective moves
``n x k x M`` scores (and as many ids) in total, where XLA's own partitioning of
a ``top_k`` over a sharded axis all-gathers every score first.  The result
equals ``lax.top_k`` of the gathered scores, ties included: ``lax.top_k`` puts
the lower index first among equal values, each shard keeps its ``k`` best under
that order, and the candidates are concatenated in shard order, i.e. by
increasing global id, so the final ``top_k`` breaks ties the same way.  (The
usual map-reduce top-k.)

:func:`sharded_table_top_k` fuses the scoring: ``x @ w.T + b`` against a label
table whose rows are split on ``model`` is computed shard by shard (optionally
``chunk`` rows at a time, :func:`chunked_top_k`), so not even a device's own
``n / D x L / M`` block need exist at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jxmc.ops.ids import pad_axis
from jxmc.sharding import DATA, MODEL


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


def merge_top_k(vals: jax.Array, ids: jax.Array, k: int, *,
                axis_name: str = MODEL) -> tuple[jax.Array, jax.Array]:
    """Stages 2-3, to call inside ``jax.shard_map``: each shard's candidates
    ``vals: f32[n', k']`` with their global ``ids: i32[n', k']`` (best first) are
    all-gathered along ``axis_name`` and the best ``k`` of the ``M * k'`` kept:
    ``(f32[n', k], i32[n', k])``, the same on every shard.  ``k <= M * k'``."""
    vals = jax.lax.all_gather(vals, axis_name, axis=1, tiled=True)  # [n/D, M * k_local]
    ids = jax.lax.all_gather(ids, axis_name, axis=1, tiled=True)
    best, j = jax.lax.top_k(vals, k)
    return best, jnp.take_along_axis(ids, j, axis=1)




@functools.partial(jax.jit, static_argnames=("k", "mesh"))
def sharded_top_k(scores: jax.Array, k: int, *, mesh: Mesh) -> tuple[jax.Array, jax.Array]:
    """``(values: f32[n, k], ids: i32[n, k])`` of ``scores: [n, L]``, best first, equal
    to ``lax.top_k(scores, k)``, computed on ``mesh`` without gathering the scores.

    ``scores`` is best laid out as :func:`jxmc.sharding.scores_sharding`
    (``n`` a multiple of ``D`` and ``L`` of ``M``); otherwise it is padded (rows
    and ``-inf`` labels that are never returned) and resharded first.  The output
    is split on ``data`` and replicated on ``model``.

    Raises:
      ValueError: ``k > L`` or ``k < 1``.
    """
    n, L = scores.shape
    if not 1 <= k <= L:
        raise ValueError(f"k={k} must be in [1, {L}] (the labels)")
    D, M = mesh.shape[DATA], mesh.shape[MODEL]
    s = pad_axis(pad_axis(scores.astype(jnp.float32), 1, M, -jnp.inf), 0, D, 0.0)
    width = s.shape[1] // M
    k_local = min(k, width)

    def local(block):  # [n/D, L/M] on one device
        v, i = jax.lax.top_k(block, k_local)
        return merge_top_k(v, i + jax.lax.axis_index(MODEL) * width, k)

    # check_vma=False: after the all-gather every model shard computes the same final
    # top-k, so the output is replicated on ``model`` although it was computed per shard.
    v, i = jax.shard_map(local, mesh=mesh, in_specs=P(DATA, MODEL), out_specs=P(DATA, None),
                         check_vma=False)(s)
    v, i = v[:n], i[:n]
    return v, jnp.where(i < L, i, -1)


@functools.partial(jax.jit, static_argnames=("k", "mesh", "chunk"))
def sharded_table_top_k(x: jax.Array, w: jax.Array, b: jax.Array | None, k: int, *, mesh: Mesh,
                        chunk: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` of ``x @ w.T + b`` over a label table split on ``model``.

    Args:
      x: f32/bf16[n, h] queries (``n`` a multiple of ``D``), split on ``data``.
      w: [L, h] label table, ``L`` a multiple of ``M`` (pad with rows whose bias
        is ``-inf``; :func:`jxmc.sharding.padded_size`), split on ``model``.
      b: optional f32[L] biases, split like ``w``.
      k: kept per query, ``1 <= k <= L``.
      mesh: a :func:`jxmc.sharding.make_mesh` mesh.
      chunk: score ``chunk`` table rows at a time on each device (peak
        ``n/D x (k + chunk)`` scores); None scores a device's rows at once.

    Returns:
      ``(values: f32[n, k], ids: i32[n, k])``, best first, split on ``data``.

    Raises:
      ValueError: ``L`` not a multiple of ``M``, ``n`` not of ``D``, or ``k`` out of range.
    """
    n, L = x.shape[0], w.shape[0]
    D, M = mesh.shape[DATA], mesh.shape[MODEL]
    if L % M or n % D:
        raise ValueError(f"need L % model == 0 and n % data == 0, got L={L}, n={n}, "
                         f"mesh data={D}, model={M}")
    if not 1 <= k <= L:
        raise ValueError(f"k={k} must be in [1, {L}] (the labels)")
    width = L // M
    k_local = min(k, width)
    bias = jnp.zeros(L, jnp.float32) if b is None else b.astype(jnp.float32)

    def local(xb, wb, bb):  # [n/D, h], [L/M, h], [L/M]
        if chunk is None:
            s = jnp.einsum("nh,kh->nk", xb, wb.astype(xb.dtype),
                           preferred_element_type=jnp.float32) + bb
            v, i = jax.lax.top_k(s, k_local)
        else:
            v, i = chunked_top_k(xb, wb, bb, k_local, chunk=chunk)
        return merge_top_k(v, i + jax.lax.axis_index(MODEL) * width, k)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(DATA, None), P(MODEL, None), P(MODEL)),
                         out_specs=P(DATA, None), check_vma=False)(x, w, bias)
