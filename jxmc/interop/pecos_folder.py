"""PECOS's XR-Linear model folder, read and written with numpy / scipy (no PECOS import).

Yu, Zhong, Zhang, Chang & Dhillon, "PECOS: Prediction for Enormous and Correlated
Output Spaces", JMLR 2022, Section 4 (XR-Linear), in the folder that libpecos 1.2.8
writes (``pecos.xmc.xlinear.model.XLinearModel.save``, which calls
``pecos.xmc.base.HierarchicalMLModel.save`` and ``MLModel.save``) and
``XLinearModel.load`` reads::

    <folder>/param.json         {"__meta__": {"class_fullname": "...###XLinearModel"}}
    <folder>/ranker/param.json  {"model": "HierarchicalMLModel", "depth": D, "nr_features": d,
                                 "nr_codes": K_{D-1}, "nr_labels": L}
    <folder>/ranker/<t>.model/  level t = 0 .. D-1 (jxmc's level t + 1), K_0 = 1, K_D = L:
        param.json  {"model": "MLModel", "nr_labels": K_{t+1}, "nr_features": d,
                     "nr_codes": K_t, "bias": b, "pred_kwargs": {"only_topk", "post_processor"}}
        W.npz       csc f32[d + 1, K_{t+1}]: column j is node j's ranker (row d: the bias
                    weight, present when b > 0); scipy's uncompressed ``save_npz`` layout
        C.npz       csc f32[K_{t+1}, K_t]: ``C[j, u] = 1`` iff node j's parent is u

:func:`read_model` checks that the shapes chain and refuses (a one-line
:class:`~jxmc.errors.ConfigError` naming the file) a missing or malformed file, a
memory-mapped model (``is_mmap``), a class other than XLinearModel; what the
matrices mean for prediction is :mod:`jxmc.interop.pecos`'s.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from jxmc.errors import ConfigError
from jxmc.fileio import read_json_object

_META = "__meta__"
_CLASS = {"xlinear": "pecos.xmc.xlinear.model###XLinearModel",
          "hlm": "pecos.xmc.base###HierarchicalMLModel",
          "ml": "pecos.xmc.base###MLModel",
          "pred": "pecos.xmc.base###MLModel.PredParams"}

class PecosLevel(NamedTuple):
    """One ``<t>.model`` folder of a PECOS XR-Linear model.

    Attributes:
      W: ``csc f32[d + (b > 0), K_{t+1}]`` the rankers (row ``d``: bias weights).
      C: ``csc f32[K_{t+1}, K_t]`` node -> parent.
      bias: ``b``, the bias feature's value (``<= 0``: none).
      only_topk: nodes kept after this level (the beam size; the last level: labels).
      post_processor: PECOS's score transform and combiner, e.g. ``"l3-hinge"``.
      where: the folder, for error messages.
    """

    W: sp.csc_matrix
    C: sp.csc_matrix
    bias: float
    only_topk: int
    post_processor: str
    where: str = ""


class PecosModel(NamedTuple):
    """A PECOS XR-Linear model: its levels top down, ``d`` features, ``L`` labels."""

    levels: list[PecosLevel]
    n_features: int
    n_labels: int


# ----------------------------------------------------------------------- reading


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: missing; not a PECOS XLinearModel folder "
                          f"(XLinearModel.save writes it)")
    return read_json_object(path, ConfigError, "PECOS JSON parameter file")


def _field(param: dict, key: str, kind, path: str):
    if key not in param:
        raise ConfigError(f"{path}: no {key!r}")
    value = param[key]
    if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f"{path}: {key!r} is {value!r}, expected an integer")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: {key!r} is {value!r}, expected a number")
        value = float(value)
    return value


def _check_class(param: dict, path: str, want: str, model: str | None) -> None:
    meta = param.get(_META)
    name = meta.get("class_fullname") if isinstance(meta, dict) else None
    if name is not None and name != want:
        raise ConfigError(f"{path}: a {name.split('###')[-1]} ({name}), expected {want}")
    if model is not None and param.get("model") != model:
        raise ConfigError(f"{path}: 'model' is {param.get('model')!r}, expected {model!r}")
    if param.get("is_mmap"):
        raise ConfigError(f"{path}: a memory-mapped model (compile_mmap_model); convert from "
                          f"the npz folder it was compiled from")


def load_matrix(path: str) -> sp.csc_matrix:
    """A matrix as PECOS's ``smat_util.save_matrix`` writes it (scipy's ``save_npz``
    layout of a csc / csr / coo matrix, or ``np.save`` of a dense one), as ``csc f32``
    with sorted indices, duplicates summed and zeros dropped.

    Raises:
      ConfigError: the file is missing or not such a matrix.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: missing (every <t>.model folder holds W.npz and C.npz)")
    try:
        with np.load(path, allow_pickle=False) as z:
            M = _matrix_of(z)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{path}: not a matrix saved by numpy/scipy "
                          f"({type(e).__name__}: {' '.join(str(e).split())})") from None
    M = sp.csc_matrix(M, dtype=np.float32)
    M.sum_duplicates()
    M.eliminate_zeros()
    M.sort_indices()
    if not np.isfinite(M.data).all():
        raise ConfigError(f"{path}: holds non-finite values")
    return M


