"""XMC data through TensorFlow Datasets (TFDS), stored as array_record, read without TensorFlow.

Two TFDS builders (:mod:`jxmc.data.tfds_builders`) turn downloaded files into
TFDS datasets, and this module reads them back for jxmc:

* ``xc_repository/<set>``: the sparse-feature sets of the Extreme Classification
  Repository (:data:`XC_DATASETS`: Bibtex, Delicious, Mediamill, EURLex-4K,
  Wiki10-31K, AmazonCat-13K, Wiki-500K, Amazon-670K, Amazon-3M), or any folder in
  an XC layout under a name of your choice.  One record per point, in file order::

      indices: i32[z]  feature ids, padding 0
      values:  f32[z]  feature values as in the files (not normalised), padding 0.0
      labels:  i32[m]  positive label ids, ascending, padding -1

  ``z`` and ``m`` are the widest row of the data set (``z`` may be capped,
  :func:`build`'s ``max_nnz``), so records stack straight into a
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

or :func:`build` from Python.  **Training** on a prepared dataset:
``jxmc train --data tfds:bibtex`` (see :func:`load_tfds` for the spec).

**Sources.**  Every ``xc_repository`` set comes from the Extreme Classification
Repository, http://manikvarma.org/downloads/XC/XMLRepository.html (Bhatia et al.,
2016), table "Multi-label Datasets": download the set's "BoW Features" archive
(Google Drive links on that page), unpack it, and pass the folder as
``--source-dir``.  :data:`XC_DATASETS` lists, per set, the published sizes (the
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
download (:func:`download_hint`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from jxmc.data import text
from jxmc.data.dataset import Dataset, Split, _normalise_rows
from jxmc.data.tfidf import TfidfConfig, fit_tfidf
from jxmc.errors import ConfigError, DataError
from jxmc.types import Batch, SparseRows

__all__ = [
    "BUILDERS",
    "XC_DATASETS",
    "XcDataset",
    "build",
    "data_source",
    "download_hint",
    "default_data_dir",
    "iterate_tfds_batches",
    "load_tfds",
    "parse_spec",
    "read_tfds_split",
    "read_tfds_test_split",
    "resolve",
]

XC_URL = "http://manikvarma.org/downloads/XC/XMLRepository.html"
#: Raw text of EURLex-4K, Wiki10-31K, AmazonCat-13K, Wiki-500K, Amazon-670K and Amazon-3M.
TEXT_URL = "https://github.com/yourh/AttentionXML"

#: The TFDS builders: sparse XC data and raw text.
BUILDERS = ("xc_repository", "xmc_text")


class XcDataset(NamedTuple):
    """A data set of the Extreme Classification Repository, as its page lists it.

    Attributes:
      title: the name on the page.
      n_features, n_labels, n_train, n_test: ``d``, ``L`` and the split sizes.
      files: the files of the "BoW Features" download (any recognised layout works).
      summary: what the points and labels are.
    """

    title: str
    n_features: int
    n_labels: int
    n_train: int
    n_test: int
    files: str
    summary: str


#: The XC-repository sets with a predefined ``xc_repository`` config (sizes from
#: http://manikvarma.org/downloads/XC/XMLRepository.html).
XC_DATASETS: dict[str, XcDataset] = {
    "bibtex": XcDataset("Bibtex", 1836, 159, 4880, 2515,
                        "Bibtex_data.txt, bibtex_trSplit.txt, bibtex_tstSplit.txt",
                        "BibTeX entries -> tags (Katakis et al., ECML/PKDD 2008 challenge)"),
    "delicious": XcDataset("Delicious", 500, 983, 12920, 3185,
                           "Delicious_data.txt, delicious_trSplit.txt, delicious_tstSplit.txt",
                           "web pages -> del.icio.us tags (Tsoumakas et al., 2008)"),
    "mediamill": XcDataset("Mediamill", 120, 101, 30993, 12914,
                           "Mediamill_data.txt, mediamill_trSplit.txt, mediamill_tstSplit.txt",
                           "video frames -> semantic concepts (Snoek et al., ACM MM 2006)"),
    "eurlex_4k": XcDataset("EURLex-4K", 5000, 3993, 15539, 3809,
                           "eurlex_train.txt, eurlex_test.txt",
                           "EU legal documents -> EUROVOC descriptors (Loza Mencia et al., 2008)"),
    "wiki10_31k": XcDataset("Wiki10-31K", 101938, 30938, 14146, 6616,
                            "wiki10_train.txt, wiki10_test.txt",
                            "Wikipedia articles -> del.icio.us tags (Zubiaga, 2009)"),
    "amazoncat_13k": XcDataset("AmazonCat-13K", 203882, 13330, 1186239, 306782,
                               "amazonCat_train.txt, amazonCat_test.txt",
                               "Amazon product descriptions -> categories (McAuley et al., 2013)"),
    "wiki_500k": XcDataset("Wiki-500K", 2381304, 501070, 1779881, 769421,
                           "WikipediaLarge-500K_train.txt, WikipediaLarge-500K_test.txt",
                           "Wikipedia articles -> Wikipedia categories"),
    "amazon_670k": XcDataset("Amazon-670K", 135909, 670091, 490449, 153025,
                             "amazon_train.txt, amazon_test.txt",
                             "Amazon product reviews -> co-purchased items (McAuley et al., 2013)"),
    "amazon_3m": XcDataset("Amazon-3M", 337067, 2812281, 1717899, 742507,
                           "amazon-3M_train.txt, amazon-3M_test.txt",
                           "Amazon product descriptions -> co-viewed/co-purchased items "
                           "(McAuley et al., 2015)"),
}

_INSTALL_HINT = ("reading or building TFDS datasets needs tensorflow-datasets and array-record "
                 "(not TensorFlow): pip install 'jxmc[tfds]'")


def _tfds():
    """``tensorflow_datasets``, or a one-line :class:`ConfigError` telling how to install it."""
    try:
        import tensorflow_datasets
    except ImportError as e:
        raise ConfigError(f"{_INSTALL_HINT} ({e})") from None
    return tensorflow_datasets


def _builders():
    _tfds()
    from jxmc.data import tfds_builders

    return tfds_builders


def default_data_dir() -> str:
    """TFDS's default: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def config_name(name: str) -> str:
    """The TFDS config name of a data set name.

    XC-repository names match :data:`XC_DATASETS` ignoring case and punctuation
    (``"EURLex-4K"``, ``"eurlex4k"`` -> ``"eurlex_4k"``; ``"WikipediaLarge-500K"``
    -> ``"wiki_500k"``); other names are lower-cased with ``-``, ``.`` and spaces
    turned into ``_``.

    Raises:
      ConfigError: an empty name, or characters other than letters, digits, ``_``.
    """
    aliases = {_norm(k): k for k in XC_DATASETS}
    aliases |= {_norm(v.title): k for k, v in XC_DATASETS.items()}
    aliases[_norm("WikipediaLarge-500K")] = "wiki_500k"
    if _norm(name) in aliases:
        return aliases[_norm(name)]
    out = re.sub(r"[-. ]", "_", name.strip().lower())
    if not re.fullmatch(r"[a-z0-9_]+", out):
        raise ConfigError(f"data set name {name!r}: use letters, digits, '-', '_' only")
    return out


