"""Device meshes and the layouts of jxmc's arrays on them (JAX's own SPMD machinery only).

A mesh has two axes (data x model parallelism as in GSPMD, Xu et al.,
arXiv:2105.04663, 2021; the label tables split like Megatron-LM's vocabulary-parallel
output layer, Shoeybi et al., arXiv:1909.08053, 2019, Section 3):

* ``data`` (size ``D``): batches are split by rows (points), parameters that are
  not label tables are replicated, gradients are summed across it.
* ``model`` (size ``M``): label tables, classifier weights and the tree's per-level
  tables are split by rows (labels / nodes), ``K / M`` rows per device, so a table
  costs ``K * (h + 1) * 4 / M`` bytes per device instead of ``K * (h + 1) * 4``.

Both axes are :attr:`jax.sharding.AxisType.Auto`, chosen deliberately: under
``Auto`` axes ``jax.jit`` partitions the existing train step and prediction
functions from the shardings of their inputs (XLA's SPMD partitioner inserts the
collectives), so the single-device code runs unchanged on a mesh.  ``jax.make_mesh``
defaults to ``Explicit`` axes in jax 0.10, under which ``lax.top_k`` or a row
gather over a sharded axis raise instead.  The one place where the partitioner
would do the wrong thing -- a top-k over labels, which it implements by
all-gathering the whole ``n x L`` score matrix -- is written by hand under
``shard_map`` in :mod:`jxmc.ops.topk`.

Typical use (one host)::

    mesh = make_mesh(parse_mesh("data=2,model=4"))
    params = create_sharded(init_fn, key, mesh=mesh)        # born in their layout
    state = init_train_state(params, tx, seed=0, mesh=mesh)
    step = shard_train_step(make_train_step(loss_fn, tx), state, mesh)
    state, metrics = step(state, host_batch)                # batch split on ``data``

Many hosts (``jax.distributed``).  Every process runs the same program on the same
inputs (jxmc's batches are a function of the seed and the epoch, so every process
can build the global batch; each only transfers its own devices' rows).  Before
anything else touches JAX, each process calls::

    jax.distributed.initialize(coordinator_address="host0:1234",
                               num_processes=P, process_id=i)

or, from the command line, sets ``JXMC_COORDINATOR_ADDRESS=host0:1234``,
``JXMC_NUM_PROCESSES=P`` and ``JXMC_PROCESS_ID=i`` (read by
:func:`initialize_from_env`; on SLURM, Open MPI or Cloud TPU set
``JXMC_COORDINATOR_ADDRESS=auto`` to let JAX detect them).  ``jax.devices()`` then
lists the devices of all processes and :func:`make_mesh` spans them; on CPU the
cross-process collectives are gloo's (``jax_cpu_collectives_implementation``).
Results come back to every host with :func:`to_host`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jxmc.errors import ConfigError

DATA = "data"
MODEL = "model"

Rules = tuple[tuple[str, P], ...]
"""``(regex, PartitionSpec)`` pairs matched (``re.search``) against a leaf's path
``"a/b/0/c"``; the first match gives the leaf's layout, no match means replicated."""

LABEL_TABLES: Rules = ((r"(^|/)heads/level_\d+/(w|b)$", P(MODEL)),)
"""The transformer heads' per-level label tables (:mod:`jxmc.nn.heads`): rows on
``model``.  The paths of optax's moments end the same way, so one rule lays out
parameters and optimizer state alike."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The mesh shape, as read from ``--mesh data=D,model=M``."""

    data: int = 1  # D: the batch is split into D row blocks
    model: int = 1  # M: label tables are split into M row blocks

    @property
    def size(self) -> int:
        return self.data * self.model


