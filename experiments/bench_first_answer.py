"""How long ``jxmc predict`` takes to answer a few queries from a saved model, from process start.

Trains (or takes ``--model-dir``) an xr-linear model on ``--data`` (default
``../shared/data/debian-deps``), writes the test split's first ``--queries`` texts
to a file, and runs ``python -m jxmc predict --data that file --model-dir M --out F``
in fresh processes, ``--repeats`` times each way:

* ``cold``: the persistent compile cache off (``JXMC_COMPILE_CACHE=off``);
* ``warm``: a cache folder that one earlier, unreported ``jxmc predict`` filled.

The figure is the process's wall time from its start to its exit, with every answer
written (so an upper bound on the first answer), and the process's own CPU time
(user + system, ``resource.getrusage`` of the child); also ``python -c "import jax"``
alone, the floor every JAX program pays.  Issue 17's goal: within 2 s warm and 5 s
cold on debian-deps.  Writes ``experiments/results/first_answer.json`` and ``.md``::

    .venv/bin/python experiments/bench_first_answer.py
    .venv/bin/python experiments/bench_first_answer.py --data ../shared/data/debtags --allow-dirty
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "harness"))
sys.path.insert(0, str(REPO))
import provenance  # noqa: E402
from common import read_queries, write_json_atomic  # noqa: E402

from jxmc.fileio import atomic_write  # noqa: E402

RESULTS = REPO / "experiments" / "results"


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "debian-deps"))
    p.add_argument("--model-dir", default=None,
                   help="a trained model, or where to train one (default: a temporary folder)")
    p.add_argument("--queries", type=int, default=10, help="test documents predicted")
    p.add_argument("--repeats", type=int, default=3, help="processes per way (cold, warm)")
    p.add_argument("--out", default=str(RESULTS / "first_answer"), help="writes OUT.json, OUT.md")
    provenance.add_arguments(p)
    return p.parse_args(argv)


def timed(argv: list[str], env: dict) -> dict:
    """Runs ``argv``; its wall seconds and its own CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{r.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def summary(runs: list[dict], key: str) -> dict:
    vals = [r[key] for r in runs]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def main(argv=None) -> int:
    args = _args(argv)
    provenance.require_clean(args.allow_dirty, "bench_first_answer.py")
    rec = provenance.record(" ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]))
    env = {**provenance.cold_env(), "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="jxmc-first-") as tmp:
        model = args.model_dir or os.path.join(tmp, "model")
        if not os.path.exists(os.path.join(model, "jxmc_model.json")):
            t = timed([sys.executable, "-m", "jxmc", "train", "--data", args.data,
                       "--model-dir", model], env)
            print(f"trained {model} in {t['wall_s']:.1f} s", flush=True)
        queries = os.path.join(tmp, "queries.txt")
        with open(queries, "w", encoding="utf-8") as f:
            f.writelines(q + "\n" for q in read_queries(args.data, args.queries,
                                                        "bench_first_answer.py"))
        predict = [sys.executable, "-m", "jxmc", "predict", "--data", queries, "--model-dir",
                   model, "--out", os.path.join(tmp, "out.txt")]
        cache = os.path.join(tmp, "xla-cache")
        warm_env = {**env, "JXMC_COMPILE_CACHE": cache}
        timed(predict, warm_env)  # fills the cache (not reported)
        ways = {"import jax": ([sys.executable, "-c", "import jax"], env),
                "cold": (predict, env), "warm": (predict, warm_env)}
        runs = {name: [] for name in ways}
        for _ in range(args.repeats):  # interleaved, so that a change of load hits every way
            for name, (cmd, e) in ways.items():
                runs[name].append(timed(cmd, e))
        with open(os.path.join(tmp, "out.txt"), encoding="utf-8") as f:
            answered = sum(1 for _ in f)
    rec["compile_cache"] = "cold and warm, as stated per row"
    out = {**rec, "data": args.data, "queries": args.queries, "repeats": args.repeats,
           "answered": answered, "load_avg_end": provenance.load_avg(),
           "ml_dtypes": importlib.metadata.version("ml_dtypes"),
           "ways": {name: {"wall_s": summary(r, "wall_s"), "cpu_s": summary(r, "cpu_s"),
                           "runs": r} for name, r in runs.items()}}
    write_json_atomic(args.out + ".json", out)
    lines = [f"# `jxmc predict` on {args.queries} queries, from process start to exit",
             "", f"Written by `experiments/bench_first_answer.py` on {rec['date']} at commit "
             f"`{rec['git']['commit'][:12]}`{' (dirty tree)' if rec['git']['dirty'] else ''}.",
             f"Machine: {rec['machine'].get('cpu', '?')}, load average at start "
             f"{rec['load_avg_start']}, at end {out['load_avg_end']}.",
             f"Model: xr-linear on `{args.data}`; {args.repeats} fresh processes per row "
             "(median, [min, max]).", "",
             "| process | wall s | CPU s |", "| --- | --- | --- |"]
    for name, w in out["ways"].items():
        ws, cs = w["wall_s"], w["cpu_s"]
        label = {"cold": "jxmc predict, compile cache off",
                 "warm": "jxmc predict, warm compile cache"}.get(name, f"`python -c \"{name}\"`")
        lines.append(f"| {label} | {ws['median']:.2f} [{ws['min']:.2f}, {ws['max']:.2f}] | "
                     f"{cs['median']:.2f} [{cs['min']:.2f}, {cs['max']:.2f}] |")
    lines += ["", "A call of at most `host_queries` (64) queries is answered by the host beam "
              "(`jxmc/models/tree_linear/host_beam.py`), which compiles nothing; the rest of "
              "the time is Python start, imports (JAX with ml_dtypes "
              f"{out['ml_dtypes']}, orbax; the TF-IDF is applied by `jxmc.data.tfidf`, without "
              "importing scikit-learn) and reading the model."]
    with atomic_write(args.out + ".md") as f:
        f.write("\n".join(lines) + "\n")
    print(json.dumps({k: v["wall_s"]["median"] for k, v in out["ways"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
