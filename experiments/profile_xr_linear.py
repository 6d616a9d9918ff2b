"""Where XR-Linear's training time goes: one ``jxmc`` fit per dataset, stage by stage.

Usage (from the repository root; about 3 minutes for bibtex, delicious and debtags on an idle
2-core machine, cold and warm)::

    python experiments/profile_xr_linear.py --data ../shared/data/{bibtex,delicious,debtags}
    python experiments/profile_xr_linear.py --data ../shared/data/debtags --out /tmp/p --allow-dirty

Per dataset, two fresh processes run the same fit (``jxmc.load_dataset``, then
``get_method("xr-linear").fit`` with the default config, as ``jxmc train`` and
``experiments/bench_xr_linear.py`` do, the host split into ``--threads`` JAX
devices): *cold*, with an empty temporary persistent compile cache, then *warm*,
reading what the cold one wrote.  Each reports, per stage, wall seconds and the
process's CPU seconds (user + system, ``resource.getrusage``; the machine may be
shared, so CPU seconds are the steadier figure, and the load average is recorded):

* ``import`` (``jax`` and ``jxmc``, the backend started), ``read`` (the files),
  ``tfidf`` (fit on the training texts and transform of the test texts; 0 for
  sets that come as features), ``pifa``, ``tree`` (2-means) and ``levels`` (every
  level's rankers, trained at once as :func:`jxmc.models.tree_linear.xr_linear.fit`
  does);
* per level (their wall spans overlap): ``layout`` (host side: pairs, supports,
  entries, chunk layouts; thread CPU), the XLA compilations of its chunks (count,
  seconds; JAX's own ``/jax/core/compile/*`` time-span events, attributed to the
  thread that compiles), ``solve`` (the chunks' device time less their
  compilations, summed over chunks that run side by side), ``chunks`` and the
  dual-CD ``epochs`` of each chunk;
* the compiled programs of the fit (XLA backend compilations, by function name;
  the solver's program is compiled once per shape and device) and the persistent
  cache's hits.  Compile seconds are the union of trace, lowering and XLA spans
  (with a warm cache the XLA span is the cache read).

After the fit (untimed) the test set's P@1/3/5 is recorded, so that a change of
the solver shows whether it moved the solution.

Writes ``<out>.json`` and ``<out>.md`` (default ``experiments/results/profile_xr_linear``).
Refuses a tree with uncommitted changes unless ``--allow-dirty``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "harness"))

import provenance  # noqa: E402

STAGES = ("import", "read", "tfidf", "pifa", "tree", "levels")
COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "backend",
}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cpu_s() -> float:
    """The process's CPU seconds so far (user + system, all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------------------ child


class Profile:
    """Spans of the fit, tagged by the thread's current stage (``threading.local``)."""

    def __init__(self):
        self.local = threading.local()
        self.lock = threading.Lock()
        self.compiles = []  # (tag, kind, fun_name, start, end, thread id)
        self.levels = collections.defaultdict(lambda: collections.defaultdict(float))
        self.epochs = collections.defaultdict(list)
        self.cache_hits = 0
        self.fit_start = time.time()  # reset when the fit starts (level spans are relative to it)

    def tag(self):
        return getattr(self.local, "tag", "other")

    def on_span(self, event, start, end, **kw):
        kind = COMPILE_EVENTS.get(event)
        if kind is not None:
            with self.lock:
                self.compiles.append((self.tag(), kind, kw.get("fun_name", "?"), start, end,
                                      threading.get_ident()))

    def on_event(self, event, **_kw):
        if event == "/jax/compilation_cache/cache_hits":
            with self.lock:
                self.cache_hits += 1

    def add(self, level, key, value):
        with self.lock:
            self.levels[level][key] += value

    def compile_s(self, tag, thread=None) -> tuple[int, float]:
        """(backend compilations, seconds of compile spans, nested ones counted once) of
        ``tag`` (in ``thread`` only, when given)."""
        mine = [c for c in self.compiles if c[0] == tag and (thread is None or c[5] == thread)]
        n = sum(1 for c in mine if c[1] == "backend")
        total, cur = 0.0, None
        for s, e in sorted((c[3], c[4]) for c in mine):
            if cur is None or s > cur[1]:
                total += 0.0 if cur is None else cur[1] - cur[0]
                cur = [s, e]
            else:
                cur[1] = max(cur[1], e)
        return n, total + (0.0 if cur is None else cur[1] - cur[0])

    def compile_s_union(self, tags) -> float:
        """Seconds covered by the compile spans of any of ``tags`` (overlaps counted once)."""
        total, cur = 0.0, None
        for s, e in sorted((c[3], c[4]) for c in self.compiles if c[0] in tags):
            if cur is None or s > cur[1]:
                total += 0.0 if cur is None else cur[1] - cur[0]
                cur = [s, e]
            else:
                cur[1] = max(cur[1], e)
        return total + (0.0 if cur is None else cur[1] - cur[0])


