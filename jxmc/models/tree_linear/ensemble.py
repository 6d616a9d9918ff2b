"""Ensembles of XR-Linear label trees, as Parabel and Bonsai average theirs.

Parabel (Prabhu et al., WWW 2018, Section 3.4) and Bonsai (Khandagale et al.,
Machine Learning 2020) train ``n_trees`` trees that differ only in the random
initialisation of their clustering (3 by default) and average the label
probabilities of the trees: each tree's beam search returns the labels of the
leaves it reaches with their path probabilities, a label a tree does not reach
counts 0 there, and the final scores are the sums divided by ``n_trees``
(:func:`jxmc.tree.merge.average_lists`).

Tree ``t`` is :func:`jxmc.models.tree_linear.xr_linear.fit` with ``seed + t``;
its checkpoints live in ``<ckpt>/tree_<t>``, so an interrupted ensemble resumes
at the tree and level it stopped at.  With ``n_trees = 1`` fit and predict are
exactly XR-Linear's (the params are nested one level deeper).  Prediction
prepares every tree once (:func:`prepare_trees`, a
:class:`~jxmc.models.base.Prepared` per tree in ``state``) and takes the same
prediction fields as XR-Linear (beam size, prediction batch size, transform).
With ``label_text`` every tree clusters the labels' ``pifa_lf_concat`` and the tree
average is text-backed once (:mod:`jxmc.models.tree_linear.label_text`).
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from jxmc.checkpoint import TrainCheckpoints
from jxmc.errors import ConfigError
from jxmc.models import base
from jxmc.models.tree_linear import label_text as lt
from jxmc.models.tree_linear import xr_linear as xr
from jxmc.tree.merge import average_lists
from jxmc.types import TopK


def fit_trees(X, Y, config, *, seed: int = 0, ckpt=None, progress: bool = True, name: str = "",
              mesh=None, label_features=None):
    """Trains ``config.n_trees`` XR-Linear trees with seeds ``seed, seed + 1, ...``.

    Args:
      X: ``csr f32[n, d]`` features (rows L2-normalised); Y: ``csr f32[n, L]``.
      config: an :class:`jxmc.models.tree_linear.xr_linear.Config` subclass with ``n_trees``.
      ckpt: optional :class:`jxmc.checkpoint.TrainCheckpoints`; tree ``t`` uses
        the sub-folder ``tree_<t>``.
      mesh: solve every tree's rankers on this mesh's devices (the same model).
      label_features: with ``config.label_text``, ``csr f32[L_ext, d]`` (every tree is
        clustered on ``pifa_lf_concat``; :mod:`jxmc.models.tree_linear.label_text`).

    Returns:
      ``{"trees": {"tree_0": xr-linear params, ...}, "n_features": i32}``, and with
      ``label_text`` the trees' one ``"label_text"`` entry (the tree average is
      text-backed once, at prediction).

    Raises:
      ConfigError: ``n_trees < 1`` or a bad XR-Linear option.
    """
    if config.n_trees < 1:
        raise ConfigError(f"n_trees must be >= 1, got {config.n_trees}")
    trees = {}
    for t in range(config.n_trees):
        sub = None if ckpt is None else TrainCheckpoints(os.path.join(ckpt.directory, f"tree_{t}"))
        if progress and config.n_trees > 1:
            print(f"{name}: tree {t + 1}/{config.n_trees}", flush=True)
        trees[f"tree_{t}"] = xr.fit(X, Y, config, seed=seed + t, ckpt=sub, progress=progress,
                                    mesh=mesh, label_features=label_features)
    out = {"trees": trees, "n_features": np.asarray(sp.csr_matrix(X).shape[1], np.int32)}
    if getattr(config, "label_text", False):  # the same T in every tree: kept once
        out["label_text"] = [trees[t].pop("label_text") for t in trees][0]
    return out


def prepare_trees(params, config, mesh=None) -> base.Prepared:
    """Every tree laid out for prediction (:func:`jxmc.models.tree_linear.xr_linear.prepare`);
    ``state`` is the list of the trees' :class:`~jxmc.models.base.Prepared`."""
    trees = [params["trees"][f"tree_{t}"] for t in range(len(params["trees"]))]
    return base.Prepared(params, config, mesh, [xr.prepare(p, config, mesh) for p in trees])