class TfdsSpec(NamedTuple):
    """A parsed ``tfds:`` spec: ``builder`` may be None (found by :func:`resolve`)."""

    builder: str | None
    config: str
    version: str | None
    data_dir: str


def parse_spec(spec: str) -> TfdsSpec:
    """Parses ``tfds:NAME[:VERSION][@DATA_DIR]``.

    ``NAME`` is a config name (``bibtex``, ``EURLex-4K``, ``debtags``), or
    ``BUILDER/CONFIG`` with ``BUILDER`` in :data:`BUILDERS`.  ``DATA_DIR`` defaults
    to :func:`default_data_dir`.

    Raises:
      ConfigError: not a ``tfds:`` spec, an unknown builder, or a bad name.
    """
    if not spec.startswith("tfds:"):
        raise ConfigError(f"not a TFDS spec: {spec!r}; expected tfds:NAME[:VERSION][@DATA_DIR]")
    body, at, data_dir = spec[len("tfds:"):].partition("@")
    name, _, version = body.partition(":")
    builder, slash, config = name.rpartition("/")
    if not config:
        raise ConfigError(f"{spec!r}: no dataset name; expected tfds:NAME[:VERSION][@DATA_DIR]")
    if slash and builder not in BUILDERS:
        raise ConfigError(f"{spec!r}: unknown builder {builder!r}; known: {', '.join(BUILDERS)}")
    if version and not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise ConfigError(f"{spec!r}: version {version!r} is not MAJOR.MINOR.PATCH")
    data_dir = os.path.expanduser(data_dir) if at and data_dir else default_data_dir()
    return TfdsSpec(builder or None, config_name(config), version or None, data_dir)