def parse_mesh(text: str, n_devices: int | None = None) -> MeshConfig:
    """Reads ``"data=D,model=M"`` (either may be left out: it is then
    ``n_devices`` divided by the other, or 1 when ``n_devices`` is None).

    Raises:
      ConfigError: an unknown axis, a repeated axis, a size that is not a
        positive integer, or a missing axis that the device count cannot fill.
    """
    sizes: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, raw = part.partition("=")
        name = name.strip()
        if not eq or name not in (DATA, MODEL):
            raise ConfigError(f"--mesh expects data=D,model=M, got {text!r}")
        if name in sizes:
            raise ConfigError(f"--mesh names {name!r} twice in {text!r}")
        try:
            sizes[name] = int(raw)
        except ValueError:
            raise ConfigError(f"--mesh {name}={raw!r} is not an integer") from None
        if sizes[name] < 1:
            raise ConfigError(f"--mesh {name} must be >= 1, got {sizes[name]}")
    if not sizes:
        raise ConfigError(f"--mesh expects data=D,model=M, got {text!r}")
    for name, other in ((DATA, MODEL), (MODEL, DATA)):
        if name not in sizes:
            given = sizes[other]
            if n_devices is None:
                sizes[name] = 1
            elif n_devices % given:
                raise ConfigError(f"--mesh {other}={given} does not divide the {n_devices} devices")
            else:
                sizes[name] = n_devices // given
    return MeshConfig(sizes[DATA], sizes[MODEL])


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, model)`` mesh over ``devices`` (default all, of every process),
    both axes :attr:`AxisType.Auto` (see the module docstring).

    Raises:
      ConfigError: ``data * model`` differs from the number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    if config.size != len(devices):
        hint = (" (fake CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count=N, "
                "set before jax is imported)" if devices[0].platform == "cpu" else "")
        raise ConfigError(f"--mesh data={config.data},model={config.model} needs "
                          f"{config.size} devices, there are {len(devices)}{hint}")
    return jax.make_mesh((config.data, config.model), (DATA, MODEL),
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def mesh_from_string(text: str, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """:func:`make_mesh` of :func:`parse_mesh` (the ``--mesh`` flag)."""
    devices = list(jax.devices() if devices is None else devices)
    return make_mesh(parse_mesh(text, len(devices)), devices)


def padded_size(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (rows of a table split ``multiple`` ways)."""
    return -(-n // multiple) * multiple


# ---------------------------------------------------------------------------- layouts


def path_name(path) -> str:
    """``"heads/level_1/w"`` for a ``jax.tree_util`` key path."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (points, the leading axis) split on ``data``, replicated on ``model``."""
    return NamedSharding(mesh, P(DATA))


def label_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (labels or tree nodes, the leading axis) split on ``model``: a
    table ``f32[K, h]`` or a bias ``f32[K]``."""
    return NamedSharding(mesh, P(MODEL))


def scores_sharding(mesh: Mesh) -> NamedSharding:
    """``scores: f32[n, L]`` split on points (``data``) and labels (``model``)."""
    return NamedSharding(mesh, P(DATA, MODEL))


def _check_divisible(name: str, shape: tuple[int, ...], spec: P, mesh: Mesh) -> None:
    if len(spec) > len(shape):
        raise ConfigError(f"{name}: layout {spec} has more axes than its shape {shape}")
    for dim, axes in zip(shape, spec, strict=False):
        if axes is None:
            continue
        split = int(np.prod([mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))]))
        if dim % split:
            raise ConfigError(f"{name}: {dim} rows do not split {split} ways on mesh axis "
                              f"{axes!r}; pad them to {padded_size(dim, split)} "
                              f"(jxmc.sharding.padded_size)")


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules = LABEL_TABLES) -> Any:
    """A ``NamedSharding`` per leaf of ``tree`` (arrays or ``jax.ShapeDtypeStruct``):
    the first of ``rules`` whose regex matches the leaf's path, else replicated.

    Raises:
      ConfigError: a matched leaf whose split dimension is not a multiple of
        the mesh axis size (JAX needs even shards; pad the table).
    """
    compiled = [(re.compile(rx), spec) for rx, spec in rules]

    def one(path, leaf):
        name = path_name(path)
        shape = tuple(np.shape(leaf))
        for rx, spec in compiled:
            if rx.search(name) and len(shape) > 0:
                _check_divisible(name, shape, spec, mesh)
                return NamedSharding(mesh, spec)
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, tree)


def abstract(tree: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves carrying ``shardings`` (an orbax restore target)."""
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=s), tree, shardings)


def put(tree: Any, shardings: Any) -> Any:
    """Host arrays (the same global value in every process) to global arrays laid out
    as ``shardings``; each process transfers only the slices of its own devices."""

    def one(a, s):
        if isinstance(a, jax.Array) and a.sharding == s:
            return a
        if isinstance(a, jax.Array):  # a global array in another layout: reshard on device
            return jax.jit(lambda x: x, out_shardings=s)(a)
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, s, lambda idx, a=a: a[idx])

    return jax.tree_util.tree_map(one, tree, shardings)


def shard_tree(tree: Any, mesh: Mesh, rules: Rules = LABEL_TABLES) -> Any:
    """:func:`put` of ``tree`` in the layout :func:`tree_shardings` gives it."""
    return put(tree, tree_shardings(tree, mesh, rules))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """A host batch (every leaf ``[n, ...]``, the same global batch in every process)
    split by rows on ``data``.

    Raises:
      ConfigError: ``n`` is not a multiple of the ``data`` axis size.
    """
    D = mesh.shape[DATA]
    for leaf in jax.tree_util.tree_leaves(batch):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] % D:
            raise ConfigError(f"a batch of {np.shape(leaf)[:1]} rows does not split across "
                              f"data={D}; use a batch size that is a multiple of {D}")
    return put(batch, jax.tree_util.tree_map(lambda _: batch_sharding(mesh), batch))


def create_sharded(init_fn: Callable, *args, mesh: Mesh, rules: Rules = LABEL_TABLES) -> Any:
    """``init_fn(*args)`` computed directly in its sharded layout: the output shapes
    from ``jax.eval_shape``, their layouts from :func:`tree_shardings`, then one
    ``jax.jit(init_fn, out_shardings=...)``, so no device ever holds a whole table
    (big_vision's pattern).  ``init_fn`` must be traceable (``jnp``, not numpy).
    """
    shapes = jax.eval_shape(init_fn, *args)
    return jax.jit(init_fn, out_shardings=tree_shardings(shapes, mesh, rules))(*args)


