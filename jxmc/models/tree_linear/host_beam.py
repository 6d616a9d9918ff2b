"""The tree-linear models' beam search on the host (numpy), for a few queries at a time.

The same search as :func:`jxmc.models.tree_linear.scoring.beam` (PECOS, Yu et al.
JMLR 2022, Section 4.2: beam size ``b``, node scores through the l3-hinge or
l2-hinge transform, combined by product along the path;
:func:`jxmc.tree.beam.beam_search`), computed with numpy on the stored levels
(:mod:`jxmc.ops.sparse_weights`) instead of a compiled XLA program.

Why a second path.  A compiled beam costs a compilation per padded shape (seconds
on a CPU, before the first answer of ``jxmc predict`` or ``jxmc serve``) and a
fixed dispatch cost per call; a query of ``z`` non-zeros against ``b`` beam nodes
needs only ``b * z`` slot lookups and the slots' few weights per level.  So a call
with at most ``host_queries`` queries (:class:`~jxmc.models.tree_linear.xr_linear.Config`)
is answered here, with no compilation, and larger batches go to the device
(:mod:`~jxmc.models.tree_linear.scoring`), where batching pays.

Each level's slots are looked up by one ``searchsorted`` of the keys
``parent * (d + 1) + feature`` against the level's sorted slot keys
(:func:`host_levels`; slots are sorted by parent, then feature); the matched
slots' (child, weight) pairs are summed per (query, parent, child) in float32.
The scores equal the device path's up to float32 summation order, so the top-k
lists are the same but for near ties (tests/test_host_beam.py compares them).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from jxmc.tree.beam import TRANSFORMS
from jxmc.tree.label_tree import LabelTree, has_copies
from jxmc.types import TopK


class HostLevel(NamedTuple):
    """One stored level laid out for host scoring.

    Attributes:
      key: ``i64[S]`` each slot's ``parent * width + feature``, ascending.
      slot_ptr: ``i64[S + 1]`` each slot's range of ``children`` / ``values``.
      children: ``i32[N]`` child index within the parent (``0 .. B - 1``).
      values: ``f32[N]`` weights.
      width: ``d + 1``, features per parent key (the bias included).
    """

    key: np.ndarray
    slot_ptr: np.ndarray
    children: np.ndarray
    values: np.ndarray
    width: int


class HostModel(NamedTuple):
    """A tree-linear model laid out for :func:`beam`: its ``tree``
    (:class:`~jxmc.tree.label_tree.LabelTree`), every level as a :class:`HostLevel`,
    and whether a label sits at several leaves (``copies``: label disentanglement)."""

    tree: LabelTree
    levels: list[HostLevel]
    copies: bool


def host_model(params) -> HostModel:
    """``params`` (a tree-linear model, :mod:`jxmc.models.tree_linear.scoring`) as a
    :class:`HostModel`: one ``i64`` key per stored slot (0.1 s for debian-deps' 4.7M)."""
    tree = LabelTree(np.asarray(params["perm"]), tuple(int(b) for b in params["branching"]))
    return HostModel(tree, host_levels(params, tree.depth), has_copies(tree))


def host_levels(params, depth: int) -> list[HostLevel]:
    """The first ``depth`` stored levels of ``params`` as :class:`HostLevel` (numpy)."""
    width = int(params["n_features"]) + 1
    out = []
    for level in range(1, depth + 1):
        lv = params["levels"][f"level_{level}"]
        indptr = np.asarray(lv["indptr"], np.int64)
        parent = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        key = parent * width + np.asarray(lv["features"], np.int64)
        out.append(HostLevel(key, np.asarray(lv["slot_ptr"], np.int64),
                             np.asarray(lv["children"]).astype(np.int32),
                             np.asarray(lv["values"], np.float32), width))
    return out


def _ranges(start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The concatenated index ranges ``start[i] .. start[i] + count[i]``."""
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(start - np.concatenate([[0], np.cumsum(count)[:-1]]), count)
    return offsets + np.arange(total)


def with_bias(X: sp.csr_matrix, bias: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR arrays ``(indptr, indices, data)`` of ``X`` (``csr f32[n, d]``) with the bias
    feature ``d`` of value ``bias`` appended to every row (as
    :func:`jxmc.ops.sparse.add_bias`, without building a second scipy matrix)."""
    n, d = X.shape
    indptr = X.indptr.astype(np.int64) + np.arange(n + 1)
    last = indptr[1:] - 1
    rest = np.ones(int(indptr[-1]), bool)
    rest[last] = False
    indices = np.empty(int(indptr[-1]), np.int64)
    data = np.empty(int(indptr[-1]), np.float32)
    indices[rest], data[rest] = X.indices, X.data
    indices[last], data[last] = d, bias
    return indptr, indices, data


def children_scores(lv: HostLevel, rows, parents: np.ndarray, B: int) -> np.ndarray:
    """``f32[n, p, B]``: the linear scores ``w_c . x`` of the children of
    ``parents: i32[n, p]`` (``-1``: scores 0) for the queries ``rows`` (:func:`with_bias`'s
    CSR arrays of ``n`` rows of ``d + 1`` features)."""
    indptr, indices, data = rows
    n, p = parents.shape
    nnz = np.diff(indptr)
    # one (query feature, parent) entry per non-zero of each query and each of its parents
    pair = np.repeat(np.arange(n * p), np.repeat(nnz, p))  # pair = row * p + j
    pos = _ranges(np.repeat(indptr[:-1], p), np.repeat(nnz, p))
    par = parents.reshape(-1)[pair].astype(np.int64)
    live = par >= 0
    pair, pos, par = pair[live], pos[live], par[live]
    want = par * lv.width + indices[pos]
    order = np.argsort(want)  # sorted needles: numpy's searchsorted reuses the last position
    at = np.empty_like(order)
    at[order] = np.minimum(np.searchsorted(lv.key, want[order]), len(lv.key) - 1)
    hit = lv.key[at] == want
    slot, coef, pair = at[hit], data[pos[hit]], pair[hit]
    start, count = lv.slot_ptr[slot], lv.slot_ptr[slot + 1] - lv.slot_ptr[slot]
    entry = _ranges(start, count)
    contrib = lv.values[entry] * np.repeat(coef, count)
    seg = np.repeat(pair, count) * B + lv.children[entry]
    out = np.zeros(n * p * B, np.float32)
    np.add.at(out, seg, contrib)  # float32 sums, one at a time (np.bincount sums in float64)
    return out.reshape(n, p, B)


def _top(cand: np.ndarray, logp: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``width`` best candidates per row, best first, lower column first among ties
    (``lax.top_k``'s order); ``-1`` where the path score is ``-inf``."""
    j = np.argsort(-logp, axis=1, kind="stable")[:, :width]
    lp = np.take_along_axis(logp, j, axis=1)
    return np.where(np.isfinite(lp), np.take_along_axis(cand, j, axis=1), -1), lp


def _merge_copies(labels: np.ndarray, s: np.ndarray, k: int) -> TopK:
    """Each row's ``k`` best distinct labels, a label's best score over its copies
    (:func:`jxmc.tree.merge.merge_duplicates` with ``reduce="max"``: ties by lower id)."""
    n = labels.shape[0]
    ids = np.full((n, k), -1, np.int32)
    scores = np.full((n, k), -np.inf, np.float32)
    for r in range(n):
        ok = (labels[r] >= 0) & np.isfinite(s[r])
        lab, sc = labels[r][ok], s[r][ok]
        order = np.lexsort((-sc, lab))  # by label, best first within a label
        lab, sc = lab[order], sc[order]
        first = np.concatenate([[True], lab[1:] != lab[:-1]]) if len(lab) else np.zeros(0, bool)
        lab, sc = lab[first], sc[first]
        best = np.lexsort((lab, -sc))[:k]
        ids[r, : len(best)] = lab[best]
        scores[r, : len(best)] = np.exp(sc[best])
    return TopK(ids, scores)


def beam(model: HostModel, X: sp.csr_matrix, *, bias: float, beam_size: int, k: int,
         transform: str = "l3-hinge") -> TopK:
    """Top-``k`` labels of the rows of ``X`` (``csr f32[n, d]``; the bias feature of value
    ``bias`` is appended, as the rankers were trained) by beam search of width ``beam_size`` down ``model`` (:func:`host_model`),
    node scores through ``transform``
    (a name in :data:`jxmc.tree.beam.TRANSFORMS`, computed with numpy).

    Returns numpy :class:`TopK` ``ids: i32[n, k]`` (``-1`` padded), ``scores:
    f32[n, k]`` (``-inf`` there), as :func:`jxmc.models.tree_linear.scoring.beam`.
    """
    log_t = functools.partial(TRANSFORMS[transform], xp=np)
    tree, levels = model.tree, model.levels
    n = X.shape[0]
    rows = with_bias(X, bias)
    perm = np.asarray(tree.perm)
    D = tree.depth
    parents = np.zeros((n, 1), np.int32)
    logp = np.zeros((n, 1), np.float32)
    for level, (lv, B) in enumerate(zip(levels, tree.branching, strict=True), start=1):
        v = children_scores(lv, rows, parents, B).reshape(n, -1)
        cand = np.where(parents[:, :, None] >= 0,
                        parents[:, :, None] * B + np.arange(B, dtype=np.int32), -1).reshape(n, -1)
        if level == D:
            cand = np.where((cand >= 0) & (perm[np.maximum(cand, 0)] >= 0), cand, -1)
        v = np.where(cand >= 0, v, -np.inf).astype(np.float32)
        with np.errstate(invalid="ignore", over="ignore"):  # -inf padding; PECOS pads with -1e30
            s = np.where(cand >= 0, np.repeat(logp, B, axis=1) + log_t(v), -np.inf)
        s = s.astype(np.float32)
        if level == D and model.copies:
            return _merge_copies(np.where(cand >= 0, perm[np.maximum(cand, 0)], -1), s, k)
        parents, logp = _top(cand, s, min(k if level == D else beam_size, s.shape[1]))
    ids = np.where(parents >= 0, perm[np.maximum(parents, 0)], -1).astype(np.int32)
    scores = np.where(ids >= 0, np.exp(logp), -np.inf).astype(np.float32)
    pad = k - ids.shape[1]
    if pad > 0:
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return TopK(ids, scores)
