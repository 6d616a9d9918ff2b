"""Load test of ``jxmc serve`` on the loopback: throughput and latency, answers checked.

Trains (or takes ``--model-dir``) an xr-linear model on a dataset (default
``../shared/data/debtags``, raw text), starts ``jxmc serve`` as a subprocess
(``--port 0``; it prints ``serving on http://host:port`` once warmed up), and with
a real HTTP client (``urllib.request``, one connection per request) sends the
test split's first ``--queries`` documents, one point per request:

* ``sequential``: one client, one request at a time;
* ``concurrent``: ``--clients`` threads at once (the service gathers them into
  micro-batches of at most ``--max-batch`` points, waiting ``--max-wait-ms``).

Each phase stops after ``--requests`` requests or ``--seconds`` seconds, whichever
comes first. Latency is the client's wall time of one request (connect, send,
answer); throughput is answered requests per second of the phase's wall time.
Every answer is checked against ``jxmc predict``'s on the same documents (same
labels in the same order, scores within 1e-5). Writes
``experiments/results/serve.json`` and ``serve.md`` (machine, date, commit,
load average)::

    .venv/bin/python experiments/bench_serve.py                       # debtags, xr-linear
    .venv/bin/python experiments/bench_serve.py --requests 200 --seconds 30 --allow-dirty

The service's compile cache is off (``JXMC_COMPILE_CACHE=off``): warm-up compiles
every batch bucket before the service reports ready, so no request pays a compile
unless its rows are longer than ``--warm-nnz``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "harness"))
sys.path.insert(0, str(REPO))
import provenance  # noqa: E402
from common import read_queries, write_json_atomic  # noqa: E402

RESULTS = REPO / "experiments" / "results"


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "debtags"))
    p.add_argument("--model-dir", default=None,
                   help="a trained model, or where to train one (default: a temporary folder)")
    p.add_argument("--method", default="xr-linear")
    p.add_argument("--queries", type=int, default=500, help="distinct test documents sent")
    p.add_argument("--requests", type=int, default=500, help="most requests per phase")
    p.add_argument("--seconds", type=float, default=60.0, help="most seconds per phase")
    p.add_argument("--clients", type=int, default=8, help="threads of the concurrent phase")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--warm-nnz", type=int, default=None,
                   help="jxmc serve --warm-nnz (default: the longest query's padded row length, so "
                        "that no request pays a compile)")
    p.add_argument("--out", default=str(RESULTS / "serve"), help="writes OUT.json and OUT.md")
    provenance.add_arguments(p)
    return p.parse_args(argv)


def jxmc(*argv: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "jxmc", *argv], capture_output=True, text=True,
                       env={**provenance.cold_env(), "PYTHONPATH": str(REPO)})
    if r.returncode != 0:
        raise SystemExit(f"jxmc {' '.join(argv)} failed:\n{r.stderr[-3000:]}")
    return r


def expected_answers(model_dir: str, queries: list[str], k: int, work: str) -> list[list[tuple[str, float]]]:
    """``jxmc predict``'s top-k of the queries (one per line of a text file)."""
    path, out = os.path.join(work, "queries.txt"), os.path.join(work, "pred.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(q + "\n" for q in queries))
    jxmc("predict", "--data", path, "--model-dir", model_dir, "--top-k", str(k), "--out", out)
    with open(out, encoding="utf-8") as f:
        return [[(p.rsplit(":", 1)[0], float(p.rsplit(":", 1)[1])) for p in line.split()]
                for line in f]


def longest_row(model_dir: str, queries: list[str]) -> int:
    """The padded row length (a power of two >= 8) of the longest featurised query, bias included."""
    from jxmc.modeldir import load

    nnz = int(load(model_dir).featurizer.transform(queries).getnnz(axis=1).max()) + 1
    return max(8, 1 << (nnz - 1).bit_length())


def start_server(args, model_dir: str) -> tuple[subprocess.Popen, str, float]:
    cmd = [sys.executable, "-m", "jxmc", "serve", "--model-dir", model_dir, "--port", "0",
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
           "--max-k", str(args.k), "--warm-nnz", str(args.warm_nnz)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**provenance.cold_env(), "PYTHONPATH": str(REPO)})
    line = proc.stdout.readline()
    if not line.startswith("serving on "):
        proc.kill()
        raise SystemExit(f"jxmc serve did not start: {line!r}\n{proc.stderr.read()[-3000:]}")
    return proc, line.split()[-1], time.perf_counter() - t0


def request(url: str, key: str, query: str, k: int) -> tuple[float, list]:
    body = json.dumps({key: [query], "k": k}).encode()
    req = urllib.request.Request(url + "/predict", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        obj = json.loads(r.read())
    return time.perf_counter() - t0, obj["predictions"][0]


def same(got: list, want: list[tuple[str, float]]) -> bool:
    return [g["label"] for g in got] == [n for n, _ in want] and \
        all(abs(g["score"] - s) <= 1e-5 for g, (_, s) in zip(got, want, strict=True))


def phase(url: str, key: str, queries, expected, k: int, clients: int, n_max: int, seconds: float) -> dict:
    """``clients`` threads sending one query per request until ``n_max`` requests or
    ``seconds`` have gone; latencies and the answers' agreement with ``jxmc predict``."""
    lock = threading.Lock()
    state = {"next": 0}
    lat, wrong, errors = [], [], []
    deadline = time.perf_counter() + seconds

    def client():
        while True:
            with lock:
                i = state["next"]
                if i >= n_max or time.perf_counter() >= deadline:
                    return
                state["next"] += 1
            q = i % len(queries)
            try:
                t, got = request(url, key, queries[q], k)
            except (urllib.error.URLError, OSError, ValueError) as e:
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            with lock:
                lat.append(t)
                if not same(got, expected[q]):
                    wrong.append(q)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    ms = sorted(1000 * x for x in lat)

    def pct(p):
        return round(ms[min(len(ms) - 1, int(round(p / 100 * (len(ms) - 1))))], 3) if ms else None

    return {"clients": clients, "requests": len(lat), "errors": len(errors),
            "error_examples": errors[:3], "wall_s": round(wall, 3),
            "throughput_rps": round(len(lat) / wall, 2) if wall > 0 else None,
            "latency_ms": {"p50": pct(50), "p99": pct(99),
                           "mean": round(statistics.fmean(ms), 3) if ms else None,
                           "max": round(ms[-1], 3) if ms else None},
            "answers_equal_jxmc_predict": len(wrong) == 0 and len(lat) > 0,
            "answers_differing": len(wrong)}


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=30) as r:
        return json.loads(r.read())


