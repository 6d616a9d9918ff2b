"""Sparse ranker weights keyed by (parent node, feature): build, chunk, compress, score.

Why this representation.  Dense weights are ``d * L`` (50 GB on debian-deps).
The children of one parent are trained on the same instances, so their weights
live on the same support: the features that occur in the parent's instances.
Training works on *slots*, the (parent, feature) pairs of that support, with
one dense row of ``B_l`` child weights per slot (:mod:`jxmc.ops.svm`).

After training, weights with ``|w| < threshold`` become 0 (PECOS's threshold
0.1) and the slots are stored compressed -- most children of a leaf-level slot
are 0 (debian-deps: 4.2M slots x 88 children, about 7M non-zeros):

* ``indptr: i32[K_{l-1} + 1]``, ``features: i32[S]``: the sorted feature ids of
  each parent's kept slots (CSR over parents); feature ``d`` is the bias;
* ``slot_ptr: i32[S + 1]``, ``children: i16[N]`` (``i32`` when ``B_l > 32767``),
  ``values: f32[N]``: each slot's non-zero (child, weight) pairs, children
  ascending (CSR over slots).

Scoring a query ``x`` against the children of the parents in its beam looks each
query feature up in the parent's sorted slot list by a fixed-length binary
search (``ceil(log2(max slots per parent + 1))`` steps), gathers the slot's at
most ``w`` (the level's longest slot, ``<= B_l``) pairs and scatter-adds them
into the ``B_l`` children: cost ``b * z * (log S_p + w)`` per query with static
shapes ``[n, b, z, w]``; the lookup is shared by all siblings, which a per-label
CSC layout (PECOS's) would repeat ``B_l`` times.  At prediction the slots with
many weights are expanded to dense rows and the rest stay packed
(:func:`scoring_layout`).  The bias column is :func:`jxmc.ops.sparse.add_bias`'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp


def parent_supports(Xb: sp.csr_matrix, inst: np.ndarray, parent: np.ndarray,
                    n_parents: int) -> sp.csr_matrix:
    """``csr [K_{l-1}, d + 1]`` whose pattern is each parent's feature support."""
    Mt = sp.csr_matrix((np.ones(len(inst), np.float32), (parent, inst)),
                       shape=(n_parents, Xb.shape[0]))  # the pairs: the matching matrix, transposed
    A = sp.csr_matrix(Mt @ abs(Xb))
    A.sort_indices()
    return A


def pair_entries(Xb: sp.csr_matrix, A: sp.csr_matrix, inst: np.ndarray, parent: np.ndarray):
    """The non-zeros of every pair's row, mapped to slots of ``A``.

    Returns:
      ``(slot: i32[E], val: f32[E], pair: i32[E])``, sorted by pair.
    """
    Xp = Xb[inst]
    nnz = np.diff(Xp.indptr)
    pair = np.repeat(np.arange(len(inst), dtype=np.int32), nnz)
    width = np.int64(Xb.shape[1])
    key = parent[pair].astype(np.int64) * width + Xp.indices
    slot_key = np.repeat(np.arange(A.shape[0], dtype=np.int64), np.diff(A.indptr)) * width + A.indices
    slot = np.searchsorted(slot_key, key).astype(np.int32)
    return slot, Xp.data.astype(np.float32), pair


def plan_chunks(sizes: np.ndarray, limits: np.ndarray) -> list[tuple[int, int]]:
    """Greedy contiguous groups of parents whose summed ``sizes`` stay within ``limits``.

    Args:
      sizes: ``[K, m]`` per-parent sizes (slots, entries, ...).
      limits: ``[m]`` per-chunk limits; a parent larger than a limit gets its own chunk.

    Returns:
      ``[(first, end), ...]`` parent ranges covering ``0 .. K``.
    """
    chunks, start, acc = [], 0, np.zeros(sizes.shape[1], np.int64)
    for k in range(sizes.shape[0]):
        if k > start and np.any(acc + sizes[k] > limits):
            chunks.append((start, k))
            start, acc = k, np.zeros_like(acc)
        acc = acc + sizes[k]
    chunks.append((start, sizes.shape[0]))
    return chunks


def child_dtype(n_children: int):
    """The narrowest stored child-id dtype for ``n_children`` children."""
    return np.int16 if n_children <= np.iinfo(np.int16).max else np.int32


