"""jxmc: extreme multi-label classification in JAX.

The public names, flat.  Submodules: :mod:`jxmc.data` (formats, TF-IDF,
synthetic data, batches), :mod:`jxmc.metrics`, :mod:`jxmc.models` (the
``--method`` s), :mod:`jxmc.ops`, :mod:`jxmc.checkpoint`, :mod:`jxmc.modeldir`.

The names are loaded on first use, so that ``import jxmc`` (and the command
line's start) does not start JAX: the command line first splits the host into
one JAX device per core (:mod:`jxmc.devices`).
"""

from __future__ import annotations

import importlib

from jxmc.version import __version__ as __version__

_NAMES = {
    "Dataset": "jxmc.data.dataset", "Split": "jxmc.data.dataset",
    "load_dataset": "jxmc.data.dataset",
    "ConfigError": "jxmc.errors", "DataError": "jxmc.errors", "JxmcError": "jxmc.errors",
    "ModelError": "jxmc.errors",
    "get_method": "jxmc.models",
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