def write_md(path: Path, res: dict) -> None:
    m, g = res["machine"], res["git"]
    lines = [f"# jxmc serve: load test on the loopback ({res['dataset']}, {res['method']})", "",
             f"{res['date']}, commit `{g['commit'][:12]}`" + (" (uncommitted changes)" if g["dirty"] else "")
             + f"; {m['cpu']}, {m.get('cores_usable')} usable cores, load average "
             f"{res['load_avg_start']} at start, {res['load_avg_end']} at the end"
             + (" (a shared, loaded machine: the figures are pessimistic)" if res.get("loaded") else "")
             + ".", "",
             f"`{res['command']}`", "",
             f"Service: `jxmc serve --max-batch {res['args']['max_batch']} --max-wait-ms "
             f"{res['args']['max_wait_ms']} --max-k {res['args']['k']} --warm-nnz "
             f"{res['args']['warm_nnz']}`; ready "
             f"{res['server']['start_to_ready_s']} s after start (warm-up "
             f"{res['server']['warmup_seconds']} s). One document per request, k = {res['args']['k']}, "
             f"urllib (a new connection per request, included in the latency); {res['queries']} "
             f"distinct test documents, sent in turn.", "",
             "| phase | clients | requests | req/s | p50 ms | p99 ms | errors | points per jitted call "
             "| answers = `jxmc predict` |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, ph in res["phases"].items():
        lat = ph["latency_ms"]
        same = "yes" if ph["answers_equal_jxmc_predict"] else f"NO ({ph['answers_differing']} differ)"
        lines.append(f"| {name} | {ph['clients']} | {ph['requests']} | {ph['throughput_rps']} | "
                     f"{lat['p50']} | {lat['p99']} | {ph['errors']} | "
                     f"{ph['served']['points'] / max(ph['served']['batches'], 1):.2f} | {same} |")
    lines += ["", "Points per jitted call: the phase's points over the micro-batches the service "
                  "gathered them into (before padding to a power of two)."]
    from jxmc.fileio import atomic_write

    with atomic_write(str(path)) as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = _args(argv)
    provenance.require_clean(args.allow_dirty, "bench_serve.py")
    command = " ".join(["python experiments/bench_serve.py", *(argv if argv is not None else sys.argv[1:])])
    rec = provenance.record(command)
    with tempfile.TemporaryDirectory(prefix="bench_serve-") as work:
        model_dir = args.model_dir or os.path.join(work, "model")
        train_s = None
        if not os.path.isfile(os.path.join(model_dir, "jxmc_model.json")):
            print(f"bench_serve: training {args.method} on {args.data} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            jxmc("train", "--data", args.data, "--model-dir", model_dir, "--method", args.method,
                 "--no-progress")
            train_s = round(time.perf_counter() - t0, 1)
        key, queries = "texts", read_queries(args.data, args.queries, "bench_serve.py")
        print(f"bench_serve: jxmc predict on {len(queries)} queries ...", file=sys.stderr, flush=True)
        expected = expected_answers(model_dir, queries, args.k, work)
        if args.warm_nnz is None:
            args.warm_nnz = longest_row(model_dir, queries)
        print("bench_serve: starting jxmc serve ...", file=sys.stderr, flush=True)
        proc, url, ready_s = start_server(args, model_dir)
        try:
            h0 = h1 = health(url)
            phases = {}
            for name, clients in (("sequential", 1), ("concurrent", args.clients)):
                print(f"bench_serve: {name} ({clients} client(s)) ...", file=sys.stderr, flush=True)
                phases[name] = phase(url, key, queries, expected, args.k, clients, args.requests,
                                     args.seconds)
                before, h1 = h1["served"], health(url)
                phases[name]["served"] = {k: h1["served"][k] - before[k] for k in before}
                print(f"  {json.dumps(phases[name])}", file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    load_end = provenance.load_avg()
    res = {**rec, "dataset": os.path.basename(os.path.normpath(args.data)), "method": args.method,
           "model_dir": args.model_dir or "(a temporary folder)",
           "train_s": train_s, "trained_here": train_s is not None,
           "queries": len(queries), "input": key, "args": vars(args),
           "server": {"start_to_ready_s": round(ready_s, 2), "warmup_seconds": h0["warmup_seconds"],
                      "served": h1["served"]},
           "phases": phases, "load_avg_end": load_end,
           "loaded": bool(load_end and load_end[0] > 0.5 * (rec["machine"].get("cores_usable") or 1))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(str(out) + ".json", res)
    write_md(Path(str(out) + ".md"), res)
    print(f"bench_serve: wrote {out}.json and {out}.md", file=sys.stderr)
    ok = all(ph["answers_equal_jxmc_predict"] and ph["errors"] == 0 for ph in phases.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