def instrument(prof: Profile):
    """Wraps the fit's stages (module attributes, looked up at call time) with timers."""
    from jxmc.data import sources
    from jxmc.data import tfidf as tf
    from jxmc.models.tree_linear import rankers, xr_linear
    from jxmc.ops import svm_dual

    def timed(name, fn, stage_of=None):
        def wrapper(*a, **k):
            old = prof.tag()
            prof.local.tag = name if stage_of is None else stage_of(a, k)
            w0, c0 = time.perf_counter(), cpu_s()
            try:
                return fn(*a, **k)
            finally:
                prof.add(name, "wall_s", time.perf_counter() - w0)
                prof.add(name, "cpu_s", cpu_s() - c0)
                prof.local.tag = old
        return wrapper

    sources.fit_tfidf = timed("tfidf", sources.fit_tfidf)
    tf.Featurizer.transform = timed("tfidf", tf.Featurizer.transform)
    xr_linear.pifa = timed("pifa", xr_linear.pifa)
    xr_linear.build = timed("tree", xr_linear.build)

    train_level = rankers.train_level

    def level_wrapper(Xb, Y, tree, level, *a, **k):
        name = f"level_{level}"
        old = prof.tag()
        prof.local.tag = name
        w0, t0, now = time.perf_counter(), time.thread_time(), time.time()
        try:
            return train_level(Xb, Y, tree, level, *a, **k)
        finally:
            prof.add(name, "wall_s", time.perf_counter() - w0)
            prof.add(name, "start", now - prof.fit_start)
            prof.add(name, "end", time.time() - prof.fit_start)
            prof.add(name, "layout_thread_cpu_s", time.thread_time() - t0)
            prof.local.tag = old

    rankers.train_level = level_wrapper

    submit = rankers.DevicePool.submit

    def submit_wrapper(self, cost, fn, program=None):
        level = prof.tag()

        def run(device):
            prof.local.tag = level
            w0, n0 = time.perf_counter(), prof.compile_s(level, threading.get_ident())[1]
            try:
                return fn(device)
            finally:
                c = prof.compile_s(level, threading.get_ident())[1] - n0
                prof.add(level, "chunks", 1)
                prof.add(level, "solve_s", time.perf_counter() - w0 - c)
                prof.local.tag = "other"

        return submit(self, cost, run, program=program)

    rankers.DevicePool.submit = submit_wrapper

    solve = svm_dual.solve_dual_cd

    def solve_wrapper(*a, **k):
        W, epochs = solve(*a, **k)
        with prof.lock:
            prof.epochs[prof.tag()].append(int(epochs))
        return W, epochs

    svm_dual.solve_dual_cd = solve_wrapper


