"""Compute of a train step measured, not guessed: XLA's FLOPs of the compiled step,
the device's measured matmul peak, and the utilisation of one against the other.

* :func:`step_flops`: ``flops`` of XLA's cost analysis of the step as compiled (the
  program that runs; asked for after the first call, so it is a cache hit, not a
  second compilation).  XLA counts the body of a ``while`` loop (``lax.scan``,
  ``fori_loop``) once, so a step that loops over chunks inside (ELMO's flat head) is
  under-counted by its trip count; the encoders and the tree heads have no loop.
* :func:`measured_peak_flops`: the best FLOP/s of a chain of square matmuls on the
  default device in the compute dtype (bf16 on GPU/TPU, f32 on CPU), measured once
  per process (about 0.3 s on a 2-core CPU): the ceiling the utilisation is taken
  against, rather than a datasheet figure that does not fit the machine at hand.
* :func:`utilisation`: model FLOPs utilisation (MFU, Chowdhery et al., "PaLM",
  2022, Appendix B, with XLA's count standing in for the model's) = achieved FLOP/s
  over the measured peak.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp


def step_flops(step_fn, *args) -> float | None:
    """FLOPs of one call ``step_fn(*args)`` by XLA's cost analysis of the compiled
    program, or None where there is none (a step that is not a ``jax.jit`` function,
    nor carries one as ``.jitted`` as :func:`jxmc.sharding.shard_train_step`'s
    does, or a backend without the analysis).  Call it after the step has run once
    with arguments of these shapes: the compilation is then a cache hit.  On a mesh,
    the figure is of one device's share of the partitioned program."""
    jitted = getattr(step_fn, "jitted", step_fn)
    if not hasattr(jitted, "lower"):
        return None
    try:
        cost = jitted.lower(*args).compile().cost_analysis()
    except Exception:  # noqa: BLE001 -- an analysis, never a reason to stop training
        return None
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


@functools.lru_cache(maxsize=4)
def measured_peak_flops(dtype: str | None = None, size: int | None = None,
                        repeats: int = 5) -> float:
    """The device's measured matmul ceiling in FLOP/s: the best of ``repeats`` timed
    calls of a chain of 4 ``size x size`` matmuls in ``dtype`` (default: bf16 on an
    accelerator, f32 on a CPU; ``size`` 1024 on a CPU, 8192 elsewhere), compilation
    apart.  Cached per process."""
    accel = jax.default_backend() in ("gpu", "tpu")
    dtype = jnp.dtype(dtype or ("bfloat16" if accel else "float32"))
    size = size or (8192 if accel else 1024)
    chain = 4

    @jax.jit
    def run(a, b):
        for _ in range(chain):
            a = (a @ b).astype(dtype)
        return a

    a = jnp.ones((size, size), dtype) / size
    b = jnp.eye(size, dtype=dtype)
    run(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return chain * 2.0 * size ** 3 / max(best, 1e-12)


def utilisation(flops_per_step: float | None, steps_per_s: float, peak: float) -> dict:
    """``{"step_flops", "flops_s", "peak_flops_s", "mfu"}``: the achieved FLOP/s of
    ``steps_per_s`` steps of ``flops_per_step`` each and its fraction of ``peak``
    (FLOP/s); ``{}`` when the step's FLOPs are unknown."""
    if not flops_per_step:
        return {}
    achieved = flops_per_step * steps_per_s
    return {"step_flops": flops_per_step, "flops_s": achieved, "peak_flops_s": peak,
            "mfu": achieved / peak if peak > 0 else 0.0}


def describe(u: dict) -> str:
    """The part of an epoch line that :func:`utilisation`'s dict makes: ``"; 2.1
    GFLOP/step (XLA), 0.25 TFLOP/s, MFU 31.0 % of the measured 0.8 TFLOP/s"``, or ``""``."""
    if not u:
        return ""
    return (f"; {u['step_flops'] / 1e9:.3g} GFLOP/step (XLA), {u['flops_s'] / 1e12:.3g} TFLOP/s, "
            f"MFU {100 * u['mfu']:.1f} % of the measured {u['peak_flops_s'] / 1e12:.3g} TFLOP/s")
