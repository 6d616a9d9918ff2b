"""``--method xr-linear``: PECOS's recursive linear model (XR-Linear) in JAX.

Yu, Zhong, Zhang, Chang & Dhillon, "PECOS: Prediction for Enormous and
Correlated Output Spaces", JMLR 2022, Section 4 (XR-Linear).  Three steps:

1. PIFA label embeddings ``Z = normalise(Y^T X)`` (:mod:`jxmc.embed`);
2. a balanced label tree from hierarchical spherical 2-means on ``Z``
   (:func:`jxmc.tree.build.build`, ``tree_shape="balanced"``), leaves of at most
   ``max_leaf_size`` labels, internal levels of ``nr_splits`` children (PECOS:
   16, 100); ``tree_shape="wide"`` gives Bonsai's shallow trees instead;
3. per level, one-vs-rest squared-hinge SVMs (loss weight ``cost``, liblinear's
   ``C``; bias feature ``bias``)
   for every node, trained on the (instance, parent) pairs chosen by the
   matching matrix ``M`` (:mod:`jxmc.tree.shortlist`): by default TFN,
   ``M = Y C`` -- the parents of the instance's positive nodes, i.e. PECOS's
   default ``neg_mining_chain="tfn"``; ``negatives="tfn+man"`` adds the parents
   kept by the previous levels' beam on the training set (MAN).  Solved for all
   nodes of a level at once by truncated Newton (:mod:`jxmc.ops.svm`), in
   chunks of parents (:mod:`jxmc.models.tree_linear.rankers`), then thresholded
   at ``threshold`` and stored as sparse slots (:mod:`jxmc.ops.sparse_weights`).

Prediction is beam search (:mod:`jxmc.models.tree_linear.scoring`, on a mesh
:mod:`jxmc.models.tree_linear.mesh`) with PECOS's l3-hinge transform and product
combiner; :func:`prepare` lays the levels out once (the caller holds the
:class:`~jxmc.models.base.Prepared`), and the beam size, the prediction batch
size and the transform may change at prediction (PECOS's prediction
parameters).  Training saves a checkpoint after each level and resumes from the
last one.  ``label_text=true`` (off by default) adds the labels' own texts
(:mod:`jxmc.models.tree_linear.label_text`): every label with a text joins the label
space, the tree clusters ``label_text_tree``, and the scores are text-backed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from jxmc.embed import pifa
from jxmc.errors import ConfigError
from jxmc.models import base
from jxmc.models.tree_linear import host_beam, rankers, scoring
from jxmc.models.tree_linear import label_text as lt
from jxmc.models.tree_linear import mesh as xr_mesh
from jxmc.ops.sparse import add_bias
from jxmc.tree.beam import TRANSFORMS
from jxmc.tree.build import TreeSpec, build, check_spec
from jxmc.tree.disentangle import matcher_scores, reassign
from jxmc.types import TopK


@dataclass(frozen=True)
class Config:
    nr_splits: int = 16  # children per internal tree level (a power of two; PECOS 16; any for "wide")
    max_leaf_size: int = 100  # labels per leaf cluster at most (PECOS 100)
    kmeans_iters: int = 10  # 2-means iterations per bisection
    cost: float = 1.0  # squared-hinge loss weight (liblinear's C; PECOS Cp = Cn = 1)
    bias: float = 1.0  # value of the appended bias feature (PECOS 1.0)
    threshold: float = 0.1  # weights with |w| below this are dropped (PECOS 0.1)
    solver: str = "dual-cd"  # "dual-cd" (PECOS's algorithm) or "newton" (tree_linear.rankers)
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
    host_queries: int = 64  # calls with at most this many queries predict on the host (numpy,
    # no compilation: tree_linear.host_beam); 0: always on the device
    tree_shape: str = "balanced"  # "balanced": bisections grouped by nr_splits (PECOS); "wide": Bonsai's
    max_depth: int = 3  # "wide" trees: levels at most, the label level included (Bonsai 3)
    transform: str = "l3-hinge"  # node score -> probability: "l3-hinge" (PECOS), "l2-hinge" (Parabel)
    clusters_per_label: int = 1  # label disentanglement's lambda (Liu et al. 2021); 1: off
    copy_fraction: float = 1.0  # share of labels given lambda copies (most entangled first)
    label_text: bool = False  # label texts: pifa_lf_concat tree + text-backed scores (label_text.py)
    # the three label_text_* defaults: chosen on a held-out fifth of debian-deps' training
    # split (experiments/label_text.py)
    label_text_weight: float = 0.1  # lam of label_text.rescore: (1-lam_l) tree + lam_l cos(doc, text)
    label_text_decay: float = 0.3  # lam_l = lam / (1 + decay * train count_l); 0: every label alike
    label_text_tree: str = "pifa_or_text"  # tree embedding with label texts (label_text.EMBEDDINGS)

    RENAMED = {"C": "cost"}  # the names older jxmc versions wrote (base.config_from_dict)
    RENAMED_VALUES = {"tree_shape": {"pecos": "balanced"}}


PREDICT_FIELDS = ("beam_size", "predict_batch_size", "transform", "host_queries")


def tree_spec(config: Config) -> TreeSpec:
    """The label tree's shape (:mod:`jxmc.tree.build`) that ``config`` asks for."""
    return TreeSpec(kind=config.tree_shape, nr_splits=config.nr_splits,
                    max_leaf_size=config.max_leaf_size, max_depth=config.max_depth,
                    kmeans_iters=config.kmeans_iters)


