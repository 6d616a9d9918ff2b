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
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jxmc.data.batches import csr_to_ell
from jxmc.embed import pifa
from jxmc.errors import ConfigError
from jxmc.models import rankers
from jxmc.models.base import Method
from jxmc.ops import sparse_weights as sw
from jxmc.tree.beam import TRANSFORMS, beam_search
from jxmc.tree.disentangle import matcher_scores, reassign
from jxmc.tree.kmeans import build_tree, build_wide_tree, wide_branching
from jxmc.tree.label_tree import LabelTree, has_copies
from jxmc.types import TopK


@dataclass(frozen=True)
class Config:
    nr_splits: int = 16  # children per internal tree level (a power of two; PECOS 16; any for "wide")
    max_leaf_size: int = 100  # labels per leaf cluster at most (PECOS 100)
    kmeans_iters: int = 10  # 2-means iterations per bisection
    C: float = 1.0  # squared-hinge loss weight (liblinear's C; PECOS Cp = Cn = 1)
    bias: float = 1.0  # value of the appended bias feature (PECOS 1.0)
    threshold: float = 0.1  # weights with |w| below this are dropped (PECOS 0.1)
    solver: str = "dual-cd"  # "dual-cd" (PECOS's algorithm) or "newton" (jxmc.models.rankers)
    eps: float = 0.1  # dual-cd stops at this projected-gradient range (liblinear / PECOS 0.1)
    max_epochs: int = 20  # dual-cd: passes over each level's instances at most
    lanes: int = 16  # dual-cd: parents solved side by side (jxmc.ops.svm_dual)
    piece_width: int = 0  # dual-cd: feature entries gathered per step and lane; 0: from the data
    newton_iters: int = 10  # newton: outer steps per level
    cg_iters: int = 20  # newton: conjugate-gradient steps per outer step
    negatives: str = "tfn"  # matching matrix M: "tfn" (PECOS default) or "tfn+man"
    beam_size: int = 10  # nodes kept per level at prediction (PECOS 10)
    chunk_weights: int = 1 << 25  # floats of ranker weights solved at once (memory bound)
    level_workers: int = 2  # TFN: levels prepared and solved at once (1: one after another)
    predict_batch_size: int = 256  # queries per prediction step (at most)
    tree_shape: str = "pecos"  # "pecos": bisections grouped by nr_splits; "wide": Bonsai's levels
    max_depth: int = 3  # "wide" trees: levels at most, the label level included (Bonsai 3)
    transform: str = "l3-hinge"  # node score -> probability: "l3-hinge" (PECOS), "l2-hinge" (Parabel)
    clusters_per_label: int = 1  # label disentanglement's lambda (Liu et al. 2021); 1: off
    copy_fraction: float = 1.0  # share of labels given lambda copies (most entangled first)


LEVEL_KEYS = ("indptr", "features", "slot_ptr", "children", "values")


def _tree_of(params) -> LabelTree:
    return LabelTree(np.asarray(params["perm"]), tuple(int(b) for b in params["branching"]))


def _ranker_options(config: Config) -> rankers.Options:
    return rankers.Options(**{f: getattr(config, f) for f in rankers.Options._fields})


def _train_level(Xb, Y, tree: LabelTree, level: int, config: Config, beam_parents=None,
                 devices=None, pool=None):
    """Trains the rankers of ``level``; returns its compressed slots
    (:func:`jxmc.models.rankers.train_level`)."""
    return rankers.train_level(Xb, Y, tree, level, _ranker_options(config),
                               beam_parents=beam_parents, devices=devices, pool=pool)


def _solver_devices(mesh):
    """The mesh's devices for the rankers' chunks (None: ``jax.local_devices()``)."""
    if mesh is None:
        return None
    from jxmc.models import xr_linear_mesh

    return xr_linear_mesh.solver_devices(mesh)


