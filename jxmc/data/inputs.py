"""Inputs of ``jxmc predict`` and ``jxmc evaluate``, featurised as the model was.

A saved model knows how its training data was featurised (the TF-IDF
featuriser of raw-text data, row normalisation of XC data) and its label
names; these functions read new data the same way, without touching the
training split.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from jxmc.data import synthetic, text, xc
from jxmc.data.sources import detect_layout, need_file
from jxmc.errors import DataError
from jxmc.fileio import read_lines
from jxmc.ops.sparse import normalise_rows


def _check_width(path: str, X: sp.csr_matrix, n_features: int) -> None:
    if X.shape[1] != n_features:
        raise DataError(path, 1, f"{X.shape[1]} features, but the model was trained on {n_features}")


def read_test_split(spec: str | None, model):
    """The test split of ``spec`` featurised for ``model`` (a :class:`jxmc.modeldir.SavedModel`).

    Returns:
      ``X: csr f32[n, d]``; ``Y: csr f32[n, L_all]`` (test-only label names of
      raw-text data appended after the model's ``L``); the ``L_all`` label names
      (None for id-labelled data); the test texts (raw-text data) or None.

    Raises:
      DataError: unreadable data, or data whose features/labels do not fit the model.
    """
    data = model.manifest["data"]
    n_features, n_labels = data["n_features"], data["n_labels"]
    if spec is None or spec == "synthetic" or spec.startswith("synthetic:"):
        _, _, X, Y = synthetic.generate(synthetic.parse_spec(spec or "synthetic"))
        _check_width(spec or "synthetic", X, n_features)
        return X, Y, None, None
    if spec.startswith("tfds:"):
        from jxmc.data.tfds import read_tfds_test_split  # needs the optional tensorflow-datasets

        return read_tfds_test_split(spec, model)
    folder = os.path.normpath(spec)
    layout = detect_layout(folder)
    if layout == "text":
        if model.featurizer is None or model.label_names is None:
            raise DataError(folder, None, "raw-text data, but the model was trained on sparse features")
        texts, labels = text.read_text_split(need_file(folder, "test_texts.txt"), need_file(folder, "test_labels.txt"))
        Y, extra = text.encode_labels(labels, model.label_names, extend_unseen=True)
        return model.featurizer.transform(texts), Y, list(model.label_names) + list(extra), texts
    if model.featurizer is not None:
        raise DataError(folder, None, "sparse-feature data, but the model was trained on raw text")
    if layout == "xc":
        path = need_file(folder, "test.txt")
        te = xc.read_xc(path)
    else:
        path = need_file(folder, "tst_X_Xf.txt")
        te = xc.read_xc_split(path, need_file(folder, "tst_X_Y.txt"))
    _check_width(path, te.X, n_features)
    if te.Y.shape[1] != n_labels:
        raise DataError(path, 1, f"{te.Y.shape[1]} labels, but the model was trained on {n_labels}")
    X = normalise_rows(te.X) if data.get("normalise", True) else te.X
    return X, sp.csr_matrix((te.Y != 0).astype(np.float32)), None, None


def read_predict_inputs(path: str, model) -> tuple[sp.csr_matrix, list[str] | None]:
    """Features of the points to predict, ``csr f32[n, d]``, and their texts (or None).

    ``path`` is a dataset folder (its test split), a plain text file with one
    document per line (raw-text models), or an XC file: the single-file
    layout (header ``n d L``) or a features-only matrix (header ``n d``).

    Raises:
      DataError: unreadable input, or input that does not fit the model.
    """
    if path.startswith(("synthetic", "tfds:")) or os.path.isdir(path):
        X, _, _, texts = read_test_split(path, model)
        return X, texts
    if model.featurizer is not None:
        texts = [line for _, line in read_lines(path)]
        if not texts:
            raise DataError(path, None, "empty file: expected one document per line")
        return model.featurizer.transform(texts), texts
    header = next(iter(read_lines(path)), (1, ""))[1].split()
    if len(header) == 2:
        X = xc.read_sparse_matrix(path)
    else:
        X = xc.read_xc(path, n_labels=None).X
    _check_width(path, X, model.manifest["data"]["n_features"])
    return (normalise_rows(X) if model.manifest["data"].get("normalise", True) else X), None