def compress_rows(W: np.ndarray, threshold: float):
    """Thresholds dense slot rows and keeps their non-zeros.

    Args:
      W: ``f32[S, B]`` weights of ``S`` slots.
      threshold: weights with ``|w| < threshold`` are dropped.

    Returns:
      ``(keep: bool[S], counts: i64[S'], children: i16[N], values: f32[N])``:
      the slots with a non-zero, their non-zero counts and their (child, value)
      pairs in slot-major, child-ascending order.
    """
    W = np.asarray(W)
    r, c = np.nonzero(np.abs(W) >= threshold)
    counts = np.bincount(r, minlength=W.shape[0])
    keep = counts > 0
    return keep, counts[keep], c.astype(child_dtype(W.shape[1])), W[r, c].astype(np.float32)


def assemble_level(parts, n_parents: int, n_children: int) -> dict:
    """Joins per-chunk compressed slots into one level's arrays.

    Args:
      parts: ``[(parent_of_slot, features, counts, children, values), ...]`` in
        parent order, one per chunk (kept slots only).

    Returns:
      ``{"indptr", "features", "slot_ptr", "children", "values"}`` (module
      docstring); never empty: a level without weights gets one inert slot.
    """
    par = np.concatenate([p[0] for p in parts]).astype(np.int64)
    feats = np.concatenate([p[1] for p in parts]).astype(np.int32)
    counts = np.concatenate([p[2] for p in parts]).astype(np.int64)
    children = np.concatenate([p[3] for p in parts]).astype(child_dtype(n_children))
    values = np.concatenate([p[4] for p in parts]).astype(np.float32)
    if len(feats) == 0:  # one inert slot so that shapes are never empty
        par, feats, counts = np.zeros(1, np.int64), np.zeros(1, np.int32), np.ones(1, np.int64)
        children, values = np.zeros(1, children.dtype), np.zeros(1, np.float32)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(par, minlength=n_parents))])
    slot_ptr = np.concatenate([[0], np.cumsum(counts)])
    return {"indptr": indptr.astype(np.int32), "features": feats,
            "slot_ptr": slot_ptr.astype(np.int32), "children": children, "values": values}


def _steps(indptr) -> int:
    per_parent = int(np.diff(np.asarray(indptr)).max(initial=0))
    return max(1, int(np.ceil(np.log2(per_parent + 1))) + 1)


def level_shape(level: dict) -> tuple[int, int]:
    """Static scoring shapes of a level: ``(binary-search steps, slot width w)``."""
    width = int(np.diff(np.asarray(level["slot_ptr"])).max(initial=1))
    return _steps(level["indptr"]), max(width, 1)


def scoring_layout(level: dict, n_children: int, *, packed_width: int = 8):
    """Splits a stored level for fast scoring (host side, at prediction).

    Scattering every slot's pairs costs ``z * w`` per (query, beam node) with ``w``
    the *longest* slot (up to ``B``), while most slots hold a few weights (about
    3 of 88 at debian-deps' leaves).  Slots with more than ``packed_width``
    weights are expanded to *dense rows* ``f32[H, B]`` and scored by a row gather
    (:func:`score_dense_rows`); the rest stay *packed*, the compressed
    (child, weight) form of width ``<= packed_width`` (:func:`score_children`).

    Returns:
      ``(packed, dense, shapes)``: ``packed`` a level dict (module docstring) or
      ``None``, ``dense`` ``{"indptr", "features", "rows"}`` or ``None``, and the
      static ``shapes = (packed_steps, packed_width, dense_steps)`` (0 when absent).
    """
    indptr, features = np.asarray(level["indptr"]), np.asarray(level["features"])
    slot_ptr = np.asarray(level["slot_ptr"])
    counts = np.diff(slot_ptr)
    is_dense = counts > packed_width
    parent = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    entry_dense = np.repeat(is_dense, counts)
    children, values = np.asarray(level["children"]), np.asarray(level["values"])

    def sub_indptr(mask):
        per = np.bincount(parent[mask], minlength=len(indptr) - 1)
        return np.concatenate([[0], np.cumsum(per)]).astype(np.int32)

    packed = dense = None
    shapes = [0, 0, 0]
    if (~is_dense).any():
        packed = {"indptr": sub_indptr(~is_dense), "features": features[~is_dense],
                  "slot_ptr": np.concatenate([[0], np.cumsum(counts[~is_dense])]).astype(np.int32),
                  "children": children[~entry_dense], "values": values[~entry_dense]}
        if len(packed["values"]) == 0:
            packed["children"], packed["values"] = (np.zeros(1, children.dtype),
                                                    np.zeros(1, np.float32))
        shapes[:2] = level_shape(packed)
    if is_dense.any():
        H = int(is_dense.sum())
        rows = np.zeros((H, n_children), np.float32)
        rows[np.repeat(np.arange(H), counts[is_dense]), children[entry_dense]] = values[entry_dense]
        dense = {"indptr": sub_indptr(is_dense), "features": features[is_dense], "rows": rows}
        shapes[2] = _steps(dense["indptr"])
    return packed, dense, tuple(shapes)