def _check_tree_options(config: Config) -> None:
    if config.tree_shape not in ("pecos", "wide"):
        raise ConfigError(f"tree_shape must be 'pecos' or 'wide', got {config.tree_shape!r}")
    if config.transform not in TRANSFORMS:
        raise ConfigError(f"transform must be one of {sorted(TRANSFORMS)}, got {config.transform!r}")
    if config.clusters_per_label < 1:
        raise ConfigError(f"clusters_per_label must be >= 1, got {config.clusters_per_label}")
    if not 0.0 <= config.copy_fraction <= 1.0:
        raise ConfigError(f"copy_fraction must be in [0, 1], got {config.copy_fraction}")
    if config.max_leaf_size < 1:
        raise ConfigError(f"max_leaf_size must be >= 1, got {config.max_leaf_size}")
    n = config.nr_splits
    if config.tree_shape == "wide" and (n < 2 or config.max_depth < 2):
        raise ConfigError(f"a wide tree needs nr_splits >= 2 and max_depth >= 2, got "
                          f"{n} and {config.max_depth}")
    if config.tree_shape == "pecos" and (n < 2 or n & (n - 1)):
        raise ConfigError(f"nr_splits must be a power of two >= 2, got {n}")


def _build_tree(emb, config: Config, seed: int) -> LabelTree:
    """The first label tree over the PIFA embeddings: PECOS's or Bonsai's shape."""
    if config.tree_shape == "wide":
        shape = wide_branching(emb.shape[0], branching=config.nr_splits,
                               max_leaf_size=config.max_leaf_size, max_depth=config.max_depth)
        return build_wide_tree(emb, shape, iters=config.kmeans_iters, seed=seed)
    return build_tree(emb, max_leaf_size=config.max_leaf_size, nr_splits=config.nr_splits,
                      iters=config.kmeans_iters, seed=seed)


