"""PECOS XR-Linear model folders read into, and written from, jxmc's xr-linear models.

Yu, Zhong, Zhang, Chang & Dhillon, "PECOS: Prediction for Enormous and Correlated
Output Spaces", JMLR 2022, Section 4 (XR-Linear).  The folder (``XLinearModel.save`` /
``load``: per level ``t`` a ranker matrix ``W`` and a node -> parent matrix ``C``) is
read and written by :mod:`jxmc.interop.pecos_folder`; this module maps it onto jxmc's
xr-linear params and model directory (``jxmc convert``).

Prediction (``HierarchicalMLModel.predict``, PECOS's defaults ``post_processor =
"l3-hinge"``): level by level the children of the kept nodes are scored
``v = w_j . [x, b]``, transformed (``exp(-max(1 - v, 0)^3)``), multiplied by their
parent's score, and the ``only_topk`` best kept: ``only_topk`` of levels
``0 .. D-2`` is the beam size, that of the last level the labels returned.  jxmc's
beam search (:mod:`jxmc.tree.beam`) is the same computation (in log space, the same
order) with one beam size for every level and PECOS's ``"l3-hinge"`` /
``"l2-hinge"`` as ``transform``.

jxmc's tree is complete (:mod:`jxmc.tree.label_tree`: node u's children are
``u * B_l + 0 .. B_l - 1``), PECOS's may not be (hierarchical k-means leaves hold
``m`` or ``m + 1`` labels; ``set_output_constraint`` prunes nodes).
:func:`to_params` pads it: ``B_l`` is the most children of any level-``l-1``
node, each node's children keep PECOS's order, and the padding is

* at the leaves, dummy positions (``perm = -1``), never predicted;
* above, dummy nodes whose ranker is one bias weight :data:`DUMMY_WEIGHT`: their
  transformed score underflows to 0 (log ``-inf``), so the beam drops them
  (:func:`jxmc.tree.beam.keep`), as PECOS, which never sees them;
* a node without a parent (a pruned one) is left out: PECOS never reaches it.

Bias: jxmc appends the constant 1.0 (``Config.bias``) and PECOS's bias value ``b``
is folded into the bias weights (``w_d * b``; exact for PECOS's default 1.0); a
level without a bias row (``b <= 0``) gets no bias weights.  :func:`from_params`
writes jxmc's bias value as every level's ``b``.

Refused, with a one-line :class:`~jxmc.errors.ConfigError` naming the file: a
memory-mapped model (``is_mmap``), a post-processor other than ``l3-hinge`` /
``l2-hinge`` or different per level, different beam sizes per level, a level-0
``C`` of several columns (a partial chain), a node with several parents, shapes
that do not chain; and, writing, label copies (label disentanglement) -- PECOS
keeps one ranker per label.

Everything here is numpy / scipy (no PECOS import); :func:`import_model` /
:func:`export_model` (``jxmc convert``) add jxmc's model directory (:mod:`jxmc.modeldir`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from jxmc.errors import ConfigError
from jxmc.interop.pecos_folder import PecosLevel, PecosModel, load_matrix, read_model, write_model
from jxmc.ops import sparse_weights as sw
from jxmc.tree.label_tree import LabelTree, has_copies

__all__ = ["PecosLevel", "PecosModel", "load_matrix", "read_model", "write_model", "to_params",
           "from_params", "prediction_options", "import_model", "export_model"]

PECOS_POST_PROCESSORS = ("l3-hinge", "l2-hinge")  # PECOS names that are jxmc transforms
DUMMY_WEIGHT = -1e30  # a padding node's bias weight: l3/l2-hinge of it is exp(-inf) = 0 in f32
TOP_K = 10  # only_topk written for the last level (the labels PECOS returns by default)


# ----------------------------------------------------------------------- PECOS -> jxmc


def _parents(C: sp.csc_matrix, where: str) -> np.ndarray:
    """``i64[K_{t+1}]`` each node's parent, ``-1`` for none."""
    R = sp.csr_matrix(C)
    n = np.diff(R.indptr)
    if (n > 1).any():
        j = int(np.nonzero(n > 1)[0][0])
        raise ConfigError(f"{where}/C.npz: node {j} has {int(n[j])} parents; a tree needs one "
                          f"(jxmc keeps no label or cluster in two places)")
    parent = np.full(C.shape[0], -1, np.int64)
    parent[n == 1] = R.indices
    return parent


