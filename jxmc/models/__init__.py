"""The methods of ``jxmc train --method NAME``.

Each is a :class:`jxmc.models.base.Method`.  Listed here by name (an explicit
table, no registration side effects); a method's module is imported only when
it is asked for, so the command line starts fast.
"""

from __future__ import annotations

import importlib
import importlib.util  # not bound by 'import importlib' alone (plain python, no IPython)

from jxmc.errors import ConfigError
from jxmc.models.base import Method

DEFAULT_METHOD = "xr-linear"  # jxmc train without --method

METHODS: dict[str, str] = {
    "ovr": "jxmc.models.ovr",
    "xr-linear": "jxmc.models.tree_linear.xr_linear",
    "plst": "jxmc.models.embedding.plst",
    "cplst": "jxmc.models.embedding.cplst",
    "leml": "jxmc.models.embedding.leml",
    "cs": "jxmc.models.embedding.cs",
    "parabel": "jxmc.models.tree_linear.parabel",
    "bonsai": "jxmc.models.tree_linear.bonsai",
    "cascadexml": "jxmc.models.transformer.cascadexml",
    "xr-transformer": "jxmc.models.transformer.xr_transformer",
    "x-transformer": "jxmc.models.transformer.x_transformer",
    "lightxml": "jxmc.models.transformer.lightxml",
    "elmo": "jxmc.models.transformer.elmo",
    "attentionxml": "jxmc.models.attentionxml",
}


def available() -> list[str]:
    """Names of the methods whose module is present in this installation."""
    names = []
    for name, module in METHODS.items():
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name``.

    Raises:
      ConfigError: an unknown name.
    """
    if name not in METHODS or importlib.util.find_spec(METHODS[name]) is None:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(available())}")
    return importlib.import_module(METHODS[name]).METHOD
