"""XMC data through TensorFlow Datasets (TFDS), stored as array_record, read without TensorFlow.

Two TFDS builders (:mod:`jxmc.data.tfds_builders`) turn downloaded files into
TFDS datasets, and this module reads them back for jxmc:

* ``xc_repository/<set>``: the sparse-feature sets of the Extreme Classification
  Repository (:data:`jxmc.data.catalog.XC_DATASETS`: Bibtex, Delicious, Mediamill, EURLex-4K,
  Wiki10-31K, AmazonCat-13K, Wiki-500K, Amazon-670K, Amazon-3M), or any folder in
  an XC layout under a name of your choice.  One record per point, in file order::

      indices: i32[z]  feature ids, padding 0
      values:  f32[z]  feature values as in the files (not normalised), padding 0.0
      labels:  i32[m]  positive label ids, ascending, padding -1

  ``z`` and ``m`` are the widest row of the data set (``z`` may be capped,
  :func:`jxmc.data.tfds_build.build`'s ``max_nnz``), so records stack straight into a
  :class:`jxmc.types.Batch` (:func:`iterate_tfds_batches`).
* ``xmc_text/<name>``: a raw-text folder (the AttentionXML / LightXML / CascadeXML
  layout ``{train,test}_texts.txt`` + ``{train,test}_labels.txt``).  One record
  per point: ``text`` (bytes, UTF-8) and ``labels`` (its label names).

Both write ``file_format="array_record"``; building and reading need
``tensorflow-datasets`` and ``array-record`` (``pip install 'jxmc[tfds]'``) and
never import TensorFlow.  A prepared dataset describes itself
(``features.json``, ``metadata.json``), so plain TFDS reads it too::

    import tensorflow_datasets as tfds
    ds = tfds.data_source("xc_repository/bibtex", data_dir=DATA_DIR)  # no TF, no jxmc
    ds["train"][0]  # {'indices': i32[z], 'values': f32[z], 'labels': i32[m]}

**Building** (the source files are read from a manual folder; see "Sources")::

    python -m jxmc.data.tfds build bibtex --source-dir Bibtex/ --data-dir ~/tensorflow_datasets
    python -m jxmc.data.tfds build debtags --kind text --source-dir ../shared/data/debtags

or :func:`jxmc.data.tfds_build.build` from Python.  **Training** on a prepared dataset:
``jxmc train --data tfds:bibtex`` (see :func:`load_tfds`; the spec is
:func:`jxmc.data.tfds_spec.parse_spec`).

**Sources.**  Every ``xc_repository`` set comes from the Extreme Classification
Repository, http://manikvarma.org/downloads/XC/XMLRepository.html (Bhatia et al.,
2016), table "Multi-label Datasets": download the set's "BoW Features" archive
(Google Drive links on that page), unpack it, and pass the folder as
``--source-dir``.  :data:`jxmc.data.catalog.XC_DATASETS` lists, per set, the published sizes (the
builder warns when the files differ) and the file names in the download; the
builder recognises the layouts ``train.txt`` + ``test.txt``,
``trn_X_Xf.txt`` + ``trn_X_Y.txt`` + ``tst_X_Xf.txt`` + ``tst_X_Y.txt``,
``PREFIX_train.txt`` + ``PREFIX_test.txt`` and, for the small sets,
``NAME_data.txt`` + ``NAME_trSplit.txt`` + ``NAME_tstSplit.txt`` (every point in
one file; each column of the split files lists the 1-based rows of one of ten
random splits; the first column is used unless ``split_index`` says otherwise).
Files may stay ``.gz`` / ``.xz`` / ``.bz2`` compressed.  Raw-text versions of the
same sets are distributed by AttentionXML (https://github.com/yourh/AttentionXML,
"Datasets") and LightXML; build them with ``--kind text``.
``python -m jxmc.data.tfds sources`` prints, per set, its sizes and the files to
download (:func:`jxmc.data.catalog.download_hint`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from jxmc.data import text
from jxmc.data.catalog import XC_DATASETS, XC_URL, download_hint
from jxmc.data.sources import text_dataset
from jxmc.data.tfds_build import build
from jxmc.data.tfds_spec import default_data_dir, import_tfds, parse_spec, resolve
from jxmc.data.tfidf import TfidfConfig
from jxmc.data.types import Dataset, Split
from jxmc.errors import ConfigError, DataError
from jxmc.ops.sparse import normalise_rows
from jxmc.types import Batch, SparseRows

__all__ = [
    "data_source",
    "describe",
    "iterate_tfds_batches",
    "load_tfds",
    "main",
    "read_tfds_split",
    "read_tfds_test_split",
]


def data_source(spec: str) -> dict[str, Any]:
    """Random-access sources of a prepared dataset, ``{"train": ..., "test": ...}``.

    Each is TFDS's ``ArrayRecordDataSource``: ``len(src)``, ``src[i]`` and
    ``src.__getitems__(ids)`` give records as numpy (layouts in the module
    docstring); it plugs into ``grain`` samplers.  No TensorFlow is imported.

    Raises:
      DataError: nothing prepared at the spec; ConfigError: tensorflow-datasets missing.
    """
    tfds = import_tfds()
    builder = tfds.builder_from_directory(resolve(spec))
    return {split: builder.as_data_source(split=split) for split in builder.info.splits}


def _records(source, chunk: int = 8192) -> Iterator[list[dict]]:
    for start in range(0, len(source), chunk):
        yield source.__getitems__(list(range(start, min(start + chunk, len(source)))))


def _metadata(builder) -> dict[str, Any]:
    return dict(builder.info.metadata or {})


def _kind(builder, path: str) -> str:
    keys = set(builder.info.features.keys())
    if {"indices", "values", "labels"} <= keys:
        return "xc"
    if {"text", "labels"} <= keys:
        return "text"
    raise DataError(path, None, f"a TFDS dataset with features {sorted(keys)}, not one of jxmc's "
                    "(indices/values/labels or text/labels)")


def _padded_to_csr(ids: np.ndarray, vals: np.ndarray | None, n_cols: int) -> sp.csr_matrix:
    """Padded rows to CSR: entries with ``vals != 0`` (or ``ids >= 0`` when ``vals`` is None)."""
    keep = (vals != 0) if vals is not None else (ids >= 0)
    data = vals[keep] if vals is not None else np.ones(int(keep.sum()), np.float32)
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    M = sp.csr_matrix((data.astype(np.float32), ids[keep].astype(np.int32), indptr),
                      shape=(ids.shape[0], n_cols))
    M.sort_indices()
    return M


def read_tfds_split(spec: str, split: str):
    """One split of a prepared dataset, as stored.

    Returns:
      XC data: ``(X: csr f32[n, d], Y: csr f32[n, L])``, ``X`` as in the source
      files (not normalised), exactly what :func:`jxmc.data.xc.read_xc` read
      (unless rows were capped by ``max_nnz``).  Raw text: ``(texts: list[str],
      label_lists: list[list[str]])``.

    Raises:
      DataError: no such dataset or split, or records that do not fit the metadata.
    """
    tfds = import_tfds()
    path = resolve(spec)
    builder = tfds.builder_from_directory(path)
    if split not in builder.info.splits:
        raise DataError(path, None, f"no split {split!r}; it has {', '.join(builder.info.splits)}")
    source = builder.as_data_source(split=split)
    kind = _kind(builder, path)
    if kind == "text":
        texts: list[str] = []
        labels: list[list[str]] = []
        for recs in _records(source):
            texts.extend(r["text"].decode("utf-8") for r in recs)
            labels.extend([b.decode("utf-8") for b in r["labels"]] for r in recs)
        return texts, labels
    meta = _metadata(builder)
    z = builder.info.features["indices"].shape[0]
    m = builder.info.features["labels"].shape[0]
    parts = [(np.stack([r["indices"] for r in recs]), np.stack([r["values"] for r in recs]),
              np.stack([r["labels"] for r in recs])) for recs in _records(source)]
    if parts:
        ind, val, lab = (np.concatenate(a) for a in zip(*parts, strict=True))
    else:
        ind, val = np.zeros((0, z), np.int32), np.zeros((0, z), np.float32)
        lab = np.zeros((0, m), np.int32)
    d = int(meta.get("n_features", int(ind.max(initial=-1)) + 1))
    L = int(meta.get("n_labels", int(lab.max(initial=-1)) + 1))
    if ind.size and ind.max() >= d or lab.size and lab.max() >= L:
        raise DataError(path, None, f"split {split!r} holds ids beyond n_features={d} / "
                        f"n_labels={L}")
    return _padded_to_csr(ind, val, d), _padded_to_csr(lab, None, L)


def load_tfds(spec: str, *, normalise: bool = True, tfidf: TfidfConfig | None = None) -> Dataset:
    """Loads a prepared TFDS dataset as a :class:`jxmc.data.types.Dataset`.

    ``spec`` is ``tfds:NAME[:VERSION][@DATA_DIR]`` (:func:`jxmc.data.tfds_spec.parse_spec`), e.g.
    ``tfds:bibtex``, ``tfds:xmc_text/debtags@/data/tfds``.  The result equals what
    :func:`jxmc.data.dataset.load_dataset` returns for the source folder:

    * XC data: ``X`` rows L2-normalised when ``normalise`` (layout ``"xc"``),
      ``Y`` 1.0 at the positives;
    * raw text: label vocabulary = sorted training names, test-only names
      appended as extra columns of ``test.Y``; TF-IDF (``tfidf`` settings) fitted on
      the training texts (layout ``"text"``).

    ``name`` is the config name (``bibtex``; it also picks the propensity
    parameters of PSP@k) and ``source`` the spec.

    Raises:
      DataError: nothing prepared at the spec, or unreadable records.
      ConfigError: a malformed spec, or tensorflow-datasets is not installed.
    """
    s = parse_spec(spec)
    path = resolve(s)
    if _kind(import_tfds().builder_from_directory(path), path) == "text":
        return text_dataset(s.config, read_tfds_split(spec, "train"),
                            read_tfds_split(spec, "test"), tfidf=tfidf, source=spec)
    Xtr, Ytr = read_tfds_split(spec, "train")
    Xte, Yte = read_tfds_split(spec, "test")
    if normalise:
        Xtr, Xte = normalise_rows(Xtr), normalise_rows(Xte)
    return Dataset(s.config, "xc", Split(Xtr, Ytr), Split(Xte, Yte), source=spec)


def read_tfds_test_split(spec: str, model):
    """The test split of a TFDS dataset featurised for a saved model (``jxmc evaluate``).

    The contract of :func:`jxmc.data.inputs.read_test_split`.

    Returns:
      ``X: csr f32[n, d]``; ``Y: csr f32[n, L_all]``; the ``L_all`` label names
      (None for XC data); the test texts (raw text) or None.

    Raises:
      DataError: no such dataset, or data that does not fit the model.
    """
    data = model.manifest["data"]
    path = resolve(spec)
    kind = _kind(import_tfds().builder_from_directory(path), path)
    if kind == "text":
        if model.featurizer is None or model.label_names is None:
            raise DataError(path, None,
                            "raw-text data, but the model was trained on sparse features")
        texts, labels = read_tfds_split(spec, "test")
        Y, extra = text.encode_labels(labels, model.label_names, extend_unseen=True)
        return model.featurizer.transform(texts), Y, list(model.label_names) + list(extra), texts
    if model.featurizer is not None:
        raise DataError(path, None, "sparse-feature data, but the model was trained on raw text")
    X, Y = read_tfds_split(spec, "test")
    if X.shape[1] != data["n_features"] or Y.shape[1] != data["n_labels"]:
        raise DataError(path, None, f"{X.shape[1]} features / {Y.shape[1]} labels, but the model "
                        f"was trained on {data['n_features']} / {data['n_labels']}")
    return (normalise_rows(X) if data.get("normalise", True) else X), Y, None, None


def iterate_tfds_batches(spec: str, split: str, *, batch_size: int, normalise: bool = True,
                         rng: np.random.Generator | None = None) -> Iterator[Batch]:
    """Fixed-shape :class:`jxmc.types.Batch` es straight from the stored records (XC data).

    Every batch has ``batch_size`` rows: ``x.indices: i32[batch_size, z]``,
    ``x.values: f32[batch_size, z]`` (rows L2-normalised when ``normalise``, so
    they equal :func:`load_tfds`'s), ``labels: i32[batch_size, m]`` (``-1``
    padded) and ``valid: bool[batch_size]``, False on the rows that fill the last
    batch.  ``z`` and ``m`` are the dataset's widths, so one compilation serves
    every batch.  With ``rng`` the order is a random permutation.

    Raises:
      ConfigError: ``batch_size < 1``, or a raw-text dataset (featurise it with
        :func:`load_tfds` first).
      DataError: nothing prepared at the spec, or no such split.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    tfds = import_tfds()
    path = resolve(spec)
    builder = tfds.builder_from_directory(path)
    if _kind(builder, path) != "xc":
        raise ConfigError(f"{path}: raw-text records have no features; use loadimport_tfds() and "
                          "jxmc.data.batches.iterate_batches")
    if split not in builder.info.splits:
        raise DataError(path, None, f"no split {split!r}; it has {', '.join(builder.info.splits)}")
    source = builder.as_data_source(split=split)
    n = len(source)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    z = builder.info.features["indices"].shape[0]
    m = builder.info.features["labels"].shape[0]
    for start in range(0, max(n, 1), batch_size):
        ids = order[start:start + batch_size].tolist()
        recs = source.__getitems__(ids) if ids else []
        indices = np.zeros((batch_size, z), np.int32)
        values = np.zeros((batch_size, z), np.float32)
        labels = np.full((batch_size, m), -1, np.int32)
        valid = np.zeros(batch_size, bool)
        for i, r in enumerate(recs):
            indices[i], values[i], labels[i] = r["indices"], r["values"], r["labels"]
        valid[: len(recs)] = True
        if normalise:
            norms = np.sqrt((values.astype(np.float64) ** 2).sum(axis=1))
            values = (values / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)
        yield Batch(SparseRows(indices, values), labels, valid)


