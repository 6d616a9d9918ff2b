"""The tree-linear models' beam search on one device: scoring levels, batches, beam.

A trained model (``params``, :func:`jxmc.models.tree_linear.xr_linear.fit`) holds
a label tree (``perm``, ``branching``) and per level ``1 .. D`` the rankers of
every node's children in the compressed layout of :mod:`jxmc.ops.sparse_weights`
(``params["levels"]["level_<l>"]``, keys :data:`LEVEL_KEYS`).  For prediction each
level is split once into its packed slots and dense rows
(:func:`jxmc.ops.sparse_weights.scoring_layout`) and sent to the device
(:func:`device_levels`, a :class:`ScoringLevels`, held by the caller in
:attr:`jxmc.models.base.Prepared.state`).

The beam search (:func:`jxmc.tree.beam.beam_search`; PECOS, Yu et al. JMLR 2022,
Section 4.2: beam size ``b``, node scores through a transform, e.g. l3-hinge,
combined by product along the path) runs over batches of queries of similar
length (:func:`beam_batches`), each batch one compiled program per padded shape.
The sharded scorer (:mod:`jxmc.models.tree_linear.mesh`) lays the same levels out
over a device mesh and uses the same batches; its results are these, bit for bit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.ops import sparse_weights as sw
from jxmc.ops.sparse import csr_to_ell
from jxmc.tree.beam import beam_search
from jxmc.tree.label_tree import LabelTree, has_copies
from jxmc.types import TopK

LEVEL_KEYS = ("indptr", "features", "slot_ptr", "children", "values")  # a stored level's arrays


class ScoringLevels(NamedTuple):
    """The first ``depth`` levels of a model laid out for scoring.

    Attributes:
      shapes: per level the static ``(packed steps, packed width, dense steps)`` of
        :func:`jxmc.ops.sparse_weights.scoring_layout` (0 where a part is absent).
      arrays: per level the device arrays: ``(packed, dense)`` on one device
        (:func:`device_levels`), ``(packed, dense, ranges)`` on a mesh
        (:func:`jxmc.models.tree_linear.mesh.sharded_levels`); a part may be None.
    """

    shapes: tuple[tuple[int, int, int], ...]
    arrays: list[Any]

    def upto(self, depth: int) -> ScoringLevels:
        """The first ``depth`` levels (a level's layout does not depend on the others)."""
        return ScoringLevels(self.shapes[:depth], self.arrays[:depth])


def tree_of(params) -> LabelTree:
    """The :class:`LabelTree` of a tree-linear model's params."""
    return LabelTree(np.asarray(params["perm"]), tuple(int(b) for b in params["branching"]))


def host_layout(params, level: int, n_children: int):
    """Level ``level``'s ``(packed, dense, shapes)`` on the host
    (:func:`jxmc.ops.sparse_weights.scoring_layout` of the stored arrays)."""
    lv = params["levels"][f"level_{level}"]
    return sw.scoring_layout({k: lv[k] for k in LEVEL_KEYS}, n_children)


def device_levels(params, depth: int) -> ScoringLevels:
    """The first ``depth`` levels laid out for scoring, on the default device."""
    branching = tree_of(params).branching[:depth]
    layouts = [host_layout(params, i, B) for i, B in enumerate(branching, start=1)]
    return ScoringLevels(tuple(sh for _, _, sh in layouts),
                         [jax.tree.map(jnp.asarray, (packed, dense)) for packed, dense, _ in layouts])


def level_scores(packed, dense, shape, q_idx, q_val, parents, n_children: int):
    """``f32[n, b, B]`` the children's ranker scores of ``parents: i32[n, b]`` (``-1``: 0).

    Args:
      packed, dense: one level's scoring layout (:func:`sw.scoring_layout`; either None).
      shape: its ``(packed steps, packed width, dense steps)``.
      q_idx, q_val: ``i32[n, z]``, ``f32[n, z]`` ELL queries with the bias feature.
      n_children: ``B``, the level's branching factor.
    """
    p_steps, p_width, d_steps = shape
    out = jnp.zeros(parents.shape + (n_children,), jnp.float32)
    if packed is not None:
        out = out + sw.score_children(packed, q_idx, q_val, parents, n_children=n_children,
                                      steps=p_steps, width=p_width)
    if dense is not None:
        out = out + sw.score_dense_rows(dense, q_idx, q_val, parents, steps=d_steps)
    return out


@functools.partial(jax.jit, static_argnames=("branching", "shapes", "beam", "k", "leaf_ids",
                                             "transform", "merge"))
def beam_batch(levels, perm, q_idx, q_val, *, branching, shapes, beam, k, leaf_ids,
               transform="l3-hinge", merge=False) -> TopK:
    """Beam search of one batch of queries on one device.

    Args:
      levels: :attr:`ScoringLevels.arrays`; shapes: :attr:`ScoringLevels.shapes`.
      perm: ``i32[K_D]`` label at each leaf position (``leaf_ids``), else unused.
      q_idx, q_val: ``i32[n, z]``, ``f32[n, z]`` ELL queries with the bias feature.
      branching: ``(B_1, ..., B_depth)``; beam: the beam size ``b``.
      leaf_ids: labels (True) or level-``depth`` node ids (False) out.
      merge: sum the scores of a label's copies (label disentanglement).

    Returns:
      :class:`TopK` ``ids: i32[n, k]``, ``scores: f32[n, k]`` (device arrays).
    """
    def score(level, parents):
        packed, dense = levels[level - 1]
        return level_scores(packed, dense, shapes[level - 1], q_idx, q_val, parents,
                            branching[level - 1])

    ids_perm = perm if leaf_ids else jnp.arange(int(np.prod(branching)), dtype=jnp.int32)
    return beam_search(score, ids_perm, branching, q_idx.shape[0], beam=beam, k=k,
                       transform=transform, merge_copies=merge)


def beam(params, levels: ScoringLevels, Xb: sp.csr_matrix, config, *, k: int | None = None,
         upto: int | None = None) -> TopK:
    """Beam search over the first ``upto`` levels (all by default) for the rows of ``Xb``.

    Args:
      params: the model; levels: its :func:`device_levels` (at least ``upto`` of them).
      Xb: ``csr f32[n, d + 1]`` queries with the bias column.
      config: reads ``beam_size``, ``transform``, ``predict_batch_size``.
      k: ids kept per row (default the beam size).
      upto: with ``upto < D`` the ids are level-``upto`` node ids (MAN,
        disentanglement), otherwise labels.

    Returns:
      numpy :class:`TopK` ``i32[n, k]``, ``f32[n, k]``.
    """
    tree = tree_of(params)
    depth = tree.depth if upto is None else upto
    branching = tree.branching[:depth]
    levels = levels.upto(depth)
    perm = jnp.asarray(tree.perm if upto is None else np.zeros(1, np.int32))
    k = config.beam_size if k is None else k
    merge = upto is None and has_copies(tree)

    def run(qi, qv):
        out = beam_batch(levels.arrays, perm, qi, qv, branching=branching, shapes=levels.shapes,
                         beam=config.beam_size, k=k, leaf_ids=upto is None,
                         transform=config.transform, merge=merge)
        return np.asarray(out.ids), np.asarray(out.scores)

    return beam_batches(Xb, config, levels.shapes, branching, k, run)


def beam_batches(Xb: sp.csr_matrix, config, shapes, branching, k: int,
                 run: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
                 n_data: int = 1) -> TopK:
    """Runs the beam search ``run(q_idx, q_val) -> (ids, scores)`` (numpy) over the
    rows of ``Xb`` in batches of similar length.

    The queries are taken in order of non-zeros; a batch is ``n_data`` times a
    power of two (at most ``predict_batch_size``, within a memory bound set by the
    widest level, and no more than the queries left need), its queries padded to
    the same power-of-two width.  Returns ``TopK`` of ``i32[n, k]``, ``f32[n, k]``.
    """
    n = Xb.shape[0]
    nnz = np.diff(Xb.indptr)
    order = np.argsort(nnz, kind="stable")
    ids = np.full((n, k), -1, np.int32)
    scores = np.full((n, k), -np.inf, np.float32)
    bmax = max(max(w, B if h else 0) for (_, w, h), B in zip(shapes, branching, strict=True))
    start = 0
    while start < n:
        z = 1 << max(3, math.ceil(math.log2(max(int(nnz[order[start]]), 1))))
        cap = max(8, min(config.predict_batch_size, (1 << 23) // (config.beam_size * z * bmax)))
        # a power of two per data shard, no larger than the queries left need
        # (one query: a batch of 1)
        per_shard = -(-(n - start) // n_data)
        cap = min(1 << int(math.log2(cap)), 1 << max(0, per_shard - 1).bit_length()) * n_data
        idx = order[start:start + cap]
        idx = idx[nnz[idx] <= z] if nnz[idx].max() > z else idx
        zz = 1 << max(3, math.ceil(math.log2(max(int(nnz[idx].max()), 1))))
        x = csr_to_ell(Xb[idx], zz)
        pad = cap - len(idx)
        out_ids, out_scores = run(np.pad(x.indices, ((0, pad), (0, 0))),
                                  np.pad(x.values, ((0, pad), (0, 0))))
        ids[idx] = out_ids[: len(idx)]
        scores[idx] = out_scores[: len(idx)]
        start += len(idx)
    return TopK(ids, scores)