def _disentangle(params, Xb, Y, config: Config, progress: bool, mesh=None):
    """Re-assigns the labels to ``clusters_per_label`` leaf clusters by the trained matcher."""
    t0 = time.perf_counter()
    tree = _tree_of(params)
    top = _beam(params, Xb, config, upto=tree.depth - 1, mesh=mesh)
    S = matcher_scores(Y, top.ids, top.scores, tree.level_sizes()[-2])
    new = reassign(S, tree, config.clusters_per_label, copy_fraction=config.copy_fraction)
    if progress:
        print(f"xr-linear: labels re-assigned to {config.clusters_per_label} clusters each, "
              f"leaves of {new.branching[-1]} (were {tree.branching[-1]}), "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    return dict(params, perm=new.perm, branching=np.asarray(new.branching, np.int32),
                disentangled=np.asarray(config.clusters_per_label, np.int32))


def fit(X, Y, config: Config = Config(), *, seed: int = 0, ckpt=None, progress: bool = True,
        mesh=None):
    """Trains XR-Linear; returns the params pytree (numpy arrays).

    With ``clusters_per_label = lambda > 1`` (label disentanglement,
    :mod:`jxmc.tree.disentangle`) levels ``1 .. D-1`` (the matcher) are trained on
    the first tree, then each label is re-assigned to ``lambda`` leaf clusters by
    the matcher's beam on the training set and the last level is trained on that
    assignment (``params["disentangled"]`` records ``lambda``).

    With a ``mesh`` (:func:`jxmc.sharding.make_mesh`) the rankers' chunks are solved
    on the mesh's devices and the training-set beams (MAN, disentanglement) run
    sharded (:mod:`jxmc.models.xr_linear_mesh`); the model is bit-identical to
    the one trained without.

    Raises:
      ConfigError: an unknown ``negatives``, ``tree_shape`` or ``transform``, or a
        tree option its scheme cannot take.
    """
    if config.negatives not in ("tfn", "tfn+man"):
        raise ConfigError(f"negatives must be 'tfn' or 'tfn+man', got {config.negatives!r}")
    _check_tree_options(config)
    X = sp.csr_matrix(X, dtype=np.float32)
    Y = sp.csr_matrix(Y, dtype=np.float32)
    if Y.shape[1] < 2:
        raise ConfigError("xr-linear needs at least 2 labels")
    restored = ckpt.restore() if ckpt is not None else None
    if restored is not None:
        params = restored[1]
    else:
        tree = _build_tree(pifa(Y, X), config, seed)
        params = {"perm": tree.perm, "branching": np.asarray(tree.branching, np.int32),
                  "n_features": np.asarray(X.shape[1], np.int32), "levels": {}}
    tree = _tree_of(params)
    Xb = sw.add_bias(X, config.bias)
    pool = rankers.DevicePool(_solver_devices(mesh))

    def done(level: int, lv: dict, seconds: float) -> None:
        params["levels"][f"level_{level}"] = lv
        if progress:
            print(f"xr-linear: level {level}/{tree.depth} trained, {len(lv['features'])} slots, "
                  f"{len(lv['values'])} weights, {seconds:.1f} s", flush=True)
        if ckpt is not None:  # steps count the trained levels (they may finish out of order)
            ckpt.save(len(params["levels"]), params)

    def train(level: int, beam_parents=None):
        t0 = time.perf_counter()
        lv = _train_level(Xb, Y, tree, level, config, beam_parents, pool=pool)
        return level, lv, time.perf_counter() - t0

    try:
        if config.negatives == "tfn":
            # teacher-forced levels do not depend on each other: train them at once,
            # their chunks sharing the devices, the top first: its parents are the
            # largest, whose instances are visited one after another, so it holds the
            # longest chunks, and the deeper levels' many chunks fill the devices
            # around them (the matcher's levels only, when the last one waits for
            # label disentanglement)
            last = tree.depth - (config.clusters_per_label > 1 and "disentangled" not in params)
            todo = [lv for lv in range(1, last + 1) if f"level_{lv}" not in params["levels"]]
            with ThreadPoolExecutor(max(1, config.level_workers),
                                    thread_name_prefix="jxmc-level") as ex:
                for fut in as_completed([ex.submit(train, lv) for lv in todo]):
                    done(*fut.result())
        for level in range(1, tree.depth + 1):
            if f"level_{level}" in params["levels"]:
                continue
            if (level == tree.depth and config.clusters_per_label > 1
                    and "disentangled" not in params):
                params = _disentangle(params, Xb, Y, config, progress, mesh=mesh)
                tree = _tree_of(params)
            beam_parents = None
            if "man" in config.negatives and level > 1:
                beam_parents = _beam(params, Xb, config, upto=level - 1, mesh=mesh).ids
            done(*train(level, beam_parents))
    finally:
        pool.shutdown()
    return params


def level_scores(light, heavy, shape, q_idx, q_val, parents, n_children: int):
    """``f32[n, b, B]`` the children's ranker scores of ``parents: i32[n, b]`` (``-1``: 0)
    on one level's scoring layout (light slots and heavy dense rows, :func:`sw.scoring_layout`,
    either None); ``shape`` is the layout's ``(light steps, light width, heavy steps)``."""
    l_steps, l_width, h_steps = shape
    out = jnp.zeros(parents.shape + (n_children,), jnp.float32)
    if light is not None:
        out = out + sw.score_children(light, q_idx, q_val, parents, n_children=n_children,
                                      steps=l_steps, width=l_width)
    if heavy is not None:
        out = out + sw.score_dense_rows(heavy, q_idx, q_val, parents, steps=h_steps)
    return out


@functools.partial(jax.jit, static_argnames=("branching", "shapes", "beam", "k", "leaf_ids",
                                             "transform", "merge"))
def _beam_batch(levels, perm, q_idx, q_val, *, branching, shapes, beam, k, leaf_ids,
                transform="l3-hinge", merge=False):
    def score(level, parents):
        light, heavy = levels[level - 1]
        return level_scores(light, heavy, shapes[level - 1], q_idx, q_val, parents,
                            branching[level - 1])

    ids_perm = perm if leaf_ids else jnp.arange(int(np.prod(branching)), dtype=jnp.int32)
    return beam_search(score, ids_perm, branching, q_idx.shape[0], beam=beam, k=k,
                       transform=transform, merge_copies=merge)


_PREPARED: dict = {}  # (id(params), ...) -> (params, value); a few recent models


def prepared(key: tuple, params, make):
    """``make()`` for ``params``, kept for the last few models under ``key`` (which
    starts with ``id(params)``), so that predicting one query at a time does not
    re-lay and re-send the whole model every call."""
    hit = _PREPARED.get(key)
    if hit is not None and hit[0] is params:
        return hit[1]
    value = make()
    while len(_PREPARED) >= 4:
        _PREPARED.pop(next(iter(_PREPARED)))
    _PREPARED[key] = (params, value)
    return value


def _scoring_levels(params, D: int):
    """The first ``D`` levels laid out for scoring (:func:`sw.scoring_layout`) on device,
    kept by :func:`prepared`."""
    def make():
        branching = _tree_of(params).branching[:D]
        levels = [params["levels"][f"level_{i}"] for i in range(1, D + 1)]
        layouts = [sw.scoring_layout({k_: lv[k_] for k_ in LEVEL_KEYS}, B)
                   for lv, B in zip(levels, branching, strict=True)]
        return (tuple(sh for _, _, sh in layouts),
                [jax.tree.map(jnp.asarray, (light, heavy)) for light, heavy, _ in layouts])

    return prepared((id(params), D), params, make)


def _beam(params, Xb: sp.csr_matrix, config: Config, *, k: int | None = None,
          upto: int | None = None, mesh=None) -> TopK:
    """Beam search over the first ``upto`` levels (all by default) for rows of ``Xb``.

    With ``upto < D`` the ids are level-``upto`` node ids (for MAN), otherwise labels.
    With a ``mesh``: :func:`jxmc.models.xr_linear_mesh.beam`.
    """
    if mesh is not None:
        from jxmc.models import xr_linear_mesh

        return xr_linear_mesh.beam(params, Xb, config, mesh=mesh, k=k, upto=upto)
    tree = _tree_of(params)
    D = tree.depth if upto is None else upto
    branching = tree.branching[:D]
    shapes, dev = _scoring_levels(params, D)
    perm = jnp.asarray(tree.perm if upto is None else np.zeros(1, np.int32))
    k = config.beam_size if k is None else k
    merge = upto is None and has_copies(tree)

    def run(qi, qv):
        out = _beam_batch(dev, perm, qi, qv, branching=branching, shapes=shapes,
                          beam=config.beam_size, k=k, leaf_ids=upto is None,
                          transform=config.transform, merge=merge)
        return np.asarray(out.ids), np.asarray(out.scores)

    return beam_batches(Xb, config, shapes, branching, k, run)


def beam_batches(Xb: sp.csr_matrix, config: Config, shapes, branching, k: int, run,
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


def predict(params, X, config: Config = Config(), *, k: int = 10, mesh=None) -> TopK:
    """Top-``k`` labels of each row of ``X`` (``csr f32[n, d]``) by beam search.

    With a ``mesh``, each level's rankers are split on ``model`` and the queries on
    ``data`` (:mod:`jxmc.models.xr_linear_mesh`); the result is the single-device one.

    Raises:
      ConfigError: ``X`` has a different feature count than the training data.
    """
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.shape[1] != int(params["n_features"]):
        raise ConfigError(f"X has {X.shape[1]} features, the model {int(params['n_features'])}")
    return _beam(params, sw.add_bias(X, config.bias), config, k=k, mesh=mesh)


METHOD = Method(
    name="xr-linear", Config=Config, fit=fit, predict=predict,
    summary="PECOS's XR-Linear: PIFA + balanced 2-means label tree + sparse squared-hinge "
            "rankers per level, beam search (JAX)")