def prediction_options(model: PecosModel) -> tuple[int | None, str]:
    """``(beam_size, transform)`` of jxmc's Config for the model's saved
    ``pred_kwargs`` (``beam_size`` None for a one-level model, which has no beam).

    Raises:
      ConfigError: a post-processor jxmc does not have, or per-level differences.
    """
    posts = {lv.post_processor for lv in model.levels}
    for lv in model.levels:
        if lv.post_processor not in PECOS_POST_PROCESSORS:
            raise ConfigError(f"{lv.where}/param.json: post_processor {lv.post_processor!r}; "
                              f"jxmc scores with {' or '.join(PECOS_POST_PROCESSORS)}")
    if len(posts) > 1:
        raise ConfigError(f"{model.levels[-1].where}/param.json: post_processor differs per level "
                          f"({', '.join(sorted(posts))}); jxmc uses one for all")
    beams = {lv.only_topk for lv in model.levels[:-1]}
    if len(beams) > 1:
        raise ConfigError(f"{model.levels[0].where}/param.json: only_topk (the beam size) differs "
                          f"per level ({', '.join(map(str, sorted(beams)))}); jxmc uses one beam "
                          f"size for all")
    beam = beams.pop() if beams else None
    if beam is not None and beam < 1:
        raise ConfigError(f"{model.levels[0].where}/param.json: only_topk {beam}, expected >= 1")
    return beam, posts.pop()


def _level_arrays(par, feat, child, val, n_parents: int, n_children: int, n_feat: int) -> dict:
    """One jxmc level (:mod:`jxmc.ops.sparse_weights`) from its weights as
    (parent, feature, child, value) entries."""
    order = np.lexsort((child, feat, par))
    par, feat, child, val = par[order], feat[order], child[order], val[order]
    key = par * np.int64(n_feat) + feat
    first = np.concatenate([[True], key[1:] != key[:-1]]) if len(key) else np.zeros(0, bool)
    starts = np.nonzero(first)[0]
    counts = np.diff(np.concatenate([starts, [len(key)]]))
    part = (par[starts], feat[starts].astype(np.int32), counts, child, val.astype(np.float32))
    return sw.assemble_level([part], n_parents, n_children)