def check_config(config: Config) -> None:
    """Raises ConfigError (naming the option) for options XR-Linear cannot train with."""
    if config.negatives not in ("tfn", "tfn+man"):
        raise ConfigError(f"negatives must be 'tfn' or 'tfn+man', got {config.negatives!r}")
    check_spec(tree_spec(config))
    if config.solver not in rankers.SOLVERS:
        raise ConfigError(f"solver must be one of {', '.join(rankers.SOLVERS)}, got {config.solver!r}")
    if config.transform not in TRANSFORMS:
        raise ConfigError(f"transform must be one of {sorted(TRANSFORMS)}, got {config.transform!r}")
    if config.clusters_per_label < 1:
        raise ConfigError(f"clusters_per_label must be >= 1, got {config.clusters_per_label}")
    if config.host_queries < 0:
        raise ConfigError(f"host_queries must be >= 0, got {config.host_queries}")
    if not 0.0 <= config.copy_fraction <= 1.0:
        raise ConfigError(f"copy_fraction must be in [0, 1], got {config.copy_fraction}")
    if not 0.0 <= getattr(config, "label_text_weight", 0.0) <= 1.0:
        raise ConfigError(f"label_text_weight must be in [0, 1], got {config.label_text_weight}")
    if not getattr(config, "label_text_decay", 0.0) >= 0.0:
        raise ConfigError(f"label_text_decay must be >= 0, got {config.label_text_decay}")
    if getattr(config, "label_text_tree", "pifa_lf_concat") not in lt.EMBEDDINGS:
        raise ConfigError(f"label_text_tree must be one of {', '.join(lt.EMBEDDINGS)}, got "
                          f"{config.label_text_tree!r}")


def _ranker_options(config: Config) -> rankers.Options:
    return rankers.Options(**{f: getattr(config, f) for f in rankers.Options._fields})


def _train_beam(params, Xb: sp.csr_matrix, config: Config, upto: int, mesh=None) -> TopK:
    """The training set's beam over the trained levels ``1 .. upto`` (level-``upto`` node
    ids: MAN's parents, the matcher of label disentanglement)."""
    if mesh is None:
        return scoring.beam(params, scoring.device_levels(params, upto), Xb, config, upto=upto)
    return xr_mesh.beam(params, xr_mesh.sharded_levels(params, upto, mesh), Xb, config,
                        mesh=mesh, upto=upto)