def _lookup(indptr, features, q_idx, parents, steps: int):
    """Slot of each query feature in each parent's sorted slot list.

    Returns:
      ``(at: i32[n, b, z], found: bool[n, b, z])``.
    """
    p = jnp.maximum(parents, 0)
    lo0 = indptr[p][:, :, None]  # [n, b, 1]
    hi0 = indptr[p + 1][:, :, None]
    f = q_idx[:, None, :]  # [n, 1, z]
    lo = jnp.broadcast_to(lo0, lo0.shape[:2] + (q_idx.shape[1],))
    hi = jnp.broadcast_to(hi0, lo.shape)
    S = features.shape[0]

    def step(_, state):
        lo, hi = state
        mid = (lo + hi) // 2
        right = features[jnp.minimum(mid, S - 1)] < f
        open_ = lo < hi
        return jnp.where(open_ & right, mid + 1, lo), jnp.where(open_ & ~right, mid, hi)

    lo, _ = jax.lax.fori_loop(0, steps, step, (lo, hi))
    at = jnp.minimum(lo, S - 1)
    return at, (lo < hi0) & (features[at] == f) & (parents[:, :, None] >= 0)


def score_dense_rows(dense, q_idx, q_val, parents, *, steps: int):
    """Like :func:`score_children` for a level's dense rows
    ``{"indptr", "features", "rows": f32[H, B]}`` (:func:`scoring_layout`)."""
    at, found = _lookup(dense["indptr"], dense["features"], q_idx, parents, steps)
    coef = jnp.where(found, q_val[:, None, :], 0.0)  # [n, b, z]
    return jnp.einsum("nbz,nbzc->nbc", coef, dense["rows"][at])


def score_children(level, q_idx, q_val, parents, *, n_children: int, steps: int, width: int):
    """Logits of the children of each beam parent.

    Args:
      level: one level's arrays (module docstring; jax or numpy), ``S, N >= 1``.
      q_idx, q_val: queries as ELL rows ``i32[n, z]``, ``f32[n, z]`` including
        the bias feature; padding ``(0, 0.0)`` is inert.
      parents: ``i32[n, b]`` parent nodes, ``-1`` padded (scores there are 0).
      n_children: ``B``, children per parent.
      steps, width: from :func:`level_shape`.

    Returns:
      ``f32[n, b, B]`` the children's linear scores ``w_c . x``.
    """
    slot_ptr, children, values = level["slot_ptr"], level["children"], level["values"]
    n, b = parents.shape
    at, found = _lookup(level["indptr"], level["features"], q_idx, parents, steps)
    coef = jnp.where(found, q_val[:, None, :], 0.0)  # [n, b, z]
    N = children.shape[0]
    start = slot_ptr[at]
    length = jnp.where(found, slot_ptr[at + 1] - start, 0)
    j = jnp.arange(width, dtype=jnp.int32)
    pos = jnp.minimum(start[..., None] + j, N - 1)  # [n, b, z, w]
    contrib = jnp.where(j < length[..., None], values[pos], 0.0) * coef[..., None]
    row = jnp.arange(n * b, dtype=jnp.int32).reshape(n, b, 1, 1) * n_children
    seg = row + children[pos].astype(jnp.int32)
    out = jax.ops.segment_sum(contrib.ravel(), seg.ravel(), num_segments=n * b * n_children)
    return out.reshape(n, b, n_children)
