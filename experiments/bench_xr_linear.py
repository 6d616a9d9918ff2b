"""jxmc vs PECOS XR-Linear vs napkinXC PLT: same features, same machine, one run.

Usage (from the repository root; data paths are relative to it)::

    python experiments/bench_xr_linear.py --data ../shared/data/bibtex
    python experiments/bench_xr_linear.py --data ../shared/data/{bibtex,delicious,debtags,debian-deps}
    python experiments/bench_xr_linear.py --data ../shared/data/debtags --systems jxmc --method ovr

What one run does, per dataset:

1. featurises once with jxmc's loader (``jxmc.load_dataset``; XC sets: rows
   L2-normalised; raw text: TF-IDF word 1-2 grams, min_df 2, sublinear tf, as
   ``../shared/PEERS.md``) and times it -- the featurisation time of every system;
2. writes the features to a temporary work folder (scipy ``.npz``) so every
   system trains and predicts on the identical matrices;
3. runs each system in its own process (``harness/run_<system>.py``), with 2
   threads: jxmc and napkinXC in this Python, PECOS in ``experiments/.peers-venv``
   (made when missing, see ``harness/peers_venv.py``); each process reports its
   own peak memory, Linux's ``VmHWM`` read by the runner itself at its end
   (``wait4``'s ``ru_maxrss`` is not used: the kernel carries the harness's own
   peak into it across fork/exec);
4. scores every system's top 10 with ``jxmc.metrics.evaluate`` against the same
   ``test.Y`` (test-only labels included), propensities from the training counts
   with ``propensity_ab(dataset)``;
5. writes ``<out>/<dataset>.json`` and ``<out>/<dataset>.md`` and regenerates
   ``<out>/README.md`` from every JSON file in ``<out>`` (all atomically).

See ``experiments/README.md`` for what each number means and expected run times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HARNESS = os.path.join(HERE, "harness")
sys.path.insert(0, HARNESS)

import common  # noqa: E402
import peers_venv  # noqa: E402
import provenance  # noqa: E402
import report  # noqa: E402

SYSTEMS = ("jxmc", "pecos", "napkinxc")
KS = (1, 3, 5, 10)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True,
                   help="dataset folder(s), relative to the repository root or absolute")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated subset of jxmc,pecos,napkinxc (default: all three)")
    p.add_argument("--method", default="xr-linear", help="jxmc method (default xr-linear)")
    p.add_argument("--jxmc-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the jxmc method's Config (repeatable)")
    p.add_argument("--out", default="experiments/results", help="results folder (relative to the repo root)")
    p.add_argument("--threads", type=int, default=2, help="threads per system (default 2)")
    p.add_argument("--k", type=int, default=10, help="predictions per point (default 10)")
    p.add_argument("--n-one", type=int, default=200, help="test points predicted one at a time (default 200)")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per system process (default 3 h)")
    p.add_argument("--peers-venv", default="experiments/.peers-venv", help="the PECOS venv (made when missing)")
    p.add_argument("--note", action="append", default=[], help="a note recorded in the results (repeatable)")
    p.add_argument("--no-merge", action="store_true",
                   help="do not keep entries of systems not run now from an existing <dataset>.json")
    p.add_argument("--limit-train", type=int, default=None, help="smoke test: first N training points only")
    p.add_argument("--limit-test", type=int, default=None, help="smoke test: first N test points only")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work folder (printed)")
    p.add_argument("--compile-cache", choices=("cold", "cold+warm"), default="cold",
                   help="jxmc's persistent compilation cache: cold (off: every process compiles "
                        "from scratch; default) or cold+warm (also: a process fills an empty cache "
                        "folder, unreported, and another, reported beside the cold run, reads it)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of every system (jxmc's fit, PECOS's k-means, napkinXC's tree; default 0)")
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in args.systems if s not in SYSTEMS]
    if bad or not args.systems:
        p.error(f"--systems: unknown {bad}; choose from {','.join(SYSTEMS)}")
    if args.threads < 1 or args.k < 5 or args.n_one < 1:
        p.error("--threads >= 1, --k >= 5 and --n-one >= 1 are required")
    return args


def repo_path(path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(REPO, path))


def child_env(threads: int, compile_cache: str = "off") -> dict:
    env = dict(os.environ)
    env["JXMC_COMPILE_CACHE"] = compile_cache
    for var in THREAD_VARS:
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = env.get("TF_CPP_MIN_LOG_LEVEL", "1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the cache is JXMC_COMPILE_CACHE's alone
    return env


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in provenance.read_text("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    mem_kib = next((int(line.split()[1]) for line in provenance.read_text("/proc/meminfo").splitlines()
                    if line.startswith("MemTotal:")), 0)
    os_name = next((line.split("=", 1)[1].strip().strip('"') for line in provenance.read_text("/etc/os-release").splitlines()
                    if line.startswith("PRETTY_NAME=")), platform.system())
    return {
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": mem_kib / 2**20,
        "os": os_name,
        "kernel": platform.release(),
        "arch": platform.machine(),
        "hostname_hash": uuid.uuid5(uuid.NAMESPACE_DNS, platform.node()).hex[:8],
    }


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --------------------------------------------------------------------------- children


def run_child(python: str, script: str, work: str, out: str, env: dict, timeout: float, log_path: str) -> dict:
    """Runs one system's process; returns ``{rc, wall_s, timed_out}`` (its memory it reports itself)."""
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([python, os.path.join(HARNESS, script), work, out], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.perf_counter() - t0 > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    del usage  # ru_maxrss includes the harness's own peak (inherited across fork/exec)
    return {"rc": proc.returncode, "wall_s": wall, "timed_out": timed_out}


def tail(path: str, n: int = 25) -> str:
    lines = provenance.read_text(path).splitlines()
    return "\n".join(lines[-n:])


LABELS = {"pecos": "PECOS XR-Linear", "napkinxc": "napkinXC PLT"}


def entry_key(system: str, method: str) -> str:
    return {"jxmc": f"jxmc:{method}", "pecos": "pecos:xr-linear", "napkinxc": "napkinxc:plt"}[system]


def entry_label(system: str, method: str) -> str:
    return f"jxmc {method}" if system == "jxmc" else LABELS[system]


def run_system(system: str, args, work: str, ds_info: dict, featurize_s: float, truth, inv_prop,
               run_meta: dict, peers_ref: dict) -> tuple[str, dict]:
    import numpy as np

    from jxmc.metrics import evaluate

    out = os.path.join(work, system)
    os.makedirs(out, exist_ok=True)
    python = peers_venv.venv_python(repo_path(args.peers_venv)) if system == "pecos" else sys.executable
    log_path = os.path.join(work, f"{system}.log")
    key = entry_key(system, args.method)
    entry = {"system": system, "label": entry_label(system, args.method), "status": "failed",
             "run": {k: run_meta[k] for k in ("run_id", "date", "git_commit", "git_dirty")}}
    print(f"[{ds_info['name']}] {entry['label']}: running ({python.replace(REPO + os.sep, '')})", flush=True)
    warm = system == "jxmc" and args.compile_cache == "cold+warm"
    cache = os.path.join(work, "xla-cache") if warm else "off"
    # The reported (cold) run has the cache off: a cache that is being filled costs a key and a
    # lookup per compile request, which is neither state.
    proc = run_child(python, f"run_{system}.py", work, out, child_env(args.threads, "off"), args.timeout,
                     log_path)
    result_path = os.path.join(out, "result.json")
    if proc["rc"] != 0 or not os.path.exists(result_path):
        why = "timed out" if proc["timed_out"] else f"exit status {proc['rc']}"
        log_tail = tail(log_path)
        last = next((line for line in reversed(log_tail.splitlines()) if line.strip()), why)
        entry.update(error=f"{why}\n{log_tail}", error_summary=last.strip()[:120],
                     process_wall_s=proc["wall_s"])
        print(f"[{ds_info['name']}] {entry['label']}: FAILED ({why})\n{log_tail}", flush=True)
        return key, entry
    with open(result_path, encoding="utf-8") as f:
        res = json.load(f)
    pred = np.load(os.path.join(out, "pred.npy"))
    metrics = evaluate(pred, truth, inv_prop, ks=KS)
    metrics.update(psndcg_sum_ratio(pred, truth, inv_prop))
    pt = res["predict"]
    entry.update(
        status="ok",
        method=res.get("method"),
        settings=res["settings"],
        metrics={name: round(100.0 * v, 4) for name, v in metrics.items()},
        times={
            "featurize_s": featurize_s,
            "compile_s": res["compile_s"],
            "train_rest_s": res["train_s"] - res["compile_s"],
            "train_s": res["train_s"],
            "train_total_s": featurize_s + res["train_s"],
            "predict_batch_ms_per_query": pt["predict_batch_steady_ms_per_query"],
            "predict_batch_first_ms_per_query": pt["predict_batch_first_ms_per_query"],
            "predict_one_ms_per_query": pt["predict_one_steady_ms_per_query"],
            "predict_one_first_ms_per_query": pt["predict_one_first_ms_per_query"],
            "predict_compile_s": res.get("predict_compile_s", 0.0),
            "prepare_s": res.get("prepare_s", 0.0),
            "process_wall_s": proc["wall_s"],
            **({"train_parts_s": res["train_parts_s"]} if "train_parts_s" in res else {}),
            **({"predict_one_threads_spec_ms_per_query": pt["predict_one_threads_spec_ms_per_query"],
                "predict_one_threads": pt["predict_one_threads"]}
               if "predict_one_threads_spec_ms_per_query" in pt else {}),
            **({"predict_compile_by_pass_s": res["predict_compile_by_pass_s"]}
               if "predict_compile_by_pass_s" in res else {}),
        },
        predict_counts={"n_batch": pt["n_test"], "n_one": pt["n_one"], "k": args.k},
        memory={"peak_rss_mb": res["peak_rss_mb_self"], "peak_source": "VmHWM of the system's process",
                "rss_after_load_mb": res["rss_after_load_mb"],
                "rss_after_train_mb": res["rss_after_train_mb"]},
        model_bytes=res["model_bytes"],
        versions=res["versions"],
    )
    entry["compile_cache"] = "cold (off)"
    if warm:  # a new process fills an empty cache (not reported), another reads it (warm)
        out_p = os.path.join(work, "jxmc-prime")
        run_child(python, "run_jxmc.py", work, out_p, child_env(args.threads, cache), args.timeout,
                  os.path.join(work, "jxmc-prime.log"))
        out_w = os.path.join(work, "jxmc-warm")
        proc_w = run_child(python, "run_jxmc.py", work, out_w, child_env(args.threads, cache),
                           args.timeout, os.path.join(work, "jxmc-warm.log"))
        if proc_w["rc"] == 0:
            with open(os.path.join(out_w, "result.json"), encoding="utf-8") as f:
                rw = json.load(f)
            pw = rw["predict"]
            same = bool(np.array_equal(np.load(os.path.join(out_w, "pred.npy")), pred))
            entry["warm"] = {
                "compile_s": rw["compile_s"], "train_s": rw["train_s"],
                "train_total_s": featurize_s + rw["train_s"],
                "predict_compile_s": rw.get("predict_compile_s", 0.0),
                "predict_one_first_ms_per_query": pw["predict_one_first_ms_per_query"],
                "predict_one_ms_per_query": pw["predict_one_steady_ms_per_query"],
                "process_wall_s": proc_w["wall_s"], "peak_rss_mb": rw["peak_rss_mb_self"],
                "same_predictions_as_cold": same}
        else:
            entry["warm"] = {"error": f"exit status {proc_w['rc']}: "
                                      f"{tail(os.path.join(work, 'jxmc-warm.log'), 3)}"}
    for extra in ("tree_depth", "compile_events", "jax_backend", "jax_devices"):
        if extra in res:
            entry[extra] = res[extra]
    ref = None if ds_info["subset"] else peers_ref.get((ds_info["name"], key))
    if ref:
        entry["peers_md"] = ref
    m, t = entry["metrics"], entry["times"]
    print(f"[{ds_info['name']}] {entry['label']}: P@1/3/5 {m['P@1']:.2f}/{m['P@3']:.2f}/{m['P@5']:.2f} "
          f"PSP@5 {m['PSP@5']:.2f}; train {t['train_s']:.2f} s (compile {t['compile_s']:.2f}); "
          f"predict {t['predict_batch_ms_per_query']:.3f} ms/q batched, "
          f"{t['predict_one_ms_per_query']:.3f} ms/q one at a time; peak {res['peak_rss_mb_self']:.0f} MiB; "
          f"model {res['model_bytes'] / 2**20:.2f} MiB", flush=True)
    if ref:
        d = {q: ref["metrics"][q] - m[q] for q in ("P@1", "P@3", "P@5", "PSP@5") if ref["metrics"].get(q) is not None}
        print(f"[{ds_info['name']}] {entry['label']}: PEERS.md minus this run: "
              + ", ".join(f"{q} {v:+.2f}" for q, v in d.items()), flush=True)
    return key, entry


def psndcg_sum_ratio(pred, truth, inv_prop, ks=KS) -> dict[str, float]:
    """PSnDCG@k as pyxclib and ``../shared/PEERS.md`` compute it: the dataset's sum of
    ``sum_{i<k} hit_i q_{pred_i} / log2(i+2)`` over the sum of its best achievable value,
    *without* the per-point ``1 / IDCG(min(k, |y|))`` factor that ``jxmc.metrics`` (like
    napkinxc) applies; reported as ``PSnDCG@k_pyxclib`` next to jxmc's ``PSnDCG@k``.
    """
    import numpy as np

    from jxmc.metrics import truth_to_padded

    Y = truth.tocsr()
    n = Y.shape[0]
    kmax = max(ks)
    p = np.asarray(pred)[:, :kmax]
    valid = p >= 0
    hit = np.zeros(p.shape, bool)
    rows = np.repeat(np.arange(n), kmax)
    hit.ravel()[:] = np.asarray(Y[rows, np.where(valid, p, 0).ravel()]).ravel() != 0
    hit &= valid
    q = np.asarray(inv_prop, np.float64)
    disc = 1.0 / np.log2(np.arange(kmax) + 2.0)
    gain = np.where(hit, q[np.where(valid, p, 0)], 0.0) * disc
    t = truth_to_padded(Y)
    tq = np.where(t >= 0, q[np.clip(t, 0, None)], 0.0)
    tq = -np.sort(-tq, axis=1)[:, :kmax]
    if tq.shape[1] < kmax:
        tq = np.pad(tq, ((0, 0), (0, kmax - tq.shape[1])))
    best = tq * disc
    out = {}
    for k in ks:
        den = best[:, :k].sum()
        out[f"PSnDCG@{k}_pyxclib"] = float(gain[:, :k].sum() / den) if den > 0 else 0.0
    return out


# ---------------------------------------------------------------------------- dataset


def write_work(work: str, ds, args) -> None:
    import numpy as np
    import scipy.sparse as sp

    sp.save_npz(os.path.join(work, "X_train.npz"), sp.csr_matrix(ds.train.X, dtype=np.float32))
    sp.save_npz(os.path.join(work, "Y_train.npz"), sp.csr_matrix(ds.train.Y, dtype=np.float32))
    sp.save_npz(os.path.join(work, "X_test.npz"), sp.csr_matrix(ds.test.X, dtype=np.float32))
    n_test = ds.test.X.shape[0]
    rng = np.random.default_rng(0)
    one_idx = np.sort(rng.choice(n_test, size=min(args.n_one, n_test), replace=False)).astype(np.int64)
    np.save(os.path.join(work, "one_idx.npy"), one_idx)
    with open(os.path.join(work, "spec.json"), "w", encoding="utf-8") as f:
        json.dump({"dataset": ds.name, "k": args.k, "threads": args.threads, "method": args.method,
                   "jxmc_set": args.jxmc_set, "seed": args.seed}, f)


def bench_dataset(folder: str, args, run_meta: dict, peers_ref: dict, out_dir: str) -> dict:
    import numpy as np

    import jxmc
    from jxmc.data.tfidf import TfidfConfig
    from jxmc.metrics import inv_propensity, propensity_ab

    t0 = time.perf_counter()
    ds = jxmc.load_dataset(folder)
    featurize_s = time.perf_counter() - t0
    subset = args.limit_train is not None or args.limit_test is not None
    if subset:
        ds.train.X, ds.train.Y = ds.train.X[: args.limit_train], ds.train.Y[: args.limit_train]
        ds.test.X, ds.test.Y = ds.test.X[: args.limit_test], ds.test.Y[: args.limit_test]
    ds.train.texts = ds.test.texts = None
    A, B = propensity_ab(ds.name)
    counts = ds.label_counts()
    inv_prop = inv_propensity(counts, ds.train.X.shape[0], A, B)
    info = {
        "name": ds.name, "source": os.path.relpath(folder, REPO), "layout": ds.layout,
        "n_train": int(ds.train.X.shape[0]), "n_test": int(ds.test.X.shape[0]),
        "n_features": int(ds.n_features), "n_labels": int(ds.n_labels), "n_labels_all": int(ds.n_labels_all),
        "train_nnz": int(ds.train.X.nnz), "test_nnz": int(ds.test.X.nnz),
        "test_points_without_train_labels": int(np.sum(np.diff(ds.test.Y[:, : ds.n_labels].tocsr().indptr) == 0)),
        "featurize_s": featurize_s,
        "featurizer": ("jxmc.load_dataset: TF-IDF " + json.dumps(TfidfConfig().__dict__)
                       if ds.layout == "text" else "jxmc.load_dataset: XC features, rows L2-normalised"),
        "propensity_A": A, "propensity_B": B,
        "subset": subset,
    }
    print(f"[{ds.name}] featurised in {featurize_s:.2f} s: {info['n_train']:,} train / {info['n_test']:,} test, "
          f"d={info['n_features']:,}, L={info['n_labels']:,} (L_all={info['n_labels_all']:,})", flush=True)

    work = tempfile.mkdtemp(prefix=f"jxmc-bench-{ds.name}-")
    try:
        write_work(work, ds, args)
        entries = {}
        for system in args.systems:
            key, entry = run_system(system, args, work, info, featurize_s, ds.test.Y, inv_prop,
                                    run_meta, peers_ref)
            entries[key] = entry
    finally:
        if args.keep_work:
            print(f"[{ds.name}] work folder kept: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)

    name = ds.name + (f"-subset-{info['n_train']}x{info['n_test']}" if subset else "")
    json_path = os.path.join(out_dir, f"{name}.json")
    merged = dict(entries)
    if not args.no_merge and os.path.exists(json_path):
        try:
            with open(json_path, encoding="utf-8") as f:
                old = json.load(f)
            same = all(old.get("data", {}).get(k) == info[k]
                       for k in ("n_train", "n_test", "n_features", "n_labels", "n_labels_all"))
            if same:
                for key, entry in old.get("results", {}).items():
                    if key not in merged and entry.get("status") == "ok":
                        merged[key] = entry
                        print(f"[{ds.name}] kept {entry.get('label', key)} from the run of "
                              f"{entry.get('run', {}).get('date', '?')}", flush=True)
        except (OSError, ValueError):
            pass
    res = {"schema": 1, "dataset": ds.name, "data": info, "run": dict(run_meta, load_avg_end=load_avg()),
           "results": {k: merged[k] for k in sorted(merged, key=report.entry_order)}}
    common.write_json_atomic(json_path, res)
    write_text_atomic(os.path.join(out_dir, f"{name}.md"), report.dataset_markdown(res))
    print(f"[{ds.name}] wrote {os.path.relpath(json_path, REPO)} and .md", flush=True)
    return res


def write_text_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".md", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv=None) -> int:
    args = parse_args(argv)
    provenance.require_clean(args.allow_dirty, "bench_xr_linear.py")
    for var in THREAD_VARS:  # the parent's own featurisation and metrics, too
        os.environ[var] = str(args.threads)
    out_dir = repo_path(args.out)
    folders = [repo_path(d) for d in args.data]
    missing = [d for d in folders if not os.path.isdir(d)]
    if missing:
        print(f"error: dataset folder(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    peers_versions = None
    if "pecos" in args.systems:
        try:
            peers_versions = peers_venv.ensure(repo_path(args.peers_venv))
        except RuntimeError as e:
            print(str(e), file=sys.stderr)
            return 1
    if "jxmc" in args.systems:
        from jxmc.models import get_method

        get_method(args.method)  # an unknown method fails here, before any work
    import jax

    machine = machine_info()
    la = load_avg()
    notes = list(args.note)
    usable = machine["cpus_usable"] or 1
    if la and la[0] > 0.5 * usable:
        notes.append(f"load average {la[0]:.2f} at the start on {usable} usable cores: other jobs were "
                     f"running on this machine, so the timings are noisy")
    run_meta = {
        "run_id": uuid.uuid4().hex[:12],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": provenance.git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(provenance.dirty_paths()),
        "compile_cache": args.compile_cache,
        "seed": args.seed,
        "command": "python " + " ".join([os.path.relpath(os.path.abspath(__file__), REPO)] + sys.argv[1:]),
        "systems": args.systems,
        "threads": args.threads,
        "k": args.k,
        "n_one": args.n_one,
        "machine": machine,
        "software": {"python": platform.python_version(), "jax": jax.__version__,
                     "jax_backend": jax.default_backend(), "peers_venv": peers_versions},
        "thread_env": {var: str(args.threads) for var in THREAD_VARS},
        "load_avg_start": la,
        "notes": notes,
    }
    try:
        from importlib.metadata import version

        run_meta["software"]["napkinxc"] = version("napkinxc")
        run_meta["software"]["jxmc"] = version("jxmc")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    peers_ref = report.read_peers_md(os.path.normpath(os.path.join(REPO, "..", "shared", "PEERS.md")))
    failed = 0
    for folder in folders:
        res = bench_dataset(folder, args, run_meta, peers_ref, out_dir)
        failed += sum(1 for e in res["results"].values() if e.get("status") != "ok"
                      and e.get("run", {}).get("run_id") == run_meta["run_id"])
    write_text_atomic(os.path.join(out_dir, "README.md"), report.aggregate_markdown(report.load_results(out_dir)))
    print(f"wrote {os.path.relpath(os.path.join(out_dir, 'README.md'), REPO)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
