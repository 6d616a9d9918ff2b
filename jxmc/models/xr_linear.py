"""``--method xr-linear``: PECOS's recursive linear model (XR-Linear) in JAX.

Yu, Zhong, Zhang, Chang & Dhillon, "PECOS: Prediction for Enormous and
Correlated Output Spaces", JMLR 2022, Section 4 (XR-Linear).  Three steps:

1. PIFA label embeddings ``Z = normalise(Y^T X)`` (:mod:`jxmc.embed`);
2. a balanced label tree from hierarchical spherical 2-means on ``Z``
   (:mod:`jxmc.tree.kmeans`), leaves of at most ``max_leaf_size`` labels,
   internal levels of ``nr_splits`` children (PECOS: 16, 100);
3. per level, one-vs-rest squared-hinge SVMs (``C``, bias feature ``bias``)
   for every node, trained on the (instance, parent) pairs chosen by the
   matching matrix ``M`` (:mod:`jxmc.tree.shortlist`): by default TFN,
   ``M = Y C`` -- the parents of the instance's positive nodes, i.e. PECOS's
   default ``neg_mining_chain="tfn"``; ``negatives="tfn+man"`` adds the parents
   kept by the previous levels' beam on the training set (MAN).  Solved for all
   nodes of a level at once by truncated Newton (:mod:`jxmc.ops.svm`), in
   chunks of parents, then thresholded at ``threshold`` and stored as sparse
   slots (:mod:`jxmc.ops.sparse_weights`).

Prediction is beam search (:mod:`jxmc.tree.beam`) with PECOS's l3-hinge
transform and product combiner.  Training saves a checkpoint after each level
and resumes from the last one.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.data.batches import csr_to_ell
from jxmc.embed import pifa
from jxmc.errors import ConfigError
from jxmc.models.base import Method
from jxmc.ops import sparse_weights as sw
from jxmc.ops.svm import solve_squared_hinge
from jxmc.tree.beam import beam_search
from jxmc.tree.kmeans import build_tree
from jxmc.tree.label_tree import LabelTree
from jxmc.tree.shortlist import pair_targets, training_pairs
from jxmc.types import TopK


@dataclass(frozen=True)
class Config:
    nr_splits: int = 16  # children per internal tree level (a power of two; PECOS 16)
    max_leaf_size: int = 100  # labels per leaf cluster at most (PECOS 100)
    kmeans_iters: int = 10  # 2-means iterations per bisection
    C: float = 1.0  # squared-hinge loss weight (liblinear's C; PECOS Cp = Cn = 1)
    bias: float = 1.0  # value of the appended bias feature (PECOS 1.0)
    threshold: float = 0.1  # weights with |w| below this are dropped (PECOS 0.1)
    newton_iters: int = 3  # truncated-Newton outer steps per level
    cg_iters: int = 5  # conjugate-gradient steps per Newton step
    negatives: str = "tfn"  # matching matrix M: "tfn" (PECOS default) or "tfn+man"
    beam_size: int = 10  # nodes kept per level at prediction (PECOS 10)
    chunk_weights: int = 1 << 23  # floats of ranker weights solved at once (memory bound)
    chunk_entries: int = 1 << 22  # feature entries solved at once
    predict_batch_size: int = 256  # queries per prediction step (at most)


SLOT_BLOCK = 16  # slot padding granule of the solver
LEVEL_KEYS = ("indptr", "features", "slot_ptr", "children", "values")


def _tree_of(params) -> LabelTree:
    return LabelTree(np.asarray(params["perm"]), tuple(int(b) for b in params["branching"]))


def _pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def _train_level(Xb, Y, tree: LabelTree, level: int, config: Config, beam_parents=None):
    """Trains the rankers of ``level``; returns its compressed slots
    (:func:`jxmc.ops.sparse_weights.assemble_level`)."""
    B = tree.branching[level - 1]
    n_parents = int(np.prod(tree.branching[: level - 1]))
    inst, parent = training_pairs(Y, tree, level, beam_parents=beam_parents)
    y, mask = pair_targets(Y, tree, level, inst, parent)
    A = sw.parent_supports(Xb, inst, parent, n_parents)
    slot, val, pair = sw.pair_entries(Xb, A, inst, parent)
    s_par = np.diff(A.indptr)
    R = SLOT_BLOCK  # each parent's slots are padded to a multiple of R (see jxmc.ops.svm)
    s_pad = -(-s_par // R) * R
    p_par = np.bincount(parent, minlength=n_parents)
    e_par = np.bincount(parent[pair], minlength=n_parents)
    sizes = np.stack([s_pad, e_par], axis=1)
    limits = np.array([max(config.chunk_weights // B, R), config.chunk_entries])
    chunks = sw.plan_chunks(sizes, limits)
    s_off, p_off = np.concatenate([[0], np.cumsum(s_par)]), np.concatenate([[0], np.cumsum(p_par)])
    e_off, q_off = np.concatenate([[0], np.cumsum(e_par)]), np.concatenate([[0], np.cumsum(s_pad)])
    block = 1 << 15
    # Chunks within the limits share one padded shape (one compilation); a parent
    # over them gets power-of-two shapes and is solved in groups of children, so
    # that neither padding nor memory is set by the largest parent.
    dims = np.array([[q_off[e] - q_off[a], p_off[e] - p_off[a], e_off[e] - e_off[a], e - a]
                     for a, e in chunks])
    normal = (dims[:, 0] <= limits[0]) & (dims[:, 2] <= limits[1])
    if normal.any():
        mx = dims[normal].max(axis=0)
        normal_caps = (int(mx[0]) + R, int(mx[1]) + 1, max(block, -(-int(mx[2]) // block) * block),
                       int(mx[3]))
    # padded position of every slot, relative to its chunk's first padded slot
    slot_parent = np.repeat(np.arange(n_parents, dtype=np.int32), s_par)
    slot_pos = (np.arange(len(slot_parent)) - s_off[slot_parent] + q_off[slot_parent])
    parts = []
    for (a, e), (nq, npr, ne, _), is_normal in zip(chunks, dims, normal, strict=True):
        if is_normal:
            s_cap, p_cap, e_cap, k_cap = normal_caps
        else:
            s_cap, p_cap = _pow2(nq + R), _pow2(npr + 1)
            e_cap, k_cap = max(block, _pow2(ne)), 1
        es, ss = slice(e_off[a], e_off[e]), slice(s_off[a], s_off[e])
        c_slot = np.full(e_cap, s_cap - 1, np.int32)
        c_val = np.zeros(e_cap, np.float32)
        c_pair = np.full(e_cap, p_cap - 1, np.int32)
        c_slot[:ne] = slot_pos[slot[es]] - q_off[a]
        c_val[:ne] = val[es]
        c_pair[:ne] = pair[es] - p_off[a]
        sp_ = np.full(s_cap, k_cap - 1, np.int32)
        sp_[:nq] = np.repeat(np.arange(e - a, dtype=np.int32), s_pad[a:e])
        pp_ = np.full(p_cap, k_cap - 1, np.int32)
        pp_[:npr] = parent[p_off[a]:p_off[e]] - a
        width = B if is_normal else max(1, min(B, config.chunk_weights // s_cap))
        cols = []
        for c0 in range(0, B, width):  # groups of children (one group for normal chunks)
            c_y = np.zeros((p_cap, width), np.float32)
            c_mask = np.zeros((p_cap, width), np.float32)  # 0: padding pairs and children
            c1 = min(B, c0 + width)
            c_y[:npr, :c1 - c0] = y[p_off[a]:p_off[e], c0:c1]
            c_mask[:npr, :c1 - c0] = mask[p_off[a]:p_off[e], c0:c1]
            W = solve_squared_hinge(c_slot, c_val, c_pair, c_y, c_mask, sp_, pp_, C=config.C,
                                    n_parents=k_cap, newton_iters=config.newton_iters,
                                    cg_iters=config.cg_iters, block=block, slot_block=R)
            cols.append(np.asarray(W)[slot_pos[ss] - q_off[a], :c1 - c0])
            del W
        keep, counts, children, values = sw.compress_rows(np.hstack(cols), config.threshold)
        parts.append((slot_parent[ss][keep], A.indices[ss][keep], counts, children, values))
        del cols
    return sw.assemble_level(parts, n_parents, B)


def fit(X, Y, config: Config = Config(), *, seed: int = 0, ckpt=None, progress: bool = True):
    """Trains XR-Linear; returns the params pytree (numpy arrays).

    Raises:
      ConfigError: an unknown ``negatives`` or a tree option PECOS's scheme cannot take.
    """
    if config.negatives not in ("tfn", "tfn+man"):
        raise ConfigError(f"negatives must be 'tfn' or 'tfn+man', got {config.negatives!r}")
    X = sp.csr_matrix(X, dtype=np.float32)
    Y = sp.csr_matrix(Y, dtype=np.float32)
    if Y.shape[1] < 2:
        raise ConfigError("xr-linear needs at least 2 labels")
    restored = ckpt.restore() if ckpt is not None else None
    if restored is not None:
        params = restored[1]
    else:
        tree = build_tree(pifa(Y, X), max_leaf_size=config.max_leaf_size,
                          nr_splits=config.nr_splits, iters=config.kmeans_iters, seed=seed)
        params = {"perm": tree.perm, "branching": np.asarray(tree.branching, np.int32),
                  "n_features": np.asarray(X.shape[1], np.int32), "levels": {}}
    tree = _tree_of(params)
    Xb = sw.add_bias(X, config.bias)
    for level in range(1, tree.depth + 1):
        name = f"level_{level}"
        if name in params["levels"]:
            continue
        beam_parents = None
        if "man" in config.negatives and level > 1:
            beam_parents = _beam(params, Xb, config, upto=level - 1).ids
        t0 = time.perf_counter()
        params["levels"][name] = _train_level(Xb, Y, tree, level, config, beam_parents)
        if progress:
            lv = params["levels"][name]
            print(f"xr-linear: level {level}/{tree.depth} trained, {len(lv['features'])} slots, "
                  f"{len(lv['values'])} weights, {time.perf_counter() - t0:.1f} s", flush=True)
        if ckpt is not None:
            ckpt.save(level, params)
    return params


@functools.partial(jax.jit, static_argnames=("branching", "shapes", "beam", "k", "leaf_ids"))
def _beam_batch(levels, perm, q_idx, q_val, *, branching, shapes, beam, k, leaf_ids):
    def score(level, parents):
        light, heavy = levels[level - 1]
        l_steps, l_width, h_steps = shapes[level - 1]
        out = jnp.zeros(parents.shape + (branching[level - 1],), jnp.float32)
        if light is not None:
            out = out + sw.score_children(light, q_idx, q_val, parents,
                                          n_children=branching[level - 1], steps=l_steps,
                                          width=l_width)
        if heavy is not None:
            out = out + sw.score_dense_rows(heavy, q_idx, q_val, parents, steps=h_steps)
        return out

    ids_perm = perm if leaf_ids else jnp.arange(int(np.prod(branching)), dtype=jnp.int32)
    return beam_search(score, ids_perm, branching, q_idx.shape[0], beam=beam, k=k)


def _beam(params, Xb: sp.csr_matrix, config: Config, *, k: int | None = None,
          upto: int | None = None) -> TopK:
    """Beam search over the first ``upto`` levels (all by default) for rows of ``Xb``.

    With ``upto < D`` the ids are level-``upto`` node ids (for MAN), otherwise labels.
    """
    tree = _tree_of(params)
    D = tree.depth if upto is None else upto
    branching = tree.branching[:D]
    levels = [params["levels"][f"level_{i}"] for i in range(1, D + 1)]
    layouts = [sw.scoring_layout({k_: lv[k_] for k_ in LEVEL_KEYS}, B)
               for lv, B in zip(levels, branching, strict=True)]
    shapes = tuple(sh for _, _, sh in layouts)
    dev = [jax.tree.map(jnp.asarray, (light, heavy)) for light, heavy, _ in layouts]
    perm = jnp.asarray(tree.perm if upto is None else np.zeros(1, np.int32))
    k = config.beam_size if k is None else k
    n = Xb.shape[0]
    nnz = np.diff(Xb.indptr)
    order = np.argsort(nnz, kind="stable")
    ids = np.full((n, k), -1, np.int32)
    scores = np.full((n, k), -np.inf, np.float32)
    bmax = max(max(w, B if h else 0)
               for (_, w, h), B in zip(shapes, branching, strict=True))
    start = 0
    while start < n:
        z = 1 << max(3, math.ceil(math.log2(max(int(nnz[order[start]]), 1))))
        cap = max(8, min(config.predict_batch_size, (1 << 23) // (config.beam_size * z * bmax)))
        cap = 1 << int(math.log2(cap))
        idx = order[start:start + cap]
        idx = idx[nnz[idx] <= z] if nnz[idx].max() > z else idx
        zz = 1 << max(3, math.ceil(math.log2(max(int(nnz[idx].max()), 1))))
        x = csr_to_ell(Xb[idx], zz)
        pad = cap - len(idx)
        qi = np.pad(x.indices, ((0, pad), (0, 0)))
        qv = np.pad(x.values, ((0, pad), (0, 0)))
        out = _beam_batch(dev, perm, qi, qv, branching=branching, shapes=shapes,
                          beam=config.beam_size, k=k, leaf_ids=upto is None)
        ids[idx] = np.asarray(out.ids)[: len(idx)]
        scores[idx] = np.asarray(out.scores)[: len(idx)]
        start += len(idx)
    return TopK(ids, scores)


def predict(params, X, config: Config = Config(), *, k: int = 10) -> TopK:
    """Top-``k`` labels of each row of ``X`` (``csr f32[n, d]``) by beam search.

    Raises:
      ConfigError: ``X`` has a different feature count than the training data.
    """
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.shape[1] != int(params["n_features"]):
        raise ConfigError(f"X has {X.shape[1]} features, the model {int(params['n_features'])}")
    return _beam(params, sw.add_bias(X, config.bias), config, k=k)


METHOD = Method(
    name="xr-linear", Config=Config, fit=fit, predict=predict,
    summary="PECOS's XR-Linear: PIFA + balanced 2-means label tree + sparse squared-hinge "
            "rankers per level, beam search (JAX)")
