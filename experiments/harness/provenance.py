"""Where a figure comes from: the machine, the date, the commit, the compile cache.

Every experiment under ``experiments/`` records :func:`record` beside its
figures and refuses to run on a tree with uncommitted changes (outside
``experiments/results/``, which the experiments themselves write) unless told
``--allow-dirty``, so that every figure in ``experiments/results/`` names a
commit that produces it.  Standard library only: imported by runners in both
Python environments.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = "experiments/results/"

# The persistent compilation cache of every `jxmc` command an experiment starts:
# ``off`` (cold: each process compiles from scratch), unless an experiment
# measures the warm state on purpose and says so.
COLD = "off"


def read_text(path: str) -> str:
    """The file's text, or '' when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def git(*args: str) -> str:
    """``git -C REPO args...``'s stdout, stripped ('' where git fails)."""
    try:
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def dirty_paths() -> list[str]:
    """Tracked files with uncommitted changes, ``experiments/results/`` left out."""
    try:  # not git(): its strip() would eat the first line's status column
        out = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    paths = [line[3:] for line in out.splitlines() if len(line) > 3]
    return [p for p in paths if not p.startswith(RESULTS)]


def git_state() -> dict:
    """``{"commit": full sha, "dirty": bool, "dirty_paths": [...]}``.

    Where the tree is no git checkout (a copy of the working tree on a lent
    accelerator), the commit is ``$JXMC_COMMIT`` as the caller stated it, with
    ``"commit_source": "JXMC_COMMIT"`` and ``dirty`` unknown (None); else ``"unknown"``."""
    commit = git("rev-parse", "HEAD")
    if not commit:
        stated = os.environ.get("JXMC_COMMIT", "")
        return {"commit": stated or "unknown", "dirty": None, "dirty_paths": [],
                **({"commit_source": "JXMC_COMMIT"} if stated else {})}
    paths = dirty_paths()
    return {"commit": commit, "dirty": bool(paths), "dirty_paths": paths[:20]}


def require_clean(allow_dirty: bool, script: str) -> None:
    """Exits with status 2 and one line when the tree has uncommitted changes.

    Args:
      allow_dirty: the script's ``--allow-dirty``; the figures are then marked
        "uncommitted changes" in the results.
      script: the script's name, for the message.
    """
    paths = dirty_paths()
    if paths and not allow_dirty:
        more = f" (+{len(paths) - 3} more)" if len(paths) > 3 else ""
        print(f"{script}: uncommitted changes in {', '.join(paths[:3])}{more}; commit them first "
              f"(figures must name the commit that makes them) or pass --allow-dirty",
              file=sys.stderr)
        sys.exit(2)


def machine() -> dict:
    """CPU model, cores, RAM, OS and Python/JAX versions of this machine."""
    cpu = next((line.split(":", 1)[1].strip() for line in read_text("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in read_text("/proc/cpuinfo").splitlines()
                  if line.startswith("flags")), [])
    mem_kib = next((int(line.split()[1]) for line in read_text("/proc/meminfo").splitlines()
                    if line.startswith("MemTotal:")), 0)
    out = {
        "cpu": cpu,
        # XLA's CPU code generator picks instructions by what the CPU offers, so float results
        # can differ between machines whose CPUs differ here (README "Reproducibility").
        "simd": ("avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else
                 "avx" if "avx" in flags else platform.machine()),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "hostname_hash": uuid.uuid5(uuid.NAMESPACE_DNS, platform.node()).hex[:8],
    }
    try:
        import jax

        out["jax"] = jax.__version__
        out["backend"] = jax.default_backend()
    except ImportError:
        pass
    return out


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def record(command: str) -> dict:
    """What every results file carries: command, date (UTC), git state, machine, load."""
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_state(),
        "machine": machine(),
        "load_avg_start": load_avg(),
        "compile_cache": "cold (JXMC_COMPILE_CACHE=off in every jxmc process)",
    }


def cold_env(env: dict | None = None) -> dict:
    """``env`` (default ``os.environ``) with jxmc's persistent compile cache off."""
    out = dict(os.environ if env is None else env)
    out["JXMC_COMPILE_CACHE"] = COLD
    out.pop("JAX_COMPILATION_CACHE_DIR", None)
    return out


def add_arguments(parser) -> None:
    """Adds ``--allow-dirty`` to an experiment's argument parser."""
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run on a tree with uncommitted changes (the results say so)")
