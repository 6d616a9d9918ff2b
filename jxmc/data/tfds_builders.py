"""TensorFlow Datasets builders for XMC data: ``xc_repository`` and ``xmc_text``.

Build with :func:`jxmc.data.tfds_build.build`, read with :mod:`jxmc.data.tfds`
(``load_tfds``, ``data_source``), which documents the sources, the record layout
and the download instructions; the source folders are read by
:func:`jxmc.data.sources.read_xc_source` and :func:`jxmc.data.text.read_text_split`.
Importing this module needs ``tensorflow-datasets`` and ``array-record``
(``pip install 'jxmc[tfds]'``), not TensorFlow: building with
``file_format="array_record"`` and reading with ``tfds.data_source`` run on
numpy alone.

The builders are not added to TFDS's registry (``skip_registration``): a prepared
dataset describes itself (``features.json``, ``metadata.json``), so
``tfds.data_source("xc_repository/bibtex", data_dir=...)`` and
``tfds.builder_from_directory`` read it without jxmc.  Building needs the
source files at construction time, because the fixed record widths (``z``
non-zeros, ``m`` labels) are measured on the data: pass ``source_dir=`` to the
constructor (default ``<data_dir>/downloads/manual/<config name>``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import tensorflow_datasets as tfds
from etils import epath

from jxmc.data import text, xc
from jxmc.data.catalog import XC_DATASETS, XC_URL
from jxmc.data.sources import XcSource, read_xc_source
from jxmc.errors import DataError
from jxmc.fileio import find_file
from jxmc.ops.ids import csr_to_padded
from jxmc.ops.sparse import csr_to_ell, max_row_nnz

__all__ = [
    "XcRepository",
    "XcRepositoryConfig",
    "XmcText",
    "XmcTextConfig",
]

XC_CITATION = """\
@misc{Bhatia16,
  author = {Bhatia, K. and Dahiya, K. and Jain, H. and Kar, P. and Mittal, A. and
            Prabhu, Y. and Varma, M.},
  title = {The extreme classification repository: Multi-label datasets and code},
  url = {http://manikvarma.org/downloads/XC/XMLRepository.html},
  year = {2016}
}"""

XC_INSTRUCTIONS = f"""\
Download the dataset's "BoW Features" archive from the Extreme Classification
Repository ({XC_URL}, table "Multi-label Datasets"), unpack it, and pass the
folder that holds its files as `source_dir` (default:
<data_dir>/downloads/manual/<config name>). Files may stay .gz/.xz/.bz2 compressed.
Recognised layouts, tried in this order:
  train.txt + test.txt                       (XC single-file format, header "n d L")
  trn_X_Xf.txt + trn_X_Y.txt + tst_X_Xf.txt + tst_X_Y.txt   (XC split-file format)
  PREFIX_train.txt + PREFIX_test.txt         (e.g. eurlex_train.txt, amazon_test.txt)
  NAME_data.txt + NAME_trSplit.txt + NAME_tstSplit.txt   (Bibtex, Delicious, Mediamill:
      all points in one file; each column of the split files lists the 1-based rows
      of one random train/test split; config field `split_index` picks the column)
"""

TEXT_INSTRUCTIONS = """\
A folder in the raw-text layout of AttentionXML / LightXML / CascadeXML:
{train,test}_texts.txt (one document per line) and {train,test}_labels.txt
(space-separated label names, aligned line by line), each plain or .gz/.xz/.bz2.
Pass it as `source_dir` (default: <data_dir>/downloads/manual/<config name>).
"""


# ----------------------------------------------------------------------------- xc_repository

# TFDS finds a builder's file with ``importlib_resources`` for classes in a package, a
# module that tensorflow-datasets 4.9 imports but declares only for Python < 3.9; naming
# the file here avoids that lookup (the builders need no checksums file next to them).
_CODE_PATH = epath.Path(os.path.abspath(__file__))


@dataclasses.dataclass
class XcRepositoryConfig(tfds.core.BuilderConfig):
    """A data set in XC sparse format.

    Attributes:
      dataset: the key of :data:`jxmc.data.catalog.XC_DATASETS` whose published sizes
        are checked (a warning when they differ); None for any other XC-format set.
      max_nnz: ``z``, non-zeros kept per row; None keeps every one (``z`` = the
        widest row of train and test).  Longer rows keep their ``z`` entries of
        largest magnitude (:func:`jxmc.ops.sparse.csr_to_ell`).
      split_index: the split column for the ``NAME_data.txt`` layout.
    """

    dataset: str | None = None
    max_nnz: int | None = None
    split_index: int = 0


def _xc_configs() -> list[XcRepositoryConfig]:
    return [XcRepositoryConfig(name=key, dataset=key, description=f"{info.title}: {info.summary}")
            for key, info in XC_DATASETS.items()]


def _default_source_dir(data_dir: str | None, config_name: str) -> str:
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    return os.path.join(os.path.expanduser(root), "downloads", "manual", config_name)


def _prepared_info(builder) -> tuple[tfds.features.FeatureConnector, dict] | None:
    """Features and metadata of an already prepared dataset at the builder's path."""
    path = os.fspath(builder.data_path)
    if not os.path.isfile(os.path.join(path, "features.json")):
        return None
    features = tfds.features.FeatureConnector.from_config(path)
    meta_path = os.path.join(path, "metadata.json")
    metadata = {}
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            metadata = json.load(f)
    return features, metadata


class XcRepository(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Extreme Classification Repository data sets as padded sparse rows.

    One record per point, in file order (``disable_shuffling``)::

        indices: i32[z]  feature ids, padding 0
        values:  f32[z]  feature values as in the files (not normalised), padding 0.0
        labels:  i32[m]  positive label ids, ascending, padding -1

    ``z`` and ``m`` are the widest row of train and test (``z`` capped by
    ``max_nnz``); ``metadata.json`` records ``n_features``, ``n_labels``,
    ``max_nnz``, ``max_labels``, ``truncated_rows``, the source layout and files.

    Args (constructor, besides TFDS's ``data_dir``, ``config``, ``version``):
      source_dir: the unpacked download (see ``MANUAL_DOWNLOAD_INSTRUCTIONS``);
        read when the builder is constructed, unless the dataset is already prepared.
    """

    name = "xc_repository"
    code_path = _CODE_PATH
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Padded sparse rows (indices, values) and padded label ids."}
    BUILDER_CONFIGS = _xc_configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = XC_INSTRUCTIONS

    def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
        config = kwargs.get("config")
        name = config if isinstance(config, str) else getattr(config, "name", None)
        self._source_dir = os.fspath(source_dir) if source_dir is not None else (
            _default_source_dir(kwargs.get("data_dir"), (name or "").partition(":")[0]))
        self._source: XcSource | None = None
        super().__init__(**kwargs)

    def source(self) -> XcSource:
        """The parsed source files (read once, on first use)."""
        if self._source is None:
            cfg = self.builder_config
            self._source = read_xc_source(self._source_dir, split_index=cfg.split_index)
            if cfg.dataset is not None:
                _check_published(cfg.dataset, self._source, self._source_dir)
        return self._source

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        prepared = _prepared_info(self)
        if prepared is not None:
            features, metadata = prepared
        else:
            src = self.source()
            widest = max(max_row_nnz(src.train.X), max_row_nnz(src.test.X))
            z = widest if cfg.max_nnz is None else min(int(cfg.max_nnz), widest)
            m = max(max_row_nnz(src.train.Y), max_row_nnz(src.test.Y))
            features = tfds.features.FeaturesDict({
                "indices": tfds.features.Tensor(shape=(z,), dtype=np.int32,
                                                doc="feature ids, padding 0"),
                "values": tfds.features.Tensor(shape=(z,), dtype=np.float32,
                                               doc="feature values as in the source, padding 0.0"),
                "labels": tfds.features.Tensor(shape=(m,), dtype=np.int32,
                                               doc="positive label ids, ascending, padding -1"),
            })
            truncated = int(sum((np.diff(s.X.indptr) > z).sum() for s in (src.train, src.test)))
            metadata = {
                "kind": "xc", "dataset": cfg.dataset, "n_features": int(src.train.n_features),
                "n_labels": int(src.train.n_labels), "max_nnz": int(z), "max_labels": int(m),
                "truncated_rows": truncated, "source_layout": src.layout,
                "source_files": list(src.files), "split_index": int(cfg.split_index),
                "values": "as in the source files (not normalised)",
            }
        return tfds.core.DatasetInfo(
            builder=self, description=cfg.description or "An XC-format sparse data set.",
            features=features, homepage=XC_URL, citation=XC_CITATION,
            disable_shuffling=True, metadata=tfds.core.MetadataDict(metadata))

    def _split_generators(self, dl_manager):
        del dl_manager  # the source is read from source_dir (its widths fix the features)
        src = self.source()
        return {"train": self._generate_examples(src.train),
                "test": self._generate_examples(src.test)}

    def _generate_examples(self, split: xc.XCData, chunk: int = 4096) -> Iterator[tuple[int, dict]]:
        z = self.info.features["indices"].shape[0]
        m = self.info.features["labels"].shape[0]
        Y = sp.csr_matrix(split.Y != 0, dtype=np.float32)
        for start in range(0, split.X.shape[0], chunk):
            rows = slice(start, min(start + chunk, split.X.shape[0]))
            x = csr_to_ell(split.X[rows], z)
            labels = csr_to_padded(Y[rows], m)
            for i in range(x.indices.shape[0]):
                yield start + i, {"indices": x.indices[i], "values": x.values[i],
                                  "labels": labels[i]}


def _check_published(dataset: str, src: XcSource, folder: str) -> None:
    info = XC_DATASETS.get(dataset)
    if info is None:
        return
    got = (src.train.n_features, src.train.n_labels, src.train.X.shape[0], src.test.X.shape[0])
    want = (info.n_features, info.n_labels, info.n_train, info.n_test)
    if got != want:
        warnings.warn(f"{folder}: (d, L, n_train, n_test) = {got}, but the XC repository lists "
                      f"{want} for {info.title}; building from the files as they are", stacklevel=3)


# ----------------------------------------------------------------------------- xmc_text


@dataclasses.dataclass
class XmcTextConfig(tfds.core.BuilderConfig):
    """A raw-text data set; ``name`` is free (e.g. ``"eurlex_4k"``, ``"debtags"``)."""


class XmcText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Raw-text XMC data (AttentionXML / LightXML / CascadeXML layout).

    One record per point, in file order::

        text:   the document (UTF-8; read back as bytes)
        labels: its label names, in file order (a sequence of strings)

    Label ids are not stored: :func:`jxmc.data.tfds.load_tfds` rebuilds them as
    :func:`jxmc.data.dataset.load_dataset` does (sorted training names; test-only
    names appended) and fits TF-IDF on the training texts.

    Args (constructor, besides TFDS's ``data_dir``, ``config``, ``version``):
      source_dir: the raw-text folder (default ``<data_dir>/downloads/manual/<name>``).
    """

    name = "xmc_text"
    code_path = _CODE_PATH
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Texts and label names."}
    BUILDER_CONFIGS = []
    MANUAL_DOWNLOAD_INSTRUCTIONS = TEXT_INSTRUCTIONS

    def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
        config = kwargs.get("config")
        name = config if isinstance(config, str) else getattr(config, "name", None)
        self._source_dir = os.fspath(source_dir) if source_dir is not None else (
            _default_source_dir(kwargs.get("data_dir"), (name or "").partition(":")[0]))
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description or "A raw-text XMC data set.",
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(doc="the document, one line of the source"),
                "labels": tfds.features.Sequence(tfds.features.Text(), doc="label names"),
            }),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict({"kind": "text"}))

    def _split(self, split: str) -> tuple[list[str], list[list[str]]]:
        folder = self._source_dir
        paths = [find_file(folder, f"{split}_{part}.txt") for part in ("texts", "labels")]
        if not all(paths):
            raise DataError(folder, None, f"{split}_texts.txt / {split}_labels.txt not found (a "
                            "raw-text folder holds {train,test}_texts.txt and "
                            "{train,test}_labels.txt)")
        return text.read_text_split(*paths)

    def _split_generators(self, dl_manager):
        del dl_manager
        splits = {s: self._split(s) for s in ("train", "test")}
        return {s: self._generate_examples(*splits[s]) for s in splits}

    def _generate_examples(self, texts: list[str], labels: list[list[str]]):
        for i, (doc, names) in enumerate(zip(texts, labels, strict=True)):
            yield i, {"text": doc, "labels": names}