def init_train_state(params: Any, tx, seed: int, *, mesh: Mesh, rules: Rules = LABEL_TABLES):
    """A :class:`jxmc.train.step.TrainState` laid out on ``mesh``: ``params`` (host
    or global arrays) placed by ``rules``, the optimizer state created by a jitted
    ``tx.init`` directly in the same layout (optax moments share their parameters'
    paths, so the same rules place them)."""
    from jxmc.train.step import init_state

    params = shard_tree(params, mesh, rules)
    return create_sharded(lambda p: init_state(p, tx, seed), params, mesh=mesh, rules=rules)


def shardings_of(tree: Any) -> Any:
    """The ``.sharding`` of every leaf of a tree of global arrays."""
    return jax.tree_util.tree_map(lambda a: a.sharding, tree)


def shard_train_step(step_fn: Callable, state: Any, mesh: Mesh) -> Callable:
    """``step(state, host_batch) -> (state, metrics)`` on ``mesh``.

    ``step_fn`` is :func:`jxmc.train.step.make_train_step`'s (or any
    ``(state, batch) -> (state, metrics)``); it is jitted again with the state's
    layout pinned as input and output (so the donated buffers are updated in
    place and the layout never drifts), the batch split on ``data`` and the
    metrics replicated.  XLA partitions the unchanged step: label-table rows stay
    on their ``model`` shard (shortlist gathers become masked local gathers and an
    all-reduce of ``n/D x c x h``), gradients of replicated parameters are summed
    over ``data``.
    """
    state_sh = shardings_of(state)
    jitted = jax.jit(step_fn, in_shardings=(state_sh, batch_sharding(mesh)),
                     out_shardings=(state_sh, replicated(mesh)), donate_argnums=0)

    def step(state, batch):
        return jitted(state, shard_batch(batch, mesh))

    step.jitted = jitted
    return step


def shard_predict_step(fn: Callable, params: Any, mesh: Mesh) -> Callable:
    """``predict(params, host_batch) -> outputs`` on ``mesh``: ``fn(params, batch)``
    jitted with ``params`` kept in their layout, the batch split on ``data`` and every
    output (leading axis ``n``) split on ``data``."""
    jitted = jax.jit(fn, in_shardings=(shardings_of(params), batch_sharding(mesh)),
                     out_shardings=batch_sharding(mesh))

    def predict(params, batch):
        return jitted(params, shard_batch(batch, mesh))

    predict.jitted = jitted
    return predict


def to_host(tree: Any) -> Any:
    """numpy copies of the global values of a tree of arrays, in every process."""
    from jax.experimental import multihost_utils

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree_util.tree_map(one, tree)


def device_bytes(tree: Any) -> dict[int, int]:
    """Bytes that each (addressable) device holds of a tree of global arrays,
    ``{device id: bytes}``: the sum of its shards' sizes."""
    out: dict[int, int] = {}
    for leaf in jax.tree_util.tree_leaves(tree):
        for shard in leaf.addressable_shards:
            out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------- many hosts


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None, *, timeout_s: int = 300) -> None:
    """``jax.distributed.initialize`` (``coordinator_address="auto"`` or None lets JAX
    detect SLURM / Open MPI / Cloud TPU).  Call it before any other JAX call.

    Raises:
      ConfigError: a malformed address, or a coordinator that cannot be reached
        within ``timeout_s`` seconds.
    """
    if coordinator_address == "auto":
        coordinator_address = None
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=timeout_s)
    except (RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"jax.distributed.initialize failed: {first}") from None


def initialize_from_env(environ: dict | None = None) -> bool:
    """:func:`initialize_distributed` from ``JXMC_COORDINATOR_ADDRESS``,
    ``JXMC_NUM_PROCESSES`` and ``JXMC_PROCESS_ID``; nothing when the address is unset.
    Returns whether it initialised.

    Raises:
      ConfigError: a count or id that is not an integer.
    """
    env = os.environ if environ is None else environ
    address = env.get("JXMC_COORDINATOR_ADDRESS")
    if not address:
        return False
    values = {}
    for key in ("JXMC_NUM_PROCESSES", "JXMC_PROCESS_ID"):
        raw = env.get(key)
        try:
            values[key] = None if raw in (None, "") else int(raw)
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is not an integer") from None
    if address != "auto" and None in values.values():
        raise ConfigError("JXMC_COORDINATOR_ADDRESS needs JXMC_NUM_PROCESSES and JXMC_PROCESS_ID")
    initialize_distributed(address, values["JXMC_NUM_PROCESSES"], values["JXMC_PROCESS_ID"],
                           timeout_s=int(env.get("JXMC_DISTRIBUTED_TIMEOUT", "300")))
    return True