def predict_trees(model: base.Prepared, X, config, *, k: int = 10, chunk: int = 1024) -> TopK:
    """Top-``k`` labels of the tree average (module docstring) of a prepared ensemble.

    Each tree returns its top ``max(k, beam_size * B_D)`` labels (every label of
    the leaves its beam ends in, as Parabel scores them); lists are averaged in
    chunks of ``chunk`` rows.  Returns numpy ``ids: i32[n, k]`` (-1 padded) and
    ``scores: f32[n, k]``.

    Raises:
      ConfigError: ``X`` has a different feature count than the training data.
    """
    trees = model.state
    if getattr(config, "label_text", False):  # the tree average, then the text (label_text.py)
        top = predict_trees(model, X, replace(config, label_text=False), k=k, chunk=chunk)
        return lt.rescore(model.params, X, top, config.label_text_weight, k,
                          config.label_text_decay)
    if len(trees) == 1:
        return xr.predict_prepared(trees[0], X, config, k=k)
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.shape[1] != int(model.params["n_features"]):
        raise ConfigError(f"X has {X.shape[1]} features, the model "
                          f"{int(model.params['n_features'])}")
    tops = []
    for tree in trees:
        perm = np.asarray(tree.params["perm"])
        n_labels = len(np.unique(perm[perm >= 0]))
        branching = np.asarray(tree.params["branching"])
        k_tree = min(max(k, config.beam_size * int(branching[-1])), n_labels)
        tops.append(xr.predict_prepared(tree, X, config, k=k_tree))
    ids = np.concatenate([t.ids for t in tops], axis=1)
    scores = np.concatenate([np.where(t.ids >= 0, t.scores, 0.0) for t in tops], axis=1)
    out_ids = np.full((X.shape[0], k), -1, np.int32)
    out_scores = np.full((X.shape[0], k), -np.inf, np.float32)
    width = ids.shape[1]
    for a in range(0, X.shape[0], chunk):
        rows = slice(a, min(a + chunk, X.shape[0]))
        n = rows.stop - rows.start
        pad = chunk - n if X.shape[0] > chunk else 0  # one compiled shape per call
        i = np.pad(ids[rows], ((0, pad), (0, 0)), constant_values=-1)
        s = np.pad(scores[rows], ((0, pad), (0, 0)))
        top = average_lists(i.reshape(-1, width), s.reshape(-1, width), k=k, n_lists=len(trees))
        out_ids[rows] = np.asarray(top.ids)[:n]
        out_scores[rows] = np.asarray(top.scores)[:n]
    return TopK(out_ids, out_scores)


def ensemble_method(name: str, Config, summary: str):
    """The :class:`~jxmc.models.base.Method` of a tree ensemble with defaults ``Config``.

    Its ``fit`` is :func:`fit_trees`, ``prepare`` :func:`prepare_trees` and ``predict``
    :func:`predict_trees`; it runs on a mesh and takes XR-Linear's prediction fields.
    Returns ``(method, fit, predict)``: the module-level ``fit`` and ``predict``
    (which takes params or a prepared model) default to ``Config()``.
    """
    default = Config()

    def fit(X, Y, config=default, *, seed: int = 0, ckpt=None, progress: bool = True,
            mesh=None, label_features=None):
        return fit_trees(X, Y, config, seed=seed, ckpt=ckpt, progress=progress, name=name,
                         mesh=mesh, label_features=label_features)

    method = base.method(name, Config, fit=fit, predict=predict_trees, prepare=prepare_trees,
                         supports_mesh=True, predict_fields=xr.PREDICT_FIELDS, summary=summary)

    fit.__doc__ = (f"Trains ``n_trees`` {name} trees; see "
                   ":func:`jxmc.models.tree_linear.ensemble.fit_trees`.")
    return method, fit, method.predict
