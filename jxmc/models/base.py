"""What every ``--method`` provides, so that the CLI, the model directory and the
benchmarks treat them alike.

A method is a :class:`Method`: a name, a typed ``Config`` dataclass (every field
has a default and a JSON-serialisable type; the CLI fills it from ``--set
key=value`` and records the resolved values in the model directory), and two
functions::

    params = fit(X, Y, config, seed=0, ckpt=None, progress=True)
    topk = predict(params, X, config, k=10)

* ``X``: ``scipy.sparse.csr_matrix`` f32[n, d], rows L2-normalised.
* ``Y``: ``scipy.sparse.csr_matrix`` f32[n, L], 1.0 at positives.
* ``params``: a pytree (nested ``dict``) of numpy arrays, saved with orbax.
* ``ckpt``: an optional :class:`jxmc.checkpoint.TrainCheckpoints`; a method
  saves its state there as it goes and, when called again with the same one,
  resumes from the last saved step.
* ``topk``: :class:`jxmc.types.TopK` of numpy arrays, ``ids: i32[n, k]`` with -1
  where fewer than ``k`` labels are scored, ``scores: f32[n, k]``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

from jxmc.errors import ConfigError

Params = dict[str, Any]


class Method(NamedTuple):
    name: str
    Config: type
    fit: Callable[..., Params]
    predict: Callable[..., Any]
    summary: str = ""


def config_to_dict(config) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type, values: dict[str, Any]):
    """Builds ``cls`` from a dict, converting lists back to tuples.

    Raises:
      ConfigError: a key that ``cls`` does not define.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown option {key!r} for {cls.__module__}.{cls.__name__}; "
                              f"known: {', '.join(sorted(fields))}")
        if isinstance(value, list) and "tuple" in str(hints[key]):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def parse_overrides(cls: type, pairs: list[str], base=None):
    """Applies ``key=value`` strings to a config dataclass, typed by its fields.

    Values are parsed by the field's annotation: ``int``, ``float``, ``bool``
    (true/false/1/0/yes/no), ``str``, or ``tuple[int, ...]`` (comma-separated).

    Raises:
      ConfigError: unknown key, missing ``=``, or a value of the wrong type.
    """
    config = base if base is not None else cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    updates = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in names:
            raise ConfigError(f"unknown option {key!r} for this method; known: {', '.join(sorted(names))}")
        hint = str(hints[key])
        try:
            if hint.startswith("tuple"):
                elem = float if "float" in hint else int
                value = tuple(elem(v) for v in raw.split(",") if v.strip())
            elif "bool" in hint:
                low = raw.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                value = low in ("true", "1", "yes")
            elif "int" in hint and "float" not in hint:
                value = int(raw)
            elif "float" in hint:
                value = float(raw)
            else:
                value = raw
        except ValueError:
            raise ConfigError(f"option {key}: cannot read {raw!r} as {hint}") from None
        updates[key] = value
    return dataclasses.replace(config, **updates)