def to_params(model: PecosModel) -> dict:
    """jxmc xr-linear params (:func:`jxmc.models.tree_linear.xr_linear.fit`'s layout)
    of a PECOS model, the tree padded to a complete one (module docstring); scored
    with ``Config.bias = 1.0`` and :func:`prediction_options`.

    Returns:
      ``{"perm": i32[K_D], "branching": i32[D], "n_features": i32, "levels": {...}}``.

    Raises:
      ConfigError: a node with several parents.
    """
    d = model.n_features
    D = len(model.levels)
    pos = np.zeros(1, np.int64)  # jxmc position of each PECOS node of the level above
    K = 1  # jxmc nodes at the level above
    branching, levels = [], {}
    for t, lv in enumerate(model.levels):
        parent = _parents(lv.C, lv.where)
        p_pos = np.where(parent >= 0, pos[np.maximum(parent, 0)], -1)
        p_pos[parent < 0] = -1
        real = np.nonzero(p_pos >= 0)[0]
        counts = np.bincount(p_pos[real], minlength=K)
        B = max(1, int(counts.max(initial=0)))
        order = real[np.argsort(p_pos[real], kind="stable")]  # by parent, then PECOS id
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(order)) - first[p_pos[order]]
        new_pos = np.full(lv.C.shape[0], -1, np.int64)
        new_pos[order] = p_pos[order] * B + rank
        W = lv.W.tocoo()
        keep = new_pos[W.col] >= 0
        f, node, v = W.row[keep].astype(np.int64), new_pos[W.col[keep]], W.data[keep]
        v = np.where(f == d, v * np.float32(lv.bias), v).astype(np.float32)
        if t < D - 1:  # dummy nodes under real parents: the beam drops them
            has_real = np.zeros(K, bool)
            has_real[pos[pos >= 0]] = True
            taken = np.zeros(K * B, bool)
            taken[new_pos[new_pos >= 0]] = True
            dummy = np.nonzero(np.repeat(has_real, B) & ~taken)[0]
            f = np.concatenate([f, np.full(len(dummy), d, np.int64)])
            node = np.concatenate([node, dummy])
            v = np.concatenate([v, np.full(len(dummy), DUMMY_WEIGHT, np.float32)])
        levels[f"level_{t + 1}"] = _level_arrays(node // B, f, node % B, v, K, B, d + 1)
        branching.append(B)
        pos, K = new_pos, K * B
    perm = np.full(K, -1, np.int32)
    labels = np.nonzero(pos >= 0)[0]
    perm[pos[labels]] = labels
    return {"perm": perm, "branching": np.asarray(branching, np.int32),
            "n_features": np.asarray(d, np.int32), "levels": levels}


# ----------------------------------------------------------------------- jxmc -> PECOS


def from_params(params: dict, n_labels: int, *, beam_size: int, transform: str,
                bias: float = 1.0, top_k: int = TOP_K) -> PecosModel:
    """The PECOS model of jxmc xr-linear ``params``: every node of the complete tree
    a PECOS node (dummy leaves left out), scored with ``transform`` as PECOS's
    post-processor, ``beam_size`` as the upper levels' ``only_topk`` and ``top_k``
    as the last level's.

    Raises:
      ConfigError: label copies (label disentanglement), or a transform PECOS lacks.
    """
    if transform not in PECOS_POST_PROCESSORS:
        raise ConfigError(f"transform {transform!r}: PECOS's post-processors include "
                          f"{', '.join(PECOS_POST_PROCESSORS)}, not this")
    tree = LabelTree(np.asarray(params["perm"]), tuple(int(b) for b in params["branching"]))
    if has_copies(tree) or "disentangled" in params:
        raise ConfigError("a model with label copies (label disentanglement, "
                          "clusters_per_label > 1): PECOS keeps one ranker per label")
    d = int(params["n_features"])
    rows = d + 1 if bias > 0 else d
    perm = tree.perm.astype(np.int64)
    out, K = [], 1
    for level, B in enumerate(tree.branching, start=1):
        lv = params["levels"][f"level_{level}"]
        indptr, slot_ptr = np.asarray(lv["indptr"]), np.asarray(lv["slot_ptr"])
        slot_par = np.repeat(np.arange(K, dtype=np.int64), np.diff(indptr))
        entry_slot = np.repeat(np.arange(len(slot_par)), np.diff(slot_ptr))
        node = slot_par[entry_slot] * B + np.asarray(lv["children"]).astype(np.int64)
        feat = np.asarray(lv["features"]).astype(np.int64)[entry_slot]
        val = np.asarray(lv["values"], np.float32)
        keep = (val != 0) & (feat < rows)
        if level < tree.depth:
            col, n_col = node[keep], K * B
            C = sp.csc_matrix((np.ones(n_col, np.float32),
                               (np.arange(n_col), np.arange(n_col) // B)), shape=(n_col, K))
        else:
            keep &= perm[np.minimum(node, len(perm) - 1)] >= 0
            col, n_col = perm[node[keep]], n_labels
            q = np.nonzero(perm >= 0)[0]
            C = sp.csc_matrix((np.ones(len(q), np.float32), (perm[q], q // B)), shape=(n_col, K))
        W = sp.csc_matrix((val[keep], (feat[keep], col)), shape=(rows, n_col), dtype=np.float32)
        W.sort_indices()
        C.sort_indices()
        only = beam_size if level < tree.depth else top_k
        out.append(PecosLevel(W, C, float(bias), int(only), transform))
        K *= B
    return PecosModel(out, d, int(n_labels))


# ----------------------------------------------------------------------- jxmc convert


def _quiet(_msg: str) -> None:
    pass


def import_model(pecos_dir: str, model_dir: str, *, data: str | None = None,
                 log: Callable[[str], None] = _quiet) -> None:
    """``jxmc convert --from pecos PECOS_DIR --model-dir M [--data D]``: writes the
    PECOS model as a jxmc xr-linear model directory (:mod:`jxmc.modeldir`).

    Without ``data`` the model reads sparse features as given (PECOS normalises
    nothing at prediction), labels are ids.  With ``data``, the dataset the PECOS
    model was trained on as jxmc featurises it (:func:`jxmc.data.dataset.load_dataset`):
    the model directory gets its featuriser, label names and training label counts
    (``jxmc predict`` on raw text, ``jxmc evaluate`` with PSP@k), and reads new data
    as jxmc reads that dataset.

    Raises:
      ConfigError: an unreadable or inexpressible PECOS model (see the module
        docstring), ``model_dir`` not empty, ``data`` of another shape.
    """
    from jxmc import modeldir
    from jxmc.models.base import config_to_dict
    from jxmc.models.tree_linear import xr_linear as xr

    if os.path.exists(model_dir) and (not os.path.isdir(model_dir) or os.listdir(model_dir)):
        raise ConfigError(f"{model_dir}: not empty; convert into a new model directory")
    model = read_model(pecos_dir)
    beam, transform = prediction_options(model)
    params = to_params(model)
    config = xr.Config(beam_size=xr.Config.beam_size if beam is None else beam,
                       transform=transform, bias=1.0)
    info = {"name": os.path.basename(os.path.normpath(pecos_dir)), "layout": "pecos",
            "source": os.path.abspath(pecos_dir), "n_features": model.n_features,
            "n_labels": model.n_labels, "n_train": 0, "normalise": False}
    names = featurizer = counts = None
    if data is not None:
        from jxmc.data.dataset import load_dataset

        log(f"jxmc: loading {data}")
        ds = load_dataset(data)
        if (ds.n_features, ds.n_labels) != (model.n_features, model.n_labels):
            raise ConfigError(f"--data {data}: {ds.n_features} features / {ds.n_labels} labels, "
                              f"but the PECOS model in {pecos_dir} has {model.n_features} / "
                              f"{model.n_labels}")
        info.update(name=ds.name, layout=ds.layout, source=ds.source,
                    n_train=int(ds.train.X.shape[0]), normalise=True)
        names, featurizer = ds.label_names, ds.featurizer
        counts = ds.label_counts()[: ds.n_labels]
    tree = LabelTree(params["perm"], tuple(int(b) for b in params["branching"]))
    source = {"format": "pecos", "folder": os.path.abspath(pecos_dir),
              "depth": len(model.levels),
              "nodes_per_level": [int(lv.C.shape[0]) for lv in model.levels],
              "bias": [lv.bias for lv in model.levels]}
    modeldir.save(model_dir, method=xr.METHOD.name, config=config_to_dict(config), seed=0,
                  data=info, params=params, label_names=names, featurizer=featurizer,
                  label_counts=counts, extra={"converted_from": source})
    log(f"jxmc: PECOS model {pecos_dir} ({len(model.levels)} levels, {model.n_labels} labels, "
        f"d={model.n_features}) written to {model_dir} as xr-linear, tree "
        f"{'x'.join(map(str, tree.branching))}, beam {config.beam_size}, {transform}")


def export_model(model_dir: str, out: str, *, log: Callable[[str], None] = _quiet) -> None:
    """``jxmc convert --to pecos --model-dir M OUT``: writes a jxmc xr-linear model in
    the folder that PECOS's ``XLinearModel.load(OUT)`` reads (labels are the model's
    ids: the lines of its ``label_names.txt`` when it has one).

    Raises:
      ModelError: no model in ``model_dir``.
      ConfigError: a method other than xr-linear, label copies, ``out`` not free.
    """
    from jxmc import modeldir
    from jxmc.models.base import config_from_dict
    from jxmc.models.tree_linear import xr_linear as xr

    saved = modeldir.load(model_dir)
    if saved.method != xr.METHOD.name:
        raise ConfigError(f"{model_dir}: a {saved.method} model; convert --to pecos writes "
                          f"xr-linear models (one label tree, PECOS's XR-Linear)")
    config = config_from_dict(xr.Config, saved.manifest["config"])
    n_labels = int(saved.manifest["data"]["n_labels"])
    try:
        model = from_params(saved.params, n_labels, beam_size=config.beam_size,
                            transform=config.transform, bias=config.bias)
    except ConfigError as e:
        raise ConfigError(f"{model_dir}: {e}") from None
    write_model(out, model)
    log(f"jxmc: {model_dir} written to {out} as a PECOS XLinearModel ({len(model.levels)} "
        f"levels, {n_labels} labels, beam {config.beam_size}, {config.transform}); load it with "
        f"XLinearModel.load({out!r})")