def _matrix_of(z):
    if isinstance(z, np.ndarray):  # np.load of an .npy in a file named .npz: dense
        if z.ndim != 2:
            raise ConfigError(f"a dense array of shape {z.shape}, expected a matrix")
        return z
    fmt = z["format"].item()
    fmt = fmt.decode("ascii") if isinstance(fmt, bytes) else str(fmt)
    shape = tuple(int(s) for s in z["shape"])
    if fmt in ("csc", "csr"):
        cls = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
        return cls((z["data"], z["indices"], z["indptr"]), shape=shape)
    if fmt == "coo":
        return sp.coo_matrix((z["data"], (z["row"], z["col"])), shape=shape)
    raise ConfigError(f"a {fmt!r} matrix; expected csc, csr or coo")


def read_model(folder: str) -> PecosModel:
    """Reads a PECOS XR-Linear model folder (module docstring).

    Raises:
      ConfigError: a missing or malformed file, named; shapes that do not chain.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ConfigError(f"{folder}: PECOS model folder not found")
    path = os.path.join(folder, "param.json")
    _check_class(_read_json(path), path, _CLASS["xlinear"], None)
    ranker = os.path.join(folder, "ranker")
    path = os.path.join(ranker, "param.json")
    top = _read_json(path)
    _check_class(top, path, _CLASS["hlm"], "HierarchicalMLModel")
    depth = _field(top, "depth", int, path)
    n_features = _field(top, "nr_features", int, path)
    n_labels = _field(top, "nr_labels", int, path)
    if depth < 1 or n_features < 0 or n_labels < 1:
        raise ConfigError(f"{path}: depth {depth}, nr_features {n_features}, nr_labels "
                          f"{n_labels}: expected depth >= 1 and nr_labels >= 1")
    levels = []
    n_codes = 1
    for t in range(depth):
        where = os.path.join(ranker, f"{t}.model")
        path = os.path.join(where, "param.json")
        param = _read_json(path)
        _check_class(param, path, _CLASS["ml"], "MLModel")
        bias = _field(param, "bias", float, path)
        pred = param.get("pred_kwargs", {})
        if not isinstance(pred, dict):
            raise ConfigError(f"{path}: 'pred_kwargs' is {pred!r}, expected an object")
        only_topk = _field({"only_topk": 20, **pred}, "only_topk", int, path)  # PECOS's defaults
        post = pred.get("post_processor", "l3-hinge")
        W = load_matrix(os.path.join(where, "W.npz"))
        C = load_matrix(os.path.join(where, "C.npz"))
        rows = n_features + (1 if bias > 0 else 0)
        if t == 0 and C.shape[1] != 1:
            raise ConfigError(f"{where}/C.npz: level 0 has {C.shape[1]} parents: a partial chain "
                              f"(a ranker-mode model fed by another's clusters); jxmc needs the "
                              f"full tree from the root")
        if C.shape[1] != n_codes:
            raise ConfigError(f"{where}/C.npz: shape {C.shape}, but level {t - 1} has {n_codes} "
                              f"nodes")
        if W.shape != (rows, C.shape[0]):
            raise ConfigError(f"{where}/W.npz: shape {W.shape}, expected ({rows}, {C.shape[0]}) "
                              f"({n_features} features{' + bias' if bias > 0 else ''}, the "
                              f"{C.shape[0]} rows of C.npz)")
        levels.append(PecosLevel(W, C, bias, only_topk, post, where))
        n_codes = C.shape[0]
    if n_codes != n_labels:
        raise ConfigError(f"{levels[-1].where}/C.npz: {n_codes} rows, but "
                          f"{os.path.join(ranker, 'param.json')} records {n_labels} labels")
    return PecosModel(levels, n_features, n_labels)


# ----------------------------------------------------------------------- writing


def _save_csc(path: str, M: sp.csc_matrix) -> None:
    """``scipy.sparse.save_npz(path, M, compressed=False)``'s layout, int32 indices
    where they fit (as PECOS's ``smat_util.save_matrix`` writes)."""
    M = sp.csc_matrix(M, dtype=np.float32)
    big = max(M.nnz, *M.shape) >= np.iinfo(np.int32).max
    itype = np.int64 if big else np.int32
    with open(path, "wb") as f:
        np.savez(f, indices=M.indices.astype(itype), indptr=M.indptr.astype(itype),
                 format=np.array(b"csc"), shape=np.asarray(M.shape, np.int64),
                 data=M.data.astype(np.float32))


def _write_json(path: str, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(value, indent=True))


def _is_pecos_folder(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "param.json"), encoding="utf-8") as f:
            meta = json.load(f).get(_META, {})
        return meta.get("class_fullname") == _CLASS["xlinear"]
    except (OSError, ValueError, AttributeError):
        return False


