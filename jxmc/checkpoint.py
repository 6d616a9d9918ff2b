"""Every orbax call of jxmc lives here.

Two uses:

* :class:`TrainCheckpoints`: a method's training state saved as it goes
  (``<model-dir>/checkpoints/<step>``), so that re-running the same command on
  the same model directory resumes from the last saved step.  The folder is
  bound to a fingerprint of what it trains (``run.json``: method, config, seed,
  a digest of the data); a resume under another fingerprint is refused.
* :func:`save_params` / :func:`load_params`: the final parameters of a model
  (``<model-dir>/params``), a pytree of arrays.
* :func:`save_sharded` / :func:`restore_sharded`: a pytree of global arrays laid
  out on a device mesh (:mod:`jxmc.sharding`), saved shard by shard and restored
  onto another mesh (more or fewer devices, another layout).

orbax writes each checkpoint into a temporary folder and renames it when
complete, so an interrupted save never leaves a half-written step behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jxmc.errors import ConfigError
from jxmc.fileio import atomic_write

RUN = "run.json"  # the fingerprint of the run a checkpoint folder belongs to

# orbax logs every save at INFO through absl; keep the command line quiet.
logging.getLogger("absl").setLevel(logging.WARNING)


def _to_numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, tree)


def _spread(a: Any) -> bool:
    """A global array on several devices (or processes): saved and restored shard by shard."""
    return isinstance(a, jax.Array) and (len(a.sharding.device_set) > 1
                                         or not a.is_fully_addressable)


def _savable(tree: Any) -> Any:
    """Arrays spread over devices stay global arrays (orbax writes each process's own
    shards; ``np.asarray`` of an array spread across processes raises); the rest numpy."""
    return jax.tree_util.tree_map(lambda a: a if _spread(a) else np.asarray(a), tree)


def _target(like: Any) -> Any:
    """The restore target of ``like``: its shape and dtype, and for a jax array its
    sharding (so the state lands in ``like``'s layout, on any mesh)."""
    def one(a):
        if isinstance(a, jax.Array):
            return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding)
        return jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype)

    return jax.tree_util.tree_map(one, like)


class TrainCheckpoints:
    """Training state checkpoints in one folder, newest ``max_to_keep`` kept.

    Args:
      directory: the folder (created when missing).
      max_to_keep: how many steps to keep.
      fingerprint: a JSON-ready dict naming what is trained (method, config,
        seed, data digest).  Saved steps of another fingerprint are never
        resumed: the constructor refuses them.

    Raises:
      ConfigError: ``directory`` holds saved steps of another fingerprint, or
        saved steps with none recorded (an older jxmc's); the message names what
        differs.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2,
                 fingerprint: dict | None = None):
        self.directory = os.path.abspath(os.fspath(directory))
        os.makedirs(self.directory, exist_ok=True)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False),
        )
        if fingerprint is not None:
            self._bind(json.loads(json.dumps(fingerprint)))

    def _bind(self, fingerprint: dict) -> None:
        path = os.path.join(self.directory, RUN)
        if self.latest_step() is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    recorded = json.load(f)
            except (OSError, ValueError):
                raise ConfigError(f"{self.directory}: checkpoints of an unrecorded run; remove the "
                                  f"folder to train afresh") from None
            if recorded != fingerprint:
                keys = sorted(k for k in set(recorded) | set(fingerprint)
                              if recorded.get(k) != fingerprint.get(k))
                raise ConfigError(f"{self.directory}: the checkpoints continue another run (it "
                                  f"differs in {', '.join(keys)}); rerun with the same options, or "
                                  f"remove the folder to train afresh")
            return
        with atomic_write(path) as f:
            json.dump(fingerprint, f, indent=1, sort_keys=True)

    def latest_step(self) -> int | None:
        """The last completed step, or None."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Saves a pytree of arrays as ``step`` (blocking until it is on disk).

        Global arrays spread over a mesh (:mod:`jxmc.sharding`) are saved shard by
        shard, each process writing its own (orbax's sharded save; every process
        calls ``save``, on a folder they share); the others as numpy arrays."""
        self._manager.save(step, args=ocp.args.StandardSave(_savable(state)), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int | None = None, like: Any = None) -> tuple[int, Any] | None:
        """Returns ``(step, state)`` of ``step`` (default the latest), or None.

        Args:
          like: an optional pytree with the expected structure/shapes/dtypes.  A
            leaf that is a global array spread over devices is restored in its
            layout (each device reads its own slices; the mesh may differ from the
            one that saved); every other leaf comes back as a numpy array.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        target = None if like is None else _target(like)
        state = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        if like is None:
            return step, _to_numpy(state)
        return step, jax.tree_util.tree_map(lambda a, t: a if _spread(t) else np.asarray(a),
                                            state, like)

    def clear(self) -> None:
        """Deletes every checkpoint (after the final model is saved)."""
        self._manager.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def close(self) -> None:
        self._manager.close()


def save_params(directory: str | os.PathLike, params: Any) -> None:
    """Writes a pytree of arrays to ``directory`` (replaced if present)."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory):
        shutil.rmtree(directory)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, _to_numpy(params))
        ckptr.wait_until_finished()


def load_params(directory: str | os.PathLike) -> Any:
    """Reads a pytree written by :func:`save_params` as numpy arrays."""
    directory = os.path.abspath(os.fspath(directory))
    with ocp.StandardCheckpointer() as ckptr:
        return _to_numpy(ckptr.restore(directory))


def save_sharded(directory: str | os.PathLike, tree: Any) -> None:
    """Writes a pytree of global (sharded, possibly multi-process) jax arrays to
    ``directory`` (replaced if present); each process writes its own shards."""
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(os.fspath(directory)), tree, force=True)
        ckptr.wait_until_finished()


def restore_sharded(directory: str | os.PathLike, like: Any) -> Any:
    """Reads :func:`save_sharded`'s tree in the layout of ``like``: a pytree of
    ``jax.ShapeDtypeStruct`` with shardings (:func:`jxmc.sharding.abstract`) or of
    global arrays, on any mesh; each device reads only its own slices."""
    target = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like)
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(os.path.abspath(os.fspath(directory)), target)