def _versions(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    found = [v for v in os.listdir(folder) if re.fullmatch(r"\d+\.\d+\.\d+", v)
             and os.path.isfile(os.path.join(folder, v, "dataset_info.json"))]
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def resolve(spec: str | TfdsSpec) -> str:
    """The folder of a prepared dataset: ``DATA_DIR/BUILDER/CONFIG/VERSION``.

    Without a builder both :data:`BUILDERS` are searched; without a version the
    highest prepared one is taken.

    Raises:
      DataError: nothing prepared there (the message says how to build it), or
        the name is prepared under both builders.
    """
    s = parse_spec(spec) if isinstance(spec, str) else spec
    builders = [s.builder] if s.builder else list(BUILDERS)
    hits = []
    for b in builders:
        versions = _versions(os.path.join(s.data_dir, b, s.config))
        if s.version is not None:
            versions = [v for v in versions if v == s.version]
        if versions:
            hits.append(os.path.join(s.data_dir, b, s.config, versions[-1]))
    if len(hits) > 1:
        raise DataError(s.data_dir, None, f"{s.config!r} is prepared as both "
                        f"{' and '.join(os.path.relpath(h, s.data_dir) for h in hits)}; "
                        "name the builder: tfds:BUILDER/NAME")
    if not hits:
        where = os.path.join(s.data_dir, s.builder or "{" + ",".join(BUILDERS) + "}", s.config)
        kind = " --kind text" if s.builder == "xmc_text" else ""
        version = f" version {s.version}" if s.version else ""
        raise DataError(where, None, f"no prepared TFDS dataset{version}; "
                        f"build it with: python -m jxmc.data.tfds build {s.config}{kind} "
                        f"--source-dir DIR --data-dir {s.data_dir}")
    return hits[0]


def download_hint(name: str, kind: str = "xc") -> str:
    """One line saying where the source files of ``name`` come from.

    ``name`` is any data set name (:func:`config_name`); an XC-repository set is
    named with its title and the files of its download, other names get the
    general instructions of their ``kind`` (``"xc"`` or ``"text"``).
    """
    key = config_name(name)
    if kind == "text":
        return (f"a raw-text folder ({{train,test}}_texts.txt, {{train,test}}_labels.txt); the XC "
                f"sets' raw text is linked from {TEXT_URL} (\"Datasets\")")
    info = XC_DATASETS.get(key)
    if info is None:
        return f"a folder in an XC layout (e.g. train.txt + test.txt); sets from {XC_URL}"
    return (f"{info.title}: the \"BoW Features\" download of {XC_URL}, unpacked "
            f"({info.files})")


def build(name: str, *, source_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
          kind: str = "xc", max_nnz: int | None = None, split_index: int = 0,
          overwrite: bool = False) -> str:
    """Builds a TFDS dataset (array_record) from downloaded files; TensorFlow is not needed.

    Args:
      name: the data set (``"bibtex"``, ``"EURLex-4K"``, any name for other data;
        see :func:`config_name`).  A predefined XC set keeps its name; with
        ``max_nnz`` or ``split_index`` the config is named ``NAME_z{max_nnz}`` /
        ``NAME_split{split_index}`` so that different data never share a folder.
      source_dir: the folder with the source files (see the module docstring).
      data_dir: the TFDS data folder (default :func:`default_data_dir`).
      kind: ``"xc"`` (sparse features, builder ``xc_repository``) or ``"text"``
        (raw text, builder ``xmc_text``).
      max_nnz: ``z``, non-zeros kept per row (XC data; None keeps all).
      split_index: the split column of the ``NAME_data.txt`` layout (XC data).
      overwrite: rebuild even if the dataset is already prepared.

    Returns:
      The spec that reads it back: ``"tfds:BUILDER/CONFIG@DATA_DIR"``, usable as
      ``jxmc train --data SPEC`` and by :func:`load_tfds`.

    Raises:
      ConfigError: an unknown ``kind`` or bad options; tensorflow-datasets missing.
      DataError: the source files are missing or malformed (file and line named).
    """
    if kind not in ("xc", "text"):
        raise ConfigError(f"kind must be 'xc' or 'text', got {kind!r}")
    if max_nnz is not None and max_nnz < 1:
        raise ConfigError(f"max_nnz must be >= 1, got {max_nnz}")
    if split_index < 0:
        raise ConfigError(f"split_index must be >= 0, got {split_index}")
    if kind == "text" and (max_nnz is not None or split_index):
        raise ConfigError("max_nnz and split_index apply to XC (sparse) data only")
    tb = _builders()
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir or default_data_dir())))
    base = config_name(name)
    cname = base + (f"_z{max_nnz}" if max_nnz else "")
    cname += f"_split{split_index}" if split_index else ""
    origin = os.fspath(source_dir)
    if not os.path.isdir(origin):
        raise DataError(origin, None, f"source folder not found; expected {download_hint(base, kind)}")
    if kind == "xc":
        bname = "xc_repository"
        if cname in tb.XcRepository.builder_configs:
            config: Any = cname
        else:
            config = tb.XcRepositoryConfig(
                name=cname, dataset=base if base in XC_DATASETS else None, max_nnz=max_nnz,
                split_index=split_index, description=f"{name} (XC format) from {origin}")
        cls = tb.XcRepository
    else:
        bname, cls = "xmc_text", tb.XmcText
        config = tb.XmcTextConfig(name=cname, description=f"{name} (raw text) from {origin}")
    target = os.path.join(data_dir, bname, cname, str(cls.VERSION))
    if overwrite and os.path.isdir(target):
        import shutil

        shutil.rmtree(target)
    if not os.path.isfile(os.path.join(target, "dataset_info.json")):
        from absl import logging as absl_logging

        level = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)  # not "Using custom data configuration"
        try:
            builder = cls(config=config, data_dir=data_dir, source_dir=os.fspath(source_dir))
        finally:
            absl_logging.set_verbosity(level)
        builder.download_and_prepare(file_format="array_record")
    return f"tfds:{bname}/{cname}@{data_dir}"


