"""The method contract: what every ``--method`` provides, so that the CLI, the
model directory, the benchmarks and the contract test treat them alike.

A method is a :class:`Method`, built by :func:`method`::

    params = m.fit(X, Y, config, seed=0, ckpt=None, progress=True, texts=None, mesh=None)
    model = m.prepare(params, config, mesh=None)          # the caller holds it
    topk = m.predict(model, X, config, k=10, texts=None)  # params also accepted

* ``X``: ``scipy.sparse.csr_matrix`` f32[n, d], rows L2-normalised.
* ``Y``: ``scipy.sparse.csr_matrix`` f32[n, L], 1.0 at positives.
* ``texts``: ``list[str]`` of length n, for methods with ``needs_texts``.
* ``mesh``: a :class:`jax.sharding.Mesh`, for methods with ``supports_mesh``; a
  one-device mesh is dropped for the others, a larger one refused.
* ``params``: a pytree (nested ``dict``) of numpy arrays, saved with orbax.
* ``ckpt``: an optional :class:`jxmc.checkpoint.TrainCheckpoints`; a method
  saves its state there as it goes and, when called again with the same one,
  resumes from the last saved step.
* ``model``: a :class:`Prepared` (params laid out once for prediction: device
  arrays, scoring levels); nothing is cached behind the caller's back.
* ``config`` at prediction: the training config with any of the method's
  ``predict_fields`` changed (beam size, prediction batch size, score transform:
  PECOS's prediction parameters); the other fields must be the training ones.
* ``topk``: :class:`jxmc.types.TopK` of numpy arrays, ``ids: i32[n, k]`` with -1
  where fewer than ``k`` labels are scored (their ``scores`` -inf),
  ``scores: f32[n, k]`` sorted in decreasing order along each row.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

from jxmc.errors import ConfigError

Params = dict[str, Any]


class Prepared(NamedTuple):
    """A model laid out for prediction by :attr:`Method.prepare`.

    ``params``: the fitted pytree; ``config``: the config it was prepared under;
    ``mesh``: the mesh it lives on (None: one device); ``state``: what the method
    laid out (its own type; None when it needs nothing).
    """

    params: Params
    config: Any
    mesh: Any = None
    state: Any = None


class Method(NamedTuple):
    """One ``--method``: build it with :func:`method`, which checks the calls."""

    name: str
    Config: type  # a frozen dataclass, every field defaulted and JSON-serialisable
    fit: Callable[..., Params]
    predict: Callable[..., Any]
    prepare: Callable[..., Prepared]
    needs_texts: bool = False
    supports_mesh: bool = False
    predict_fields: tuple[str, ...] = ()
    summary: str = ""


def usable_mesh(m: Method, mesh, what: str):
    """``mesh`` as ``m`` can use it for ``what`` ("training" or "prediction"): itself,
    or None for a one-device mesh a method without mesh support cannot use.

    Raises:
      ConfigError: a mesh of more than one device for a method without mesh support.
    """
    return _mesh_for(m.name, m.supports_mesh, mesh, what)


def _mesh_for(name: str, supports_mesh: bool, mesh, what: str):
    """The mesh to hand on: itself, or None for a one-device mesh a method cannot use.

    Raises:
      ConfigError: a mesh of more than one device for a method without mesh support.
    """
    if mesh is None or supports_mesh:
        return mesh
    if mesh.size > 1:
        raise ConfigError(f"--method {name} {what} does not run on a device mesh; --mesh asks for "
                          f"{mesh.size} devices (leave --mesh out, or use data=1,model=1)")
    return None


def _texts_for(name: str, needs_texts: bool, texts, n: int):
    """The texts to hand on (None for a method that reads none).

    Raises:
      ConfigError: texts missing for a text method, given to one that reads none,
        or not one per row of ``X``.
    """
    if not needs_texts:
        if texts is not None:
            raise ConfigError(f"--method {name} reads the features only; it was given texts "
                              f"(use a text method, or leave the texts out)")
        return None
    if texts is None:
        raise ConfigError(f"--method {name} reads the raw texts; the data has none "
                          f"(use a raw-text dataset folder or a text file)")
    if len(texts) != n:
        raise ConfigError(f"--method {name}: {len(texts)} texts for {n} rows of X")
    return texts


def _prepare_nothing(params, config, mesh=None) -> Prepared:
    return Prepared(params, config, mesh, None)


def method(name: str, Config: type, *, fit: Callable, predict: Callable,
           prepare: Callable | None = None, needs_texts: bool = False,
           supports_mesh: bool = False, predict_fields: tuple[str, ...] = (),
           summary: str = "") -> Method:
    """A :class:`Method` whose ``fit`` / ``prepare`` / ``predict`` check their inputs.

    The functions given are called as::

        fit(X, Y, config, seed=, ckpt=, progress=[, texts=][, mesh=])
        prepare(params, config, mesh=None) -> Prepared     (default: lays out nothing)
        predict(model: Prepared, X, config, k=[, texts=])

    The returned ``predict`` takes params too (prepared first, on ``mesh=`` when
    given), so ``METHOD.predict(params, X, config, k=10, mesh=mesh)`` is the whole
    call for a one-off prediction.

    with ``texts=`` only for ``needs_texts`` methods and ``mesh=`` only for
    ``supports_mesh`` ones.

    Raises (from the returned functions):
      ConfigError: texts or a mesh the method cannot use (or texts it lacks); a
        prediction config that changes a field outside ``predict_fields``.
    """
    unknown = set(predict_fields) - {f.name for f in dataclasses.fields(Config)}
    if unknown:
        raise TypeError(f"{name}: predict_fields {sorted(unknown)} are not fields of its Config")
    raw_fit, raw_predict, raw_prepare = fit, predict, prepare or _prepare_nothing

    def checked_fit(X, Y, config=None, *, seed: int = 0, ckpt=None, progress: bool = True,
                    texts=None, mesh=None) -> Params:
        config = Config() if config is None else config
        kwargs = {}
        texts = _texts_for(name, needs_texts, texts, X.shape[0])
        if needs_texts:
            kwargs["texts"] = texts
        mesh = _mesh_for(name, supports_mesh, mesh, "training")
        if supports_mesh:
            kwargs["mesh"] = mesh
        return raw_fit(X, Y, config, seed=seed, ckpt=ckpt, progress=progress, **kwargs)

    def checked_prepare(params, config=None, mesh=None) -> Prepared:
        if isinstance(params, Prepared):
            return params
        config = Config() if config is None else config
        mesh = _mesh_for(name, supports_mesh, mesh, "prediction")
        return raw_prepare(params, config, mesh)

    def checked_predict(model, X, config=None, *, k: int = 10, texts=None, mesh=None):
        if not isinstance(model, Prepared):
            model = checked_prepare(model, config, mesh)
        elif mesh is not None and mesh is not model.mesh:
            raise ConfigError(f"--method {name}: the model was prepared for another mesh; "
                              f"prepare it on this one")
        config = model.config if config is None else config
        changed = [f.name for f in dataclasses.fields(Config)
                   if f.name not in predict_fields
                   and getattr(config, f.name) != getattr(model.config, f.name)]
        if changed:
            raise ConfigError(f"--method {name}: prediction cannot change {', '.join(changed)} "
                              f"(it may change: {', '.join(predict_fields) or 'nothing'})")
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        kwargs = {}
        texts = _texts_for(name, needs_texts, texts, X.shape[0])
        if needs_texts:
            kwargs["texts"] = texts
        return raw_predict(model, X, config, k=k, **kwargs)

    return Method(name, Config, checked_fit, checked_predict, checked_prepare, needs_texts,
                  supports_mesh, tuple(predict_fields), summary)


def with_predict_fields(Config: type, config, pairs: list[str], predict_fields: tuple[str, ...],
                        name: str):
    """``config`` with ``key=value`` changes to its predict fields (``--set`` of
    ``jxmc predict`` / ``evaluate``).

    Raises:
      ConfigError: a key outside ``predict_fields`` (the message names the allowed
        ones), or a value of the wrong type.
    """
    for pair in pairs:
        key = _current(Config, pair.split("=", 1)[0].strip().replace("-", "_"), None)[0]
        if key not in predict_fields:
            raise ConfigError(f"--set {key}: not a prediction option of --method {name}; "
                              f"allowed: {', '.join(predict_fields) or 'none'}")
    return parse_overrides(Config, pairs, base=config)


def config_to_dict(config) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type, values: dict[str, Any]):
    """Builds ``cls`` from a dict, converting lists back to tuples.

    A config class may map the names older jxmc versions wrote to today's in a
    class attribute ``RENAMED = {"old": "new"}``, and old values of a field to
    today's in ``RENAMED_VALUES = {"field": {"old": "new"}}``, so old model
    directories load.

    Raises:
      ConfigError: a key that ``cls`` does not define.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        key, value = _current(cls, key, value)
        if key not in fields:
            raise ConfigError(f"unknown option {key!r} for {cls.__module__}.{cls.__name__}; "
                              f"known: {', '.join(sorted(fields))}")
        if isinstance(value, list) and "tuple" in str(hints[key]):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _current(cls: type, key: str, value):
    """``(key, value)`` with an old field name or value mapped to today's
    (``cls.RENAMED``, ``cls.RENAMED_VALUES``)."""
    key = getattr(cls, "RENAMED", {}).get(key, key)
    values = getattr(cls, "RENAMED_VALUES", {}).get(key)
    if values and isinstance(value, str):
        value = values.get(value, value)
    return key, value


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
        key, raw = _current(cls, key.strip().replace("-", "_"), raw)
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
