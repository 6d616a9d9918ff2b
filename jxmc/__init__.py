"""jxmc: extreme multi-label classification in JAX.

The public names, flat.  Submodules: :mod:`jxmc.data` (formats, TF-IDF,
synthetic data, batches), :mod:`jxmc.metrics`, :mod:`jxmc.models` (the
``--method`` s, each a :class:`Method`; family folders ``tree_linear/``,
``embedding/``, ``transformer/``), :mod:`jxmc.ops` (sparse rows, id sets,
top-k, solvers), :mod:`jxmc.tree` (label trees: one builder behind
:class:`TreeSpec`, beam search, shortlists), :mod:`jxmc.nn` (encoders and
heads), :mod:`jxmc.checkpoint`, :mod:`jxmc.modeldir`.

The names are loaded on first use, so that ``import jxmc`` (and the command
line's start) does not start JAX: the command line first splits the host into
one JAX device per core (:mod:`jxmc.devices`).
"""

from __future__ import annotations

import importlib

from jxmc.version import __version__ as __version__

_NAMES = {
    "Dataset": "jxmc.data.types", "Split": "jxmc.data.types",
    "load_dataset": "jxmc.data.dataset",
    "ConfigError": "jxmc.errors", "DataError": "jxmc.errors", "JxmcError": "jxmc.errors",
    "ModelError": "jxmc.errors",
    "METHODS": "jxmc.models", "get_method": "jxmc.models",
    "Method": "jxmc.models.base", "Prepared": "jxmc.models.base",
    "TreeSpec": "jxmc.tree.build",
    "Batch": "jxmc.types", "SparseRows": "jxmc.types", "TopK": "jxmc.types",
}

__all__ = sorted([*_NAMES, "__version__"])


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jxmc' has no attribute {name!r}")


def __dir__():
    return __all__