def child(data: str, threads: int, overrides: list[str]) -> dict:
    w_start, c_start = time.perf_counter(), cpu_s()
    from jxmc.devices import limit_heap_growth, use_compile_cache, use_host_cores

    use_host_cores(threads)  # as `jxmc train` does
    limit_heap_growth()
    import jax

    prof = Profile()
    jax.monitoring.register_event_time_span_listener(prof.on_span)
    jax.monitoring.register_event_listener(prof.on_event)
    cache = use_compile_cache()
    import jax.numpy as jnp
    import numpy as np

    import jxmc
    from jxmc.metrics import evaluate
    from jxmc.models.base import parse_overrides

    jnp.zeros(1).block_until_ready()  # the backend started
    stages = {"import": {"wall_s": time.perf_counter() - w_start, "cpu_s": cpu_s() - c_start}}
    instrument(prof)
    w0, c0 = time.perf_counter(), cpu_s()
    ds = jxmc.load_dataset(data)
    load_w, load_c = time.perf_counter() - w0, cpu_s() - c0
    tf_ = prof.levels.pop("tfidf", {"wall_s": 0.0, "cpu_s": 0.0})
    stages["read"] = {"wall_s": load_w - tf_["wall_s"], "cpu_s": load_c - tf_["cpu_s"]}
    stages["tfidf"] = dict(tf_)
    method = jxmc.get_method("xr-linear")
    config = parse_overrides(method.Config, overrides)
    prof.fit_start = time.time()
    w0, c0 = time.perf_counter(), cpu_s()
    params = method.fit(ds.train.X, ds.train.Y, config, seed=0, progress=False)
    fit_w, fit_c = time.perf_counter() - w0, cpu_s() - c0
    for name in ("pifa", "tree"):
        stages[name] = dict(prof.levels.pop(name, {"wall_s": 0.0, "cpu_s": 0.0}))
    stages["levels"] = {"wall_s": fit_w - stages["pifa"]["wall_s"] - stages["tree"]["wall_s"],
                        "cpu_s": fit_c - stages["pifa"]["cpu_s"] - stages["tree"]["cpu_s"]}
    for name in STAGES[1:-1]:
        stages[name]["compiles"], stages[name]["compile_s"] = prof.compile_s(name)
    level_tags = {c[0] for c in prof.compiles if c[0].startswith("level_")}
    stages["levels"]["compiles"] = sum(prof.compile_s(t)[0] for t in level_tags)
    stages["levels"]["compile_s"] = prof.compile_s_union(level_tags)
    levels = {}
    for name in sorted(k for k in prof.levels if k.startswith("level_")):
        lv = prof.levels[name]
        n, c = prof.compile_s(name)
        levels[name] = {"start_s": lv["start"], "end_s": lv["end"], "wall_s": lv["wall_s"],
                        "layout_thread_cpu_s": lv["layout_thread_cpu_s"],
                        "compiles": n, "compile_s": c, "solve_s": lv["solve_s"],
                        "chunks": int(lv["chunks"]), "epochs": prof.epochs.get(name, [])}
    backend = [c[2] for c in prof.compiles if c[1] == "backend"]  # up to the fit's end
    out = {"dataset": ds.name, "n_train": int(ds.train.X.shape[0]),
           "n_features": int(ds.train.X.shape[1]), "n_labels": int(ds.train.Y.shape[1]),
           "compile_cache": cache, "stages": stages, "levels": levels,
           "fit": {"wall_s": fit_w, "cpu_s": fit_c},
           "featurise_train": {"wall_s": load_w + fit_w, "cpu_s": load_c + fit_c},
           "total_to_trained": {"wall_s": time.perf_counter() - w_start, "cpu_s": cpu_s() - c_start},
           "programs": {"backend_compiles": len(backend),
                        "solver_compiles": sum(1 for f in backend if "solve_dual_cd" in f),
                        "by_name": dict(collections.Counter(backend).most_common()),
                        "cache_hits": prof.cache_hits},
           "threads": threads, "overrides": overrides}
    # the host beam (no compilation; the device's top-k up to float32 summation order)
    top = method.predict(params, ds.test.X, replace(config, host_queries=ds.test.X.shape[0]), k=5)
    m = evaluate(np.asarray(top.ids), ds.test.Y, ks=(1, 3, 5))
    out["metrics"] = {k: round(100 * float(m[k]), 2) for k in ("P@1", "P@3", "P@5")}
    return out


# ----------------------------------------------------------------------------- parent


