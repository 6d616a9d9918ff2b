"""What every system runner shares: the work folder, timing, top-k, result files.

This module is imported by the runners of *every* system, in *both* Python
environments (``/work/venv``'s numpy 2 and the PECOS venv's numpy 1.26), so it
uses only the standard library, numpy and scipy.

The work folder the harness prepares for one run (``bench_xr_linear.py``)::

    <work>/spec.json        dataset name, k, threads, method, config overrides
    <work>/X_train.npz      csr f32[n_train, d]  (rows L2-normalised)
    <work>/Y_train.npz      csr f32[n_train, L]  (1.0 at positives)
    <work>/X_test.npz       csr f32[n_test, d]
    <work>/one_idx.npy      i64[n_one]  test rows predicted one at a time

A runner writes into its own ``<work>/<system>/``::

    result.json             timings, memory, model size, versions, settings
    pred.npy                i32[n_test, k] top-k label ids, best first, -1 padded
    model/                  the saved model (its size is reported)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp


def load_work(work: str) -> tuple[dict, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """``(spec, X_train, Y_train, X_test, one_idx)`` from a work folder."""
    with open(os.path.join(work, "spec.json"), encoding="utf-8") as f:
        spec = json.load(f)

    def csr(name: str) -> sp.csr_matrix:
        M = sp.csr_matrix(sp.load_npz(os.path.join(work, name)), dtype=np.float32)
        M.sort_indices()
        return M

    one_idx = np.load(os.path.join(work, "one_idx.npy"))
    return spec, csr("X_train.npz"), csr("Y_train.npz"), csr("X_test.npz"), one_idx


def _proc_status_kib(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or ``None`` where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def maxrss_mb() -> float:
    """Peak resident memory of *this process's own* address space so far, MiB.

    Linux's ``VmHWM`` (``/proc/self/status``): the high-water mark of this
    process's memory map, which ``exec`` starts afresh.  ``getrusage``'s
    ``ru_maxrss`` is *not* used where ``VmHWM`` exists: the kernel carries it
    across ``fork``/``exec``, so a runner started by a large harness would report
    the harness's peak (issue 14: both peers showed the parent's figure).
    Elsewhere (macOS) ``ru_maxrss`` is the fallback (bytes there, KiB on Linux).
    """
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024.0
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024.0


def rss_mb() -> float:
    """Resident memory of this process now, MiB (``VmRSS``; 0.0 where unknown)."""
    now = _proc_status_kib("VmRSS")
    return 0.0 if now is None else now / 1024.0


def dir_bytes(path: str) -> int:
    """Sum of the sizes of the regular files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if os.path.isfile(p) and not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def pad_rows(rows, k: int) -> np.ndarray:
    """A list of label-id lists (best first) as ``i32[n, k]``, ``-1`` padded."""
    out = np.full((len(rows), k), -1, np.int32)
    for i, r in enumerate(rows):
        r = list(r)[:k]
        out[i, : len(r)] = r
    return out


def csr_topk(P: sp.csr_matrix, k: int) -> np.ndarray:
    """Top-``k`` column ids of each row of a score matrix, best first: ``i32[n, k]``, -1 padded.

    Ties are broken by the smaller column id (stable sort on the negated score).
    """
    P = sp.csr_matrix(P)
    P.sort_indices()
    out = np.full((P.shape[0], k), -1, np.int32)
    for i in range(P.shape[0]):
        a, b = P.indptr[i], P.indptr[i + 1]
        if a == b:
            continue
        order = np.argsort(-P.data[a:b], kind="stable")[:k]
        out[i, : len(order)] = P.indices[a:b][order]
    return out


class Clock:
    """``with Clock() as c: ...`` then ``c.s`` seconds (``time.perf_counter``)."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
        return False


def predict_passes(predict_batch, predict_one, X_test: sp.csr_matrix, one_idx: np.ndarray,
                   on_pass=None) -> tuple[np.ndarray, dict]:
    """Times prediction the same way for every system.

    Batched: the whole test set in one call, twice; the first pass may include
    one-off work (JAX compilation, lazy model loading), the second is the steady
    state.  One at a time: each row of ``one_idx`` in its own call, the whole list
    twice, same reading.

    Args:
      predict_batch: ``X -> i32[n, k]`` ids.
      predict_one: ``X (1 row) -> i32[1, k]`` ids (may be ``predict_batch``).
      on_pass: optional ``(name, seconds) -> None`` called after every pass (the
        jxmc runner reads its compile clock there).

    Returns:
      ``(ids of the steady batched pass, timings dict)``.
    """
    n = X_test.shape[0]
    t = {}
    ids = None
    for p in ("first", "steady"):
        with Clock() as c:
            ids = np.asarray(predict_batch(X_test))
        t[f"predict_batch_{p}_s"] = c.s
        t[f"predict_batch_{p}_ms_per_query"] = 1e3 * c.s / max(n, 1)
        if on_pass:
            on_pass(f"batch_{p}", c.s)
    rows = [X_test[int(i): int(i) + 1] for i in one_idx]
    for p in ("first", "steady"):
        with Clock() as c:
            for x in rows:
                predict_one(x)
        t[f"predict_one_{p}_s"] = c.s
        t[f"predict_one_{p}_ms_per_query"] = 1e3 * c.s / max(len(rows), 1)
        if on_pass:
            on_pass(f"one_{p}", c.s)
    t["n_test"] = n
    t["n_one"] = len(rows)
    return ids, t


def write_json_atomic(path: str, obj) -> None:
    """Writes JSON to ``path`` via a temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_queries(data: str, n: int, script: str) -> list[str]:
    """The first ``n`` non-blank test documents of a raw-text dataset folder (its
    ``test_texts.txt``, compressed or not); SystemExit naming ``script`` when it has none.
    Reads through :mod:`jxmc.fileio` (imported here, so the peers' runners never load it)."""
    from jxmc.fileio import find_file, read_lines

    path = find_file(data, "test_texts.txt")
    if path is None:
        raise SystemExit(f"{script}: {data} has no test_texts.txt; pass a raw-text dataset "
                         f"folder (e.g. ../shared/data/debtags)")
    return [t for _, t in read_lines(path) if t.strip()][:n]


def save_pred(out: str, ids: np.ndarray) -> None:
    """Saves ``i32[n, k]`` ids to ``out/pred.npy`` atomically."""
    tmp = os.path.join(out, ".pred.tmp.npy")
    np.save(tmp, np.asarray(ids, np.int32))
    os.replace(tmp, os.path.join(out, "pred.npy"))


def runner_main(run) -> None:
    """``python run_<system>.py WORK OUT``: calls ``run(work, out) -> dict`` and writes
    ``OUT/result.json`` (plus ``pred.npy``, written by ``run``)."""
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} WORK_DIR OUT_DIR")
    work, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    result = run(work, out)
    result["runner_s"] = time.perf_counter() - t0
    result["peak_rss_mb_self"] = maxrss_mb()
    write_json_atomic(os.path.join(out, "result.json"), result)