def describe(spec: str) -> Mapping[str, Any]:
    """Path, features, split sizes and metadata of a prepared dataset (for ``info``)."""
    tfds = import_tfds()
    path = resolve(spec)
    builder = tfds.builder_from_directory(path)
    return {"path": path, "features": str(builder.info.features),
            "splits": {k: v.num_examples for k, v in builder.info.splits.items()},
            "metadata": _metadata(builder)}


def main(argv: list[str] | None = None) -> int:
    """``python -m jxmc.data.tfds build NAME --source-dir DIR [...]`` or ``info SPEC``."""
    p = argparse.ArgumentParser(
        prog="python -m jxmc.data.tfds",
        description="Build and inspect jxmc's TFDS datasets (no TensorFlow needed).")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a dataset from downloaded files")
    b.add_argument("name", help=f"an XC set ({', '.join(XC_DATASETS)}) or any name")
    b.add_argument("--source-dir", required=True, help="the folder with the downloaded files")
    b.add_argument("--data-dir", default=None,
                   help=f"TFDS data folder (default {default_data_dir()})")
    b.add_argument("--kind", choices=("xc", "text"), default="xc",
                   help="sparse XC data or raw text")
    b.add_argument("--max-nnz", type=int, default=None, help="cap on non-zeros per row (XC data)")
    b.add_argument("--split-index", type=int, default=0, help="split column of NAME_data.txt sets")
    b.add_argument("--overwrite", action="store_true", help="rebuild if already prepared")
    i = sub.add_parser("info", help="describe a prepared dataset")
    i.add_argument("spec", help="tfds:NAME[:VERSION][@DATA_DIR]")
    sub.add_parser("sources", help="list the XC sets, their sizes and where to download them")
    args = p.parse_args(argv)
    if args.command == "sources":
        print(f"Download a set's \"BoW Features\" from {XC_URL}, unpack it and pass the folder "
              "as --source-dir.")
        print(f"{'NAME':14} {'title':14} {'d':>9} {'L':>9} {'train':>9} {'test':>8}  files")
        for key, info in XC_DATASETS.items():
            print(f"{key:14} {info.title:14} {info.n_features:9d} {info.n_labels:9d} "
                  f"{info.n_train:9d} {info.n_test:8d}  {info.files}")
        print(f"Raw text (--kind text): {download_hint('any', 'text')}.")
        return 0
    from jxmc.errors import JxmcError

    try:
        if args.command == "build":
            spec = build(args.name, source_dir=args.source_dir, data_dir=args.data_dir,
                         kind=args.kind, max_nnz=args.max_nnz, split_index=args.split_index,
                         overwrite=args.overwrite)
            print(spec)
        else:
            import json

            print(json.dumps(describe(args.spec), indent=1))
    except JxmcError as e:
        print(f"jxmc: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
