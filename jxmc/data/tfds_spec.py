"""Where a prepared TFDS dataset lives: the ``tfds:`` spec and its folder.

``tfds:NAME[:VERSION][@DATA_DIR]`` (:func:`parse_spec`) names a dataset that
:func:`jxmc.data.tfds_build.build` prepared under ``DATA_DIR/BUILDER/CONFIG/VERSION``
(:func:`resolve`); :func:`import_tfds` is the one place the optional
``tensorflow-datasets`` is imported, with a one-line install hint when it is
missing.  Reading is :mod:`jxmc.data.tfds`.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from jxmc.data.catalog import config_name
from jxmc.errors import ConfigError, DataError

__all__ = ["BUILDERS", "TfdsSpec", "default_data_dir", "import_tfds", "parse_spec", "resolve"]

#: The TFDS builders: sparse XC data and raw text.
BUILDERS = ("xc_repository", "xmc_text")

_INSTALL_HINT = ("reading or building TFDS datasets needs tensorflow-datasets and array-record "
                 "(not TensorFlow): pip install 'jxmc[tfds]'")


def import_tfds():
    """``tensorflow_datasets``, or a one-line :class:`ConfigError` telling how to install it."""
    try:
        import tensorflow_datasets
    except ImportError as e:
        raise ConfigError(f"{_INSTALL_HINT} ({e})") from None
    return tensorflow_datasets


def default_data_dir() -> str:
    """TFDS's default: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


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