def run_child(data: str, cache_dir: str, args) -> dict:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["JXMC_COMPILE_CACHE"] = cache_dir
    for var in THREAD_VARS:
        env[var] = str(args.threads)
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", data, "--child-out", f.name,
               "--threads", str(args.threads), *sum((["--set", s] for s in args.set), [])]
        t0 = time.perf_counter()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            raise SystemExit(f"profile_xr_linear.py: {data}: the fit failed:\n{p.stderr[-3000:]}")
        with open(f.name, encoding="utf-8") as g:
            res = json.load(g)
    res["process"] = {"wall_s": time.perf_counter() - t0,
                      "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)}
    return res


def _f(x, d=2) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def markdown(out: dict) -> str:
    rec = out["record"]
    lines = ["# Where XR-Linear's training time goes", "",
             f"Written by `experiments/profile_xr_linear.py` on {rec['date']} at commit "
             f"`{rec['git']['commit'][:12]}`{' (uncommitted changes)' if rec['git']['dirty'] else ''}. "
             f"Machine: {rec['machine'].get('cpu', '?')}, {rec['machine'].get('cores')} cores, "
             f"{out['threads']} JAX host devices; load average at start {rec['load_avg_start']}, "
             f"at end {out['load_avg_end']}.",
             "Each row is one fresh process (`jxmc.load_dataset` + `fit` of the default config); "
             "*cold*: an empty persistent compile cache, *warm*: the one the cold run wrote. "
             "Seconds as wall / CPU (user + system of the process, all threads).", "",
             "| dataset | cache | " + " | ".join(STAGES) + " | featurise + train | "
             "XLA compiles (solver's) | compile s | P@1/3/5 |",
             "| --- | --- | " + " | ".join("---" for _ in STAGES) + " | --- | --- | --- | --- |"]
    for name, runs in out["datasets"].items():
        for cache, r in runs.items():
            st = r["stages"]
            comp = sum(st[s].get("compile_s", 0.0) for s in STAGES[1:])  # stages run in turn
            m = r["metrics"]
            lines.append(
                f"| {name} | {cache} | "
                + " | ".join(f"{_f(st[s]['wall_s'])} / {_f(st[s]['cpu_s'])}" for s in STAGES)
                + f" | {_f(r['featurise_train']['wall_s'])} / {_f(r['featurise_train']['cpu_s'])}"
                f" | {r['programs']['backend_compiles']} ({r['programs']['solver_compiles']})"
                f" | {_f(comp)} | {m['P@1']}/{m['P@3']}/{m['P@5']} |")
    lines += ["", "Per level (spans overlap: levels train at once and their chunks share the "
              "devices; *solve* sums the chunks' device time less their compilations):", "",
              "| dataset | cache | level | start-end s | layout thread CPU s | compiles | "
              "compile s | solve s | chunks | epochs |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, runs in out["datasets"].items():
        for cache, r in runs.items():
            for lv, x in r["levels"].items():
                ep = x["epochs"]
                eps = f"{min(ep)}-{max(ep)}" if ep else "-"
                lines.append(f"| {name} | {cache} | {lv[6:]} | {_f(x['start_s'])}-{_f(x['end_s'])} | "
                             f"{_f(x['layout_thread_cpu_s'])} | {x['compiles']} | {_f(x['compile_s'])} | "
                             f"{_f(x['solve_s'])} | {x['chunks']} | {eps} |")
    lines += ["", "Compiled programs of the fit (cold runs; XLA backend compilations by function):", ""]
    for name, runs in out["datasets"].items():
        r = runs.get("cold") or next(iter(runs.values()))
        progs = ", ".join(f"`{k}` x{v}" for k, v in r["programs"]["by_name"].items())
        lines.append(f"- {name}: {progs}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", help="dataset folder(s), relative to the repository root")
    p.add_argument("--out", default="experiments/results/profile_xr_linear",
                   help="output path without suffix (writes .json and .md)")
    p.add_argument("--threads", type=int, default=2, help="JAX host devices and BLAS threads (2)")
    p.add_argument("--cache", default="cold,warm", help="cold, warm or cold,warm (default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of xr-linear's Config (repeatable)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    if args.child:
        res = child(args.child, args.threads, args.set)
        with open(args.child_out, "w", encoding="utf-8") as f:
            json.dump(res, f)
        return 0
    if not args.data:
        p.error("--data is required")
    caches = [c.strip() for c in args.cache.split(",") if c.strip()]
    if not caches or any(c not in ("cold", "warm") for c in caches):
        p.error("--cache: cold, warm or cold,warm")
    provenance.require_clean(args.allow_dirty, "profile_xr_linear.py")
    rec = provenance.record(" ".join(["python", "experiments/profile_xr_linear.py", *(argv or sys.argv[1:])]))
    rec["compile_cache"] = "cold: an empty temporary folder; warm: the folder the cold run filled"
    out = {"record": rec, "threads": args.threads, "overrides": args.set, "datasets": {}}
    for data in args.data:
        folder = data if os.path.isabs(data) else os.path.normpath(os.path.join(REPO, data))
        with tempfile.TemporaryDirectory(prefix="jxmc-profile-cache-") as cache_dir:
            runs = {}
            if "warm" in caches and "cold" not in caches:
                run_child(folder, cache_dir, args)  # fills the cache (not reported)
            for c in ("cold", "warm"):
                if c in caches:
                    runs[c] = run_child(folder, cache_dir, args)
                    r = runs[c]
                    print(f"[{r['dataset']}] {c}: featurise + train {r['featurise_train']['wall_s']:.2f} s "
                          f"wall, {r['featurise_train']['cpu_s']:.2f} s CPU; P@1 {r['metrics']['P@1']}",
                          flush=True)
        out["datasets"][runs[next(iter(runs))]["dataset"]] = runs
    out["load_avg_end"] = provenance.load_avg()
    sys.path.insert(0, REPO)
    from common import write_json_atomic

    from jxmc.fileio import atomic_write

    path = args.out if os.path.isabs(args.out) else os.path.join(REPO, args.out)
    write_json_atomic(path + ".json", out)
    with atomic_write(path + ".md") as f:
        f.write(markdown(out))
    print(f"wrote {path}.json and {path}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
