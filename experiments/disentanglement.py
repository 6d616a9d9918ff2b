"""Benchmark of the tree methods of issue 6: parabel and bonsai on Bibtex and
Delicious, and label disentanglement (``--clusters-per-label 2`` against 1) on
debtags and debian-deps.

Command (from the repository root; about an hour on 2 shared CPU cores):

    nice -n 19 python experiments/disentanglement.py [--data ../shared/data]
        [--parts trees disentanglement] [--datasets NAME ...] [--work /tmp/jxmc-disentanglement] [--note TEXT]

Every run is one ``jxmc train`` process (so each pays its own XLA compilation,
as a user does), then ``jxmc evaluate --json`` on the same model directory; the
training time is the ``train_seconds`` that ``jxmc train`` records in the model
directory (featurisation excluded, compilation included).  The runs, one after
another:

* trees: ``parabel`` and ``bonsai`` with their defaults (3 trees), with one tree
  (``--set n_trees=1``), and ``parabel`` with Parabel's own node probability
  (``--set transform=l2-hinge``), on bibtex and delicious;
* disentanglement: ``xr-linear`` with ``--clusters-per-label 1`` and ``2`` on
  debtags and debian-deps, and ``2`` with ``--set copy_fraction=0.25`` (only the
  most entangled quarter of the labels copied).

Writes ``experiments/results/disentanglement.json`` and ``.md`` with the
machine, the date, the commit (and whether the working tree had uncommitted
changes), the exact commands and the figures.  Published P@1/3/5 (Extreme
Classification Repository, BoW features; ``../shared/PEERS.md``): Bibtex Parabel
64.53/38.56/27.94, Delicious Parabel 67.44/61.83/56.75.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "harness"))
import provenance  # noqa: E402

PUBLISHED = {("bibtex", "parabel"): (64.53, 38.56, 27.94),
             ("delicious", "parabel"): (67.44, 61.83, 56.75)}
KEYS = ("P@1", "P@3", "P@5", "nDCG@3", "nDCG@5", "PSP@1", "PSP@3", "PSP@5")
PARTS = {
    "trees": [(ds, name, flags) for ds in ("bibtex", "delicious") for name, flags in (
        ("parabel", ["--method", "parabel"]),
        ("parabel, 1 tree", ["--method", "parabel", "--set", "n_trees=1"]),
        ("parabel, l2-hinge", ["--method", "parabel", "--set", "transform=l2-hinge"]),
        ("bonsai", ["--method", "bonsai"]),
        ("bonsai, 1 tree", ["--method", "bonsai", "--set", "n_trees=1"]))],
    "disentanglement": [(ds, name, ["--method", "xr-linear", *flags])
                        for ds in ("debtags", "debian-deps") for name, flags in (
        ("xr-linear, lambda=1", ["--clusters-per-label", "1"]),
        ("xr-linear, lambda=2", ["--clusters-per-label", "2"]),
        ("xr-linear, lambda=2, copy_fraction=0.25",
         ["--clusters-per-label", "2", "--set", "copy_fraction=0.25"]))],
}


def machine() -> dict:
    """:func:`bench_scale.machine` plus the JAX version and backend, and where jxmc is from."""
    import jax
    from bench_scale import machine as host

    import jxmc
    m = host()
    load = m.pop("load_average_start")
    return {**m, "jax": jax.__version__, "backend": jax.default_backend(),
            "jxmc_from": str(Path(jxmc.__file__).parent), "load_average_at_start": load}


def git_state() -> dict:
    """The commit and whether tracked files outside experiments/results/ have changes."""
    return provenance.git_state()


def jxmc(*argv: str) -> subprocess.CompletedProcess:
    """``python -m jxmc ARGV`` with the persistent compile cache off (cold)."""
    return subprocess.run([sys.executable, "-m", "jxmc", *argv], capture_output=True, text=True,
                          env=provenance.cold_env())


def run_one(data_root: Path, work: Path, dataset: str, name: str, flags: list[str]) -> dict:
    data = str(data_root / dataset)
    model_dir = work / f"{dataset}-{name.replace(', ', '-').replace('=', '').replace(' ', '')}"
    train = ["train", "--data", data, "--model-dir", str(model_dir), "--no-progress", *flags]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    r = jxmc(*train)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(train)} failed:\n{r.stderr[-2000:]}")
    wall = time.perf_counter() - start
    ev = jxmc("evaluate", "--data", data, "--model-dir", str(model_dir), "--json")
    if ev.returncode != 0:
        raise SystemExit(f"evaluate {model_dir} failed:\n{ev.stderr[-2000:]}")
    metrics = json.loads(ev.stdout)
    manifest = json.loads((model_dir / "jxmc_model.json").read_text())
    row = {"dataset": dataset, "run": name, "command": "jxmc " + shlex.join(train),
           "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
           "load_average_at_start": round(load, 1),
           **{k: round(100 * metrics[k], 2) for k in KEYS},
           "train_s": manifest["train_seconds"], "process_wall_s": round(wall, 1),
           "config": manifest["config"], "published_P@1/3/5": PUBLISHED.get((dataset, name))}
    print(json.dumps({k: row[k] for k in ("dataset", "run", "P@1", "P@3", "P@5", "PSP@5",
                                          "train_s")}), flush=True)
    return row


def provenance_lines(result: dict, title: str) -> list[str]:
    """The title, command, date, commit and machine lines of a results page."""
    m, g = result["machine"], result["git"]
    return [f"# {title}", "", f"Command: `{result['command']}`", "",
            f"Date {result['date']}; commit `{g['commit'][:12]}`"
            + (" with uncommitted changes in the working tree" if g["dirty"] else "")
            + f"; {m['cpu']}, {m['cores']} cores, JAX {m['jax']} ({m['backend']}); "
            f"load average {m['load_average_at_start']:.1f} at the start (a shared machine: "
            "times are indicative).", ""]


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def markdown(result: dict) -> str:
    lines = provenance_lines(result, "Tree methods (parabel, bonsai) and label disentanglement")
    for e in result.get("earlier", []):
        lines += [f"Earlier invocation kept in these tables: `{e['command']}`, {e['date']}, "
                  f"commit `{e['git']['commit'][:12]}`" + (" (uncommitted changes)" if e["git"]["dirty"]
                                                           else "") + "."]
        lines += [f"Note ({e['date']}): {n}" for n in e["notes"]]
    if result.get("earlier"):
        lines.append("")
    lines += [f"Note: {n}" for n in result["notes"]] + ([""] if result["notes"] else [])
    lines += ["Metrics in % on the test split (PSP@k: A=0.55, B=1.5, normalised by the best "
              "achievable). train s: `train_seconds` of `jxmc train` (XLA compilation included, "
              "featurisation excluded); load: the machine's 1-minute load average when the run "
              "started (2 cores: above 2, other jobs were sharing them).", ""]
    rows = result["runs"]
    trees = [r for r in rows if r["dataset"] in ("bibtex", "delicious")]
    if trees:
        lines += ["| dataset | run | P@1 | P@3 | P@5 | nDCG@5 | PSP@5 | train s | load | "
                  "published P@1/3/5 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in trees:
            pub = "/".join(f"{v:.2f}" for v in r["published_P@1/3/5"]) if r["published_P@1/3/5"] else "-"
            lines.append(f"| {r['dataset']} | {r['run']} | {r['P@1']:.2f} | {r['P@3']:.2f} | "
                         f"{r['P@5']:.2f} | {r['nDCG@5']:.2f} | {r['PSP@5']:.2f} | "
                         f"{r['train_s']:.1f} | {r.get('load_average_at_start', float('nan')):.1f} | {pub} |")
        lines.append("")
    dis = [r for r in rows if r["dataset"] not in ("bibtex", "delicious")]
    if dis:
        lines += ["| dataset | run | P@1 | P@3 | P@5 | PSP@5 | train s | load | time vs lambda=1 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        base = {r["dataset"]: r["train_s"] for r in dis if r["run"] == "xr-linear, lambda=1"}
        for r in dis:
            ratio = r["train_s"] / base[r["dataset"]] if r["dataset"] in base else float("nan")
            lines.append(f"| {r['dataset']} | {r['run']} | {r['P@1']:.2f} | {r['P@3']:.2f} | "
                         f"{r['P@5']:.2f} | {r['PSP@5']:.2f} | {r['train_s']:.1f} | "
                         f"{r.get('load_average_at_start', float('nan')):.1f} | {ratio:.2f}x |")
        lines.append("")
    lines += ["Commands (each followed by `jxmc evaluate --data DIR --model-dir M --json`):", ""]
    lines += [f"- `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    ap.add_argument("--work", default="/tmp/jxmc-disentanglement", help="model directories")
    ap.add_argument("--out", default=str(REPO / "experiments" / "results"))
    ap.add_argument("--note", action="append", default=[], help="recorded in the results")
    ap.add_argument("--datasets", nargs="+", default=None,
                    help="only these datasets of the chosen parts")
    ap.add_argument("--runs", nargs="+", default=None, help="only the runs of these names")
    ap.add_argument("--no-merge", action="store_true",
                    help="drop the runs of earlier invocations from the results files")
    provenance.add_arguments(ap)
    args = ap.parse_args()
    provenance.require_clean(args.allow_dirty, "disentanglement.py")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"command": "python experiments/disentanglement.py " + shlex.join(sys.argv[1:]),
              "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "git": git_state(), "notes": args.note, "runs": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "disentanglement.json"
    old = json.loads(previous.read_text()) if previous.exists() and not args.no_merge else None
    for part in args.parts:
        for dataset, name, flags in PARTS[part]:
            if (args.datasets and dataset not in args.datasets) or (args.runs and name not in args.runs):
                continue
            result["runs"].append({**run_one(Path(args.data), work, dataset, name, flags),
                                   "date": result["date"], "git": result["git"]})
            write(result, old, out)  # after every run: an interrupted invocation keeps its runs


def write(result: dict, old: dict | None, out: Path) -> None:
    """Writes the results files atomically, keeping the runs of ``old`` (an earlier
    invocation) that this one has not redone."""
    result = dict(result)
    if old is not None:
        mine = {(r["dataset"], r["run"]) for r in result["runs"]}
        kept = [r for r in old["runs"] if (r["dataset"], r["run"]) not in mine]
        order = [(d, n) for p in PARTS for d, n, _ in PARTS[p]]
        result["runs"] = sorted(kept + result["runs"],
                                key=lambda r: order.index((r["dataset"], r["run"])))
        result["earlier"] = old.get("earlier", []) + [{k: old[k] for k in
                                                       ("command", "date", "git", "machine", "notes")}]
    write_atomic(out / "disentanglement.json", json.dumps(result, indent=1) + "\n")
    write_atomic(out / "disentanglement.md", markdown(result))

if __name__ == "__main__":
    main()
