"""The epoch loop: progress bars, a checkpoint after every epoch, resume.

Checkpoints hold ``{"epoch": i32[], "leaves": {"00000": ..., ...}}``: the
flattened :class:`jxmc.train.step.TrainState` (so optax's named tuples need
no special handling) and the number of epochs completed, counted over every
phase of a method.  Re-running with the same checkpoint folder restores the
latest one and continues from the next epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import jax
import numpy as np
from tqdm.auto import tqdm

from jxmc.train import compute


def _leaf(a):
    """A state leaf as saved: a global array spread over a mesh as it is (sharded save,
    :meth:`jxmc.checkpoint.TrainCheckpoints.save`), anything else as numpy."""
    if isinstance(a, jax.Array) and (len(a.sharding.device_set) > 1 or not a.is_fully_addressable):
        return a
    return np.asarray(a)


def save_state(ckpt, epoch: int, state) -> None:
    """Saves ``state`` after ``epoch`` epochs; on a mesh, shard by shard (every process
    calls it: each writes its own shards, so nothing is gathered to a host)."""
    leaves = jax.tree_util.tree_leaves(state)
    ckpt.save(epoch, {"epoch": np.asarray(epoch, np.int32),
                      "leaves": {f"{i:05d}": _leaf(a) for i, a in enumerate(leaves)}})


def restore_state(ckpt, like):
    """``(epochs_done, state)`` from the latest checkpoint, or ``(0, like)``.

    The leaves of ``like`` spread over a mesh come back in their layout on that mesh
    (whatever mesh saved them: one device, another shape or another process count);
    the others as numpy arrays."""
    if ckpt is None or ckpt.latest_step() is None:
        return 0, like
    leaves, treedef = jax.tree_util.tree_flatten(like)
    target = {"epoch": np.asarray(0, np.int32),
              "leaves": {f"{i:05d}": _leaf(a) for i, a in enumerate(leaves)}}
    _, saved = ckpt.restore(like=target)
    restored = [saved["leaves"][f"{i:05d}"] for i in range(len(leaves))]
    return int(saved["epoch"]), jax.tree_util.tree_unflatten(treedef, restored)


def run_epochs(state, step_fn: Callable, batches: Callable[[int], Iterable], *,
               n_batches: int, epochs: tuple[int, int], ckpt=None, ckpt_offset: int = 0,
               progress: bool = True, desc: str = "train", points: int = 0):
    """Runs epochs ``epochs[0] .. epochs[1] - 1`` of one phase.

    Args:
      state: the train state; step_fn: the jitted step.
      batches: ``epoch -> iterable of batches`` (fixed shapes).
      n_batches: batches per epoch (for the bar).
      ckpt: a :class:`jxmc.checkpoint.TrainCheckpoints`; after each epoch the
        state is saved as step ``ckpt_offset + epoch + 1``.
      points: training points (for the throughput shown).
      progress: show the progress bar (the epoch line below is printed either way).

    Prints a line per epoch: the loss, the epoch's seconds and sequences per second,
    with the first step (which compiles the step in a phase's first epoch) apart,
    and the step's FLOPs (XLA's cost analysis of the compiled step), the FLOP/s
    achieved after the first step and their fraction of the device's measured
    matmul peak (:mod:`jxmc.train.compute`).

    Returns:
      ``(state, last metrics as floats)``; the metrics add ``epoch_s`` (seconds of
      the last epoch), ``seq_s`` (its training points per second),
      ``first_step_s`` (its first step, compilation included) and, where XLA
      reports the step's FLOPs, ``step_flops``, ``flops_s``, ``peak_flops_s`` and
      ``mfu`` (:func:`jxmc.train.compute.utilisation`).
    """
    metrics = {}
    flops = None
    for epoch in range(*epochs):
        bar = tqdm(total=n_batches, desc=f"{desc} epoch {epoch + 1}/{epochs[1]}",
                   disable=not progress, leave=False, mininterval=2.0)
        t0 = t1 = time.perf_counter()
        first = 0.0
        for i, batch in enumerate(batches(epoch)):
            state, m = step_fn(state, batch)
            if i == 0:
                jax.block_until_ready(m)
                first = time.perf_counter() - t0
                if flops is None:  # the step has compiled: its analysis is a cache hit
                    flops = compute.step_flops(step_fn, state, batch) or 0.0
                t1 = time.perf_counter()
            if i % 10 == 0 or i == n_batches - 1:
                metrics = {k: float(v) for k, v in m.items()}
                rate = points * (i + 1) / n_batches / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", seq_s=f"{rate:.1f}")
            bar.update(1)
        metrics = {k: float(v) for k, v in m.items()}
        seconds = time.perf_counter() - t0
        rest = time.perf_counter() - t1  # the steps after the first (the analysis left out)
        steady = points * (n_batches - 1) / n_batches / max(rest, 1e-9)
        steps_s = (n_batches - 1) / rest if n_batches > 1 and rest > 0 else 1 / max(first, 1e-9)
        use = (compute.utilisation(flops, steps_s, compute.measured_peak_flops())
               if flops else {})
        metrics.update(epoch_s=seconds, seq_s=points / max(seconds, 1e-9), first_step_s=first,
                       **use)
        bar.close()
        # the epoch line, with or without the bar (``progress``): what a log keeps
        print(f"{desc}: epoch {epoch + 1}/{epochs[1]} loss {metrics['loss']:.4f}, "
              f"{seconds:.1f} s, {metrics['seq_s']:.1f} seq/s (first step {first:.1f} s, "
              f"compilation included; {steady:.1f} seq/s after it){compute.describe(use)}",
              flush=True)
        if ckpt is not None:
            save_state(ckpt, ckpt_offset + epoch + 1, state)
    return state, metrics
