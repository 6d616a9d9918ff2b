"""Every CPU core at work: the host as several JAX devices.

XLA runs one CPU computation on one core unless its ops are large enough to
split, and the XR-Linear solver's small sequential steps are not
(:mod:`jxmc.ops.svm_dual`).  Split into ``n`` host devices
(``--xla_force_host_platform_device_count``), the host runs ``n`` computations
at once, and :func:`jxmc.models.rankers.train_level` solves that many chunks of
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
