"""Building a TFDS dataset (array_record) from downloaded files: :func:`build`.

The write side of :mod:`jxmc.data.tfds` (which documents the record layout, the
sources and ``python -m jxmc.data.tfds build``): picks the builder of
:mod:`jxmc.data.tfds_builders` and its config, and prepares the dataset under
``DATA_DIR/BUILDER/CONFIG/VERSION`` (:func:`jxmc.data.tfds_spec.resolve`).
"""

from __future__ import annotations

import os
from typing import Any

from jxmc.data.catalog import XC_DATASETS, config_name, download_hint
from jxmc.data.tfds_spec import default_data_dir, import_tfds
from jxmc.errors import ConfigError, DataError

__all__ = ["build"]


def _builders():
    import_tfds()
    from jxmc.data import tfds_builders

    return tfds_builders


def build(name: str, *, source_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
          kind: str = "xc", max_nnz: int | None = None, split_index: int = 0,
          overwrite: bool = False) -> str:
    """Builds a TFDS dataset (array_record) from downloaded files; TensorFlow is not needed.

    Args:
      name: the data set (``"bibtex"``, ``"EURLex-4K"``, any name for other data;
        see :func:`jxmc.data.catalog.config_name`).  A predefined XC set keeps its
        name; with ``max_nnz`` or ``split_index`` the config is named
        ``NAME_z{max_nnz}`` / ``NAME_split{split_index}`` so that different data
        never share a folder.
      source_dir: the folder with the source files (see :mod:`jxmc.data.tfds`).
      data_dir: the TFDS data folder (default :func:`jxmc.data.tfds_spec.default_data_dir`).
      kind: ``"xc"`` (sparse features, builder ``xc_repository``) or ``"text"``
        (raw text, builder ``xmc_text``).
      max_nnz: ``z``, non-zeros kept per row (XC data; None keeps all).
      split_index: the split column of the ``NAME_data.txt`` layout (XC data).
      overwrite: rebuild even if the dataset is already prepared.

    Returns:
      The spec that reads it back: ``"tfds:BUILDER/CONFIG@DATA_DIR"``, usable as
      ``jxmc train --data SPEC`` and by :func:`jxmc.data.tfds.load_tfds`.

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