def write_model(folder: str, model: PecosModel) -> None:
    """Writes ``model`` as ``XLinearModel.save`` does (module docstring); ``folder``
    must be absent, empty, or a PECOS XLinearModel folder (then replaced).  The files
    are written beside it and moved into place.

    Raises:
      ConfigError: ``folder`` holds something else.
    """
    folder = os.path.normpath(os.fspath(folder))
    if os.path.exists(folder) and not (os.path.isdir(folder) and (not os.listdir(folder)
                                                                  or _is_pecos_folder(folder))):
        raise ConfigError(f"{folder}: exists and is not a PECOS model folder; choose a new one")
    tmp = f"{folder}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        ranker = os.path.join(tmp, "ranker")
        os.makedirs(ranker)
        _write_json(os.path.join(tmp, "param.json"), {_META: {"class_fullname": _CLASS["xlinear"]}})
        last = model.levels[-1]
        _write_json(os.path.join(ranker, "param.json"), {
            _META: {"class_fullname": _CLASS["hlm"]}, "model": "HierarchicalMLModel",
            "depth": len(model.levels), "nr_features": model.n_features,
            "nr_codes": int(last.C.shape[1]), "nr_labels": model.n_labels})
        for t, lv in enumerate(model.levels):
            where = os.path.join(ranker, f"{t}.model")
            os.makedirs(where)
            _write_json(os.path.join(where, "param.json"), {
                _META: {"class_fullname": _CLASS["ml"]}, "model": "MLModel",
                "nr_labels": int(lv.W.shape[1]), "nr_features": model.n_features,
                "nr_codes": int(lv.C.shape[1]), "bias": float(lv.bias),
                "pred_kwargs": {_META: {"class_fullname": _CLASS["pred"]},
                                "only_topk": int(lv.only_topk),
                                "post_processor": lv.post_processor}})
            _save_csc(os.path.join(where, "W.npz"), lv.W)
            _save_csc(os.path.join(where, "C.npz"), lv.C)
        if os.path.exists(folder):
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