def _disentangle(params, Xb, Y, config: Config, progress: bool, mesh=None):
    """Re-assigns the labels to ``clusters_per_label`` leaf clusters by the trained matcher."""
    t0 = time.perf_counter()
    tree = scoring.tree_of(params)
    top = _train_beam(params, Xb, config, tree.depth - 1, mesh=mesh)
    S = matcher_scores(Y, top.ids, top.scores, tree.level_sizes()[-2])
    new = reassign(S, tree, config.clusters_per_label, copy_fraction=config.copy_fraction)
    if progress:
        print(f"xr-linear: labels re-assigned to {config.clusters_per_label} clusters each, "
              f"leaves of {new.branching[-1]} (were {tree.branching[-1]}), "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    return dict(params, perm=new.perm, branching=np.asarray(new.branching, np.int32),
                disentangled=np.asarray(config.clusters_per_label, np.int32))


def fit(X, Y, config: Config = Config(), *, seed: int = 0, ckpt=None, progress: bool = True,
        mesh=None, label_features=None):
    """Trains XR-Linear; returns the params pytree (numpy arrays).

    Args:
      X: ``csr f32[n, d]`` features (rows L2-normalised); Y: ``csr f32[n, L]``.
      config: :class:`Config`; seed: seeds the tree's clustering and the solver.
      ckpt: an optional :class:`jxmc.checkpoint.TrainCheckpoints` (a step per level).

    Returns:
      ``{"perm": i32[K_D], "branching": i32[D], "n_features": i32,
      "levels": {"level_<l>": stored level (:mod:`jxmc.ops.sparse_weights`)}}``.

    With ``clusters_per_label = lambda > 1`` (label disentanglement,
    :mod:`jxmc.tree.disentangle`) levels ``1 .. D-1`` (the matcher) are trained on
    the first tree, then each label is re-assigned to ``lambda`` leaf clusters by
    the matcher's beam on the training set and the last level is trained on that
    assignment (``params["disentangled"]`` records ``lambda``).

    With a ``mesh`` (:func:`jxmc.sharding.make_mesh`) the rankers' chunks are solved
    on the mesh's devices and the training-set beams (MAN, disentanglement) run
    sharded (:mod:`jxmc.models.tree_linear.mesh`); the model is bit-identical to
    the one trained without.

    With ``label_text`` (:mod:`jxmc.models.tree_linear.label_text`) ``label_features``
    ``csr f32[L_ext, d]`` (``L_ext >= L``) gives the labels' text features: the model
    predicts ``L_ext`` labels, the tree clusters ``label_text_tree`` (PIFA or text,
    or ``pifa_lf_concat``) and
    ``params["label_text"]`` keeps ``T`` and the labels' training counts for the
    text-backed scores (:func:`jxmc.models.tree_linear.label_text.stored`).

    Raises:
      ConfigError: an unknown ``negatives``, ``tree_shape`` or ``transform``, or a
        tree option its shape cannot take; fewer than 2 labels; ``label_text`` without
        (or with mis-shaped) ``label_features``.
    """
    check_config(config)
    X = sp.csr_matrix(X, dtype=np.float32)
    Y = sp.csr_matrix(Y, dtype=np.float32)
    if Y.shape[1] < 2:
        raise ConfigError("xr-linear needs at least 2 labels")
    T = lt.check_fit(Y, X, label_features) if getattr(config, "label_text", False) else None
    Y = Y if T is None else lt.pad_labels(Y, T.shape[0])  # text-only labels: no positives
    restored = ckpt.restore() if ckpt is not None else None
    if restored is not None:
        params = restored[1]
    else:
        emb = pifa(Y, X) if T is None else lt.label_embedding(config.label_text_tree, Y, X, T)
        tree = build(emb, tree_spec(config), seed)
        params = {"perm": tree.perm, "branching": np.asarray(tree.branching, np.int32),
                  "n_features": np.asarray(X.shape[1], np.int32), "levels": {}}
        if T is not None:
            params["label_text"] = lt.stored(T, np.diff(sp.csc_matrix(Y).indptr))
    tree = scoring.tree_of(params)
    Xb = add_bias(X, config.bias)
    pool = rankers.DevicePool(None if mesh is None else xr_mesh.solver_devices(mesh))

    def done(level: int, lv: dict, seconds: float) -> None:
        params["levels"][f"level_{level}"] = lv
        if progress:
            print(f"xr-linear: level {level}/{tree.depth} trained, {len(lv['features'])} slots, "
                  f"{len(lv['values'])} weights, {seconds:.1f} s", flush=True)
        if ckpt is not None:  # steps count the trained levels (they may finish out of order)
            ckpt.save(len(params["levels"]), params)

    def train(level: int, beam_parents=None):
        t0 = time.perf_counter()
        lv = rankers.train_level(Xb, Y, tree, level, _ranker_options(config),
                                 beam_parents=beam_parents, pool=pool)
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
                tree = scoring.tree_of(params)
            beam_parents = None
            if "man" in config.negatives and level > 1:
                beam_parents = _train_beam(params, Xb, config, level - 1, mesh=mesh).ids
            done(*train(level, beam_parents))
    finally:
        pool.shutdown()
    return params


class Layouts:
    """The prepared state of a tree-linear model on one device: its host layout
    (:func:`jxmc.models.tree_linear.host_beam.host_model`, built at once: 0.2 s on
    debian-deps) and its device layout (:func:`jxmc.models.tree_linear.scoring.device_levels`),
    built by the first call that needs it (:attr:`device`), so that a model that only
    answers a few queries at a time never lays out or compiles its levels for the device."""

    def __init__(self, params):
        self.params = params
        self.host = host_beam.host_model(params)
        self._device = None
        self._lock = threading.Lock()

    @property
    def device(self) -> scoring.ScoringLevels:
        """Every level's scoring layout on the default device (laid out once, thread-safe)."""
        with self._lock:
            if self._device is None:
                self._device = scoring.device_levels(self.params, self.host.tree.depth)
            return self._device


def prepare(params, config: Config = Config(), mesh=None) -> base.Prepared:
    """The model laid out for prediction.  On one device ``state`` is a :class:`Layouts`
    (host layout now, device layout on first use); with a ``mesh`` it is the levels split
    over it (:func:`jxmc.models.tree_linear.mesh.sharded_levels`).  Neither depends on the
    prediction fields, so one prepared model serves any beam size."""
    if mesh is None:
        return base.Prepared(params, config, None, Layouts(params))
    depth = scoring.tree_of(params).depth
    return base.Prepared(params, config, mesh, xr_mesh.sharded_levels(params, depth, mesh))


def predict_prepared(model: base.Prepared, X, config: Config, *, k: int = 10) -> TopK:
    """Top-``k`` labels of each row of ``X`` (``csr f32[n, d]``) by beam search of width
    ``config.beam_size`` on the prepared ``model`` (single-device or mesh: the same
    result).  On one device a call with at most ``config.host_queries`` rows runs on the
    host (:mod:`jxmc.models.tree_linear.host_beam`: no compilation; the same top-k up to
    float32 summation order).  Returns numpy ``ids: i32[n, k]`` (-1 padded),
    ``scores: f32[n, k]``.

    Raises:
      ConfigError: ``X`` has a different feature count than the training data.
    """
    params = model.params
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.shape[1] != int(params["n_features"]):
        raise ConfigError(f"X has {X.shape[1]} features, the model {int(params['n_features'])}")
    if config.label_text:  # the beam's top-k, then the text-backed scores (label_text.py)
        top = predict_prepared(model, X, replace(config, label_text=False), k=k)
        return lt.rescore(params, X, top, config.label_text_weight, k, config.label_text_decay)
    if model.mesh is None and X.shape[0] <= config.host_queries:
        return host_beam.beam(model.state.host, X, bias=config.bias, beam_size=config.beam_size,
                              k=k, transform=config.transform)
    Xb = add_bias(X, config.bias)
    if model.mesh is not None:
        return xr_mesh.beam(params, model.state, Xb, config, mesh=model.mesh, k=k)
    return scoring.beam(params, model.state.device, Xb, config, k=k)


METHOD = base.method(
    "xr-linear", Config, fit=fit, predict=predict_prepared, prepare=prepare,
    supports_mesh=True, predict_fields=PREDICT_FIELDS,
    summary="PECOS's XR-Linear: PIFA + balanced 2-means label tree + sparse squared-hinge "
            "rankers per level, beam search (JAX)")


predict = METHOD.predict  # params or a prepared model; mesh= lays params out on a mesh first
