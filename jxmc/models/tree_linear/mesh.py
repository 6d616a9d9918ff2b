"""XR-Linear on a device mesh: the tree's per-level rankers split on ``model``, queries on ``data``.

Prediction (:func:`beam`).  Every level's stored rankers (CSR over parents,
:mod:`jxmc.ops.sparse_weights`, after :func:`~jxmc.ops.sparse_weights.scoring_layout`'s
split into packed slots and dense rows) are cut into ``n_model`` contiguous parent
ranges ``[lo_m, hi_m)``, one per ``model`` shard, each padded to the same array
sizes (:func:`split_level`), so a device holds about ``1 / n_model`` of the model.
Under ``jax.shard_map`` each device runs the whole beam search
(:func:`jxmc.tree.beam.beam_search`) for its ``n / n_data`` queries; at each level
it scores the children of the beam parents it owns and contributes 0 for the
others, and a ``psum`` over ``model`` of the ``f32[n / n_data, b, B_l]`` child
scores combines them.  Every candidate has exactly one owner, so the sum adds
exact zeros: the scores, hence the beam and the top-``k``, are the single-device
ones (:mod:`jxmc.models.tree_linear.scoring`).  The only collective moves
``n / n_data x b x B_l`` scores per level (never the scores of all labels); the
beam's top-``b`` then runs, identically, on every ``model`` shard.  (The per-level
label-parallel layout of a tree's rankers is jxmc issue 5's; the combine is
Megatron-LM's row-parallel ``all-reduce``, Shoeybi et al., arXiv:1909.08053,
Section 3.)

Training (:func:`solver_devices`).  PECOS's dual coordinate descent visits a
parent's instances one after another (:mod:`jxmc.ops.svm_dual`), so points are
not split: the ``data`` axis has no role in the solver.  The rankers are
solved in chunks of parents (:func:`jxmc.models.tree_linear.rankers.train_level`)
and the chunks run side by side on the mesh's devices -- every device of this
process takes whole chunks (``model`` first, then the ``data`` rows' devices take
further chunks).  The chunk plan and each chunk's PRNG key do not depend on the
devices, so the trained model is bit-identical to the single-device one.  Across
hosts every process solves every chunk on its own devices (the same model in
each process).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jxmc import sharding as S
from jxmc.models.tree_linear import scoring
from jxmc.models.tree_linear.scoring import ScoringLevels
from jxmc.tree.beam import beam_search
from jxmc.tree.label_tree import has_copies
from jxmc.types import TopK


def solver_devices(mesh: Mesh) -> list[jax.Device]:
    """The devices of ``mesh`` that this process drives, in mesh order (``model``
    fastest): where :func:`jxmc.models.tree_linear.rankers.train_level` runs its chunks."""
    me = jax.process_index()
    return [d for d in np.asarray(mesh.devices).flat if d.process_index == me]


# ---------------------------------------------------------------------------- layout


def parent_bounds(cost: np.ndarray, n_shards: int) -> np.ndarray:
    """``i64[n_shards + 1]`` cuts of ``K`` parents into ``n_shards`` contiguous ranges of
    about equal summed ``cost: f[K]`` (non-decreasing, ``0`` first, ``K`` last)."""
    K = len(cost)
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(cost, np.float64))])
    targets = cum[-1] * np.arange(1, n_shards) / n_shards
    inner = np.searchsorted(cum, targets, side="left")
    return np.concatenate([[0], np.clip(inner, 0, K), [K]]).astype(np.int64)


def balanced_bounds(sizes: np.ndarray, weights: np.ndarray, n_shards: int) -> np.ndarray:
    """Contiguous cuts of ``K`` parents into ``n_shards`` ranges for arrays padded to
    equal shards.

    Every part of a level is padded to its largest shard, so a device holds
    ``sum_j weights[j] * max_m (sizes[:, j] summed over range m)`` bytes.  Starts
    from :func:`parent_bounds` of the summed bytes and moves single cuts (in steps
    of ``K / (4 n_shards)`` halved down to 1) while that padded total falls.

    Args:
      sizes: ``f[K, J]`` per-parent sizes of ``J`` parts (slots, weights, ...).
      weights: ``f[J]`` bytes per unit of each part.
      n_shards: the ``model`` shards.

    Returns:
      ``i64[n_shards + 1]`` non-decreasing cuts, ``0`` first and ``K`` last.
    """
    sizes = np.asarray(sizes, np.float64)
    weights = np.asarray(weights, np.float64)
    K = sizes.shape[0]
    prefix = np.vstack([np.zeros((1, sizes.shape[1])), np.cumsum(sizes, axis=0)])

    def padded(b):
        return float((np.diff(prefix[b], axis=0).max(axis=0) * weights).sum())

    bounds = parent_bounds(sizes @ weights + 1e-3, n_shards)  # + a little: empty parents spread
    best = padded(bounds)
    step = max(1, K // (4 * n_shards))
    while step >= 1:
        improved = True
        while improved:
            improved = False
            for i in range(1, n_shards):
                for move in (-step, step):
                    trial = bounds.copy()
                    trial[i] += move
                    if not bounds[i - 1] <= trial[i] <= bounds[i + 1]:
                        continue
                    cost = padded(trial)
                    if cost < best - 1e-9:
                        bounds, best, improved = trial, cost, True
        step //= 2
    return bounds


def _pad(a: np.ndarray, size: int, value=0) -> np.ndarray:
    out = np.full((size,) + a.shape[1:], value, a.dtype)
    out[: len(a)] = a
    return out


def _split_csr(part: dict, bounds: np.ndarray, keys: tuple[str, ...]) -> dict:
    """Cuts a CSR-over-parents dict (``indptr`` + per-slot arrays ``keys``, and
    ``slot_ptr``/``children``/``values`` when present) by parent ranges; every
    shard padded to the same sizes.  Returns arrays with a leading shard axis."""
    indptr = np.asarray(part["indptr"], np.int64)
    n_shards = len(bounds) - 1
    lo, hi = bounds[:-1], bounds[1:]
    s0, s1 = indptr[lo], indptr[hi]
    n_par = int((hi - lo).max(initial=0))
    n_slot = max(int((s1 - s0).max(initial=0)), 1)
    out = {"indptr": np.stack([_pad(indptr[a:b + 1] - indptr[a], n_par + 1, indptr[b] - indptr[a])
                               for a, b in zip(lo, hi, strict=True)]).astype(np.int32)}
    for key in keys:
        arr = np.asarray(part[key])
        out[key] = np.stack([_pad(arr[a:b], n_slot) for a, b in zip(s0, s1, strict=True)])
    if "slot_ptr" in part:
        ptr = np.asarray(part["slot_ptr"], np.int64)
        e0, e1 = ptr[s0], ptr[s1]
        n_ent = max(int((e1 - e0).max(initial=0)), 1)
        out["slot_ptr"] = np.stack([_pad(ptr[a:b + 1] - ptr[a], n_slot + 1, ptr[b] - ptr[a])
                                    for a, b in zip(s0, s1, strict=True)]).astype(np.int32)
        for key in ("children", "values"):
            arr = np.asarray(part[key])
            out[key] = np.stack([_pad(arr[a:b], n_ent) for a, b in zip(e0, e1, strict=True)])
    assert all(v.shape[0] == n_shards for v in out.values())
    return out


def split_level(packed: dict | None, dense: dict | None, n_parents: int, n_children: int,
                n_shards: int):
    """One level's scoring layout cut into ``n_shards`` contiguous parent ranges.

    Args:
      packed, dense: :func:`jxmc.ops.sparse_weights.scoring_layout`'s parts (either
        may be None; both cover the same ``n_parents`` parents).
      n_children: ``B_l``.
      n_shards: the ``model`` shards.

    Returns:
      ``(packed, dense, ranges)``: the parts with a leading shard axis
      ``[n_shards, ...]`` (each shard's own CSR, local parent ids
      ``0 .. hi_m - lo_m``), and ``ranges: i32[n_shards, 2]`` the ``(lo_m, hi_m)``
      of every shard, cut by :func:`balanced_bounds` (a level with fewer parents
      than shards leaves some shards empty: they hold padding only).
    """
    sizes, weights = [np.ones(n_parents)], [4.0]  # indptr
    if packed is not None:
        ip = np.asarray(packed["indptr"], np.int64)
        ptr = np.asarray(packed["slot_ptr"], np.int64)
        child_bytes = np.asarray(packed["children"]).dtype.itemsize
        sizes += [np.diff(ip), ptr[ip[1:]] - ptr[ip[:-1]]]
        weights += [8.0, 4.0 + child_bytes]  # features + slot_ptr; values + children
    if dense is not None:
        sizes.append(np.diff(np.asarray(dense["indptr"], np.int64)))
        weights.append(4.0 + 4.0 * n_children)  # features + a dense row
    bounds = balanced_bounds(np.stack(sizes, axis=1), np.asarray(weights), n_shards)
    ranges = np.stack([bounds[:-1], bounds[1:]], axis=1).astype(np.int32)
    out_packed = None if packed is None else _split_csr(packed, bounds, ("features",))
    out_dense = None if dense is None else _split_csr(dense, bounds, ("features", "rows"))
    return out_packed, out_dense, ranges


def sharded_levels(params, depth: int, mesh: Mesh) -> ScoringLevels:
    """The first ``depth`` levels, laid out by :func:`split_level` and placed on ``mesh``
    (shard axis on ``model``, replicated on ``data``).

    Returns:
      :class:`~jxmc.models.tree_linear.scoring.ScoringLevels`: the static scoring
      shapes per level (as the single-device ones: maxima over the whole level)
      and per level ``(packed, dense, ranges)`` of global arrays.
    """
    tree = scoring.tree_of(params)
    n_model = mesh.shape[S.MODEL]
    sizes = (1,) + tree.level_sizes()
    on_model = S.label_sharding(mesh)
    shapes, levels = [], []
    for i in range(1, depth + 1):
        B = tree.branching[i - 1]
        packed, dense, sh = scoring.host_layout(params, i, B)
        parts = split_level(packed, dense, sizes[i - 1], B, n_model)
        shapes.append(sh)
        levels.append(S.put(parts, jax.tree.map(lambda _: on_model, parts)))
    return ScoringLevels(tuple(shapes), levels)


# ---------------------------------------------------------------------------- beam search


@functools.partial(jax.jit, static_argnames=("mesh", "branching", "shapes", "beam", "k",
                                             "leaf_ids", "transform", "merge"))
def beam_batch(levels, perm, q_idx, q_val, *, mesh, branching, shapes, beam, k, leaf_ids,
               transform="l3-hinge", merge=False) -> TopK:
    """Beam search of one batch on ``mesh`` (module docstring).

    Args:
      levels: :func:`sharded_levels`' per-level ``(packed, dense, ranges)``.
      perm: ``i32[K_D]`` label at each leaf position (replicated).
      q_idx, q_val: ``i32[n, z]``, ``f32[n, z]`` ELL queries with the bias feature,
        ``n`` a multiple of the ``data`` size, split on ``data``.

    Returns:
      :class:`TopK` ``ids: i32[n, k]``, ``scores: f32[n, k]``, split on ``data``.
    """

    def local(levels, perm, q_idx, q_val):
        levels = jax.tree.map(lambda a: a[0], levels)  # this shard's block

        def score(level, parents):
            packed, dense, ranges = levels[level - 1]
            own = (parents >= ranges[0]) & (parents < ranges[1])
            mine = jnp.where(own, parents - ranges[0], -1)  # not owned: scores 0
            out = scoring.level_scores(packed, dense, shapes[level - 1], q_idx, q_val, mine,
                                       branching[level - 1])
            return jax.lax.psum(out, S.MODEL)  # one owner per candidate: an exact sum

        ids_perm = perm if leaf_ids else jnp.arange(int(np.prod(branching)), dtype=jnp.int32)
        return beam_search(score, ids_perm, branching, q_idx.shape[0], beam=beam, k=k,
                           transform=transform, merge_copies=merge)

    # check_vma=False: the beam's loops mix model-varying tables with data-varying queries,
    # and after the psum every model shard holds the same scores, so the output is
    # replicated on ``model`` (out_specs) although it is computed per shard.
    return jax.shard_map(local, mesh=mesh, in_specs=(P(S.MODEL), P(), P(S.DATA), P(S.DATA)),
                         out_specs=P(S.DATA), check_vma=False)(levels, perm, q_idx, q_val)


def beam(params, levels: ScoringLevels, Xb: sp.csr_matrix, config, *, mesh: Mesh,
         k: int | None = None, upto: int | None = None) -> TopK:
    """:func:`jxmc.models.tree_linear.scoring.beam` on ``mesh`` with ``levels`` from
    :func:`sharded_levels`: the same batches (:func:`~jxmc.models.tree_linear.scoring.beam_batches`)
    with ``n_data`` (the ``data`` axis' size) times as many queries per step, split
    on ``data``.  Returns numpy arrays (in every process)."""
    tree = scoring.tree_of(params)
    depth = tree.depth if upto is None else upto
    branching = tree.branching[:depth]
    levels = levels.upto(depth)
    perm = S.put(np.asarray(tree.perm if upto is None else np.zeros(1, np.int32), np.int32),
                 S.replicated(mesh))
    k = config.beam_size if k is None else k
    merge = upto is None and has_copies(tree)

    def run(qi, qv):
        out = S.to_host(beam_batch(levels.arrays, perm, *S.shard_batch((qi, qv), mesh),
                                   mesh=mesh, branching=branching, shapes=levels.shapes,
                                   beam=config.beam_size, k=k, leaf_ids=upto is None,
                                   transform=config.transform, merge=merge))
        return out.ids, out.scores

    return scoring.beam_batches(Xb, config, levels.shapes, branching, k, run,
                                n_data=mesh.shape[S.DATA])
