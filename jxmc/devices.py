"""Every CPU core at work: the host as several JAX devices.

XLA runs one CPU computation on one core unless its ops are large enough to
split, and the XR-Linear solver's small sequential steps are not
(:mod:`jxmc.ops.svm_dual`).  Split into ``n`` host devices
(``--xla_force_host_platform_device_count``), the host runs ``n`` computations
at once, and :func:`jxmc.models.tree_linear.rankers.train_level` solves that many chunks of
rankers side by side.  Accelerators are unaffected: the flag only concerns the
host platform.

The flag must be set before JAX starts: the ``jxmc`` command line calls
:func:`use_host_cores` first; from Python, call it before importing ``jax``
(or set ``XLA_FLAGS`` yourself).
"""

from __future__ import annotations

import os
import sys

FLAG = "--xla_force_host_platform_device_count"


def use_host_cores(n: int | None = None) -> bool:
    """Asks XLA for ``n`` host devices (default: the usable CPU cores).

    Does nothing, and returns False, when JAX is already imported, when
    ``XLA_FLAGS`` already sets the device count, or when ``n < 2``.
    """
    if "jax" in sys.modules:
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return False
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not n or n < 2:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={int(n)}".strip()
    return True


def limit_heap_growth(mmap_threshold: int = 1 << 20, arenas: int = 2) -> bool:
    """Asks glibc's allocator to give large freed blocks back to the system.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB)
    and keeps an arena per thread, so the rankers' many short-lived arrays, made
    by the solver's and the levels' threads, stay in the heap and the resident set
    grows by hundreds of MiB.  A fixed threshold of ``mmap_threshold`` bytes (and at
    most ``arenas`` arenas) keeps blocks above it out of the heap.  Same effect as
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_ARENA_MAX`` in the environment.  Returns
    False where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
    ok = mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    mallopt(M_TRIM_THRESHOLD, int(mmap_threshold))
    mallopt(M_ARENA_MAX, int(arenas))
    return ok


def use_compile_cache() -> str | None:
    """Turns on JAX's persistent compilation cache, so a repeated command skips XLA compiles.

    The folder is ``$JXMC_COMPILE_CACHE`` (default ``~/.cache/jxmc/xla``); set it to
    ``off`` to compile afresh (every experiment under ``experiments/`` does, and
    says so in its results, unless it measures the warm cache on purpose).

    Returns:
      the cache folder, or ``None`` when the cache is off.
    """
    where = os.environ.get("JXMC_COMPILE_CACHE",
                           os.path.join(os.path.expanduser("~"), ".cache", "jxmc", "xla"))
    if where.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    # every program, however quick to compile: a run is many small ones (k-means steps,
    # layouts) whose compilations add up to seconds
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return where