def data_source(spec: str) -> dict[str, Any]:
    """Random-access sources of a prepared dataset, ``{"train": ..., "test": ...}``.

    Each is TFDS's ``ArrayRecordDataSource``: ``len(src)``, ``src[i]`` and
    ``src.__getitems__(ids)`` give records as numpy (layouts in the module
    docstring); it plugs into ``grain`` samplers.  No TensorFlow is imported.

    Raises:
      DataError: nothing prepared at the spec; ConfigError: tensorflow-datasets missing.
    """
    tfds = _tfds()
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
    tfds = _tfds()
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
    """Loads a prepared TFDS dataset as a :class:`jxmc.data.dataset.Dataset`.

    ``spec`` is ``tfds:NAME[:VERSION][@DATA_DIR]`` (:func:`parse_spec`), e.g.
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
    if _kind(_tfds().builder_from_directory(path), path) == "text":
        tr_texts, tr_labels = read_tfds_split(spec, "train")
        te_texts, te_labels = read_tfds_split(spec, "test")
        vocab = text.label_vocabulary(tr_labels)
        Ytr, _ = text.encode_labels(tr_labels, vocab, extend_unseen=False)
        Yte, extra = text.encode_labels(te_labels, vocab, extend_unseen=True)
        featurizer, Xtr = fit_tfidf(tr_texts, tfidf or TfidfConfig())
        Xte = featurizer.transform(te_texts)
        return Dataset(s.config, "text", Split(Xtr, Ytr, tr_texts), Split(Xte, Yte, te_texts),
                       label_names=vocab, extra_label_names=extra, featurizer=featurizer,
                       source=spec)
    Xtr, Ytr = read_tfds_split(spec, "train")
    Xte, Yte = read_tfds_split(spec, "test")
    if normalise:
        Xtr, Xte = _normalise_rows(Xtr), _normalise_rows(Xte)
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
    kind = _kind(_tfds().builder_from_directory(path), path)
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
    return (_normalise_rows(X) if data.get("normalise", True) else X), Y, None, None


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
    tfds = _tfds()
    path = resolve(spec)
    builder = tfds.builder_from_directory(path)
    if _kind(builder, path) != "xc":
        raise ConfigError(f"{path}: raw-text records have no features; use load_tfds() and "
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
    tfds = _tfds()
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
