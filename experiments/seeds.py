"""XR-Linear's figures over several seeds: jxmc, PECOS and napkinXC, mean and range.

Usage (from the repository root; about 3x the time of one harness run)::

    python experiments/seeds.py [--seeds 0 1 2] [--data ../shared/data/{bibtex,delicious,debtags,debian-deps}]

Seed 0 is the harness's main run (``experiments/results/<dataset>.json``, written
by ``experiments/bench_xr_linear.py``); it is run again here unless that file is
from the current commit.  Every other seed runs ``bench_xr_linear.py --seed S``
into ``experiments/results/seeds/seed<S>/``.  The seed reaches every system: jxmc's
k-means and solver order, PECOS's k-means, napkinXC's tree.  Writes
``experiments/results/seeds.json`` / ``.md``: per dataset and system, the mean,
min and max of P@1/3/5 and PSP@5, and jxmc − PECOS in P@1 per seed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "harness"))

import provenance  # noqa: E402

from jxmc.fileio import atomic_write  # noqa: E402

RESULTS = os.path.join(HERE, "results")
DEFAULT_DATA = [f"../shared/data/{d}" for d in ("bibtex", "delicious", "debtags", "debian-deps")]
QUALITY = ("P@1", "P@3", "P@5", "PSP@5")
KEYS = ("jxmc:xr-linear", "pecos:xr-linear", "napkinxc:plt")


def folder_of(seed: int) -> str:
    return RESULTS if seed == 0 else os.path.join(RESULTS, "seeds", f"seed{seed}")


def run_bench(seed: int, data: list[str], allow_dirty: bool) -> None:
    cmd = [sys.executable, os.path.join(HERE, "bench_xr_linear.py"), "--data", *data,
           "--seed", str(seed), "--no-merge", "--out", os.path.relpath(folder_of(seed), REPO)]
    if allow_dirty:
        cmd.append("--allow-dirty")
    print("seeds.py: " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env=provenance.cold_env())


def read(seed: int, dataset: str) -> dict | None:
    path = os.path.join(folder_of(seed), f"{dataset}.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def spread(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4), "min": min(values), "max": max(values),
            "values": values}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    p.add_argument("--reuse", action="store_true",
                   help="only aggregate the results files already there (no runs)")
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    provenance.require_clean(args.allow_dirty, "seeds.py")
    head = provenance.git_state()["commit"]
    names = [os.path.basename(os.path.normpath(d)) for d in args.data]
    if not args.reuse:
        for seed in args.seeds:
            stale = [d for d, n in zip(args.data, names, strict=True)
                     if (r := read(seed, n)) is None or r["run"]["git_commit"] != head
                     or r["run"].get("seed", 0) != seed
                     or any(r["results"].get(k, {}).get("status") != "ok" for k in KEYS)]
            if stale:
                run_bench(seed, stale, args.allow_dirty)
    out = {**provenance.record("python experiments/seeds.py " + " ".join(sys.argv[1:] if argv is None
                                                                         else argv)),
           "seeds": args.seeds, "n_seeds": len(args.seeds), "spread": {}, "gap": {}, "runs": {}}
    for n in names:
        per = {s: read(s, n) for s in args.seeds}
        if any(r is None for r in per.values()):
            continue
        out["runs"][n] = {str(s): {"date": r["run"]["date"], "commit": r["run"]["git_commit"],
                                   "dirty": r["run"]["git_dirty"]} for s, r in per.items()}
        out["spread"][n] = {}
        for key in KEYS:
            entries = [r["results"].get(key) for r in per.values()]
            if any(e is None or e.get("status") != "ok" for e in entries):
                continue
            out["spread"][n][key] = {"label": entries[0]["label"],
                                     **{q: spread([e["metrics"][q] for e in entries]) for q in QUALITY}}
        if {"jxmc:xr-linear", "pecos:xr-linear"} <= set(out["spread"][n]):
            gaps = [round(r["results"]["jxmc:xr-linear"]["metrics"]["P@1"]
                          - r["results"]["pecos:xr-linear"]["metrics"]["P@1"], 4) for r in per.values()]
            out["gap"][n] = spread(gaps)
    provenance_dirty = any(v["dirty"] or v["commit"] != head for runs in out["runs"].values()
                           for v in runs.values())
    out["git"]["dirty"] = out["git"]["dirty"] or provenance_dirty
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "seeds.json")
    with atomic_write(path) as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    lines = ["# XR-Linear over seeds", "", f"Command: `{out['command']}`; {out['date']}; commit "
             f"`{head[:12]}`{' (some runs from other commits or a dirty tree)' if provenance_dirty else ''}.",
             "", "| dataset | system | " + " | ".join(QUALITY) + " |", "|" + " --- |" * (2 + len(QUALITY))]
    for n, systems in out["spread"].items():
        for s in systems.values():
            lines.append(f"| {n} | {s['label']} | " + " | ".join(
                f"{s[q]['mean']:.2f} [{s[q]['min']:.2f}, {s[q]['max']:.2f}]" for q in QUALITY) + " |")
    lines += ["", "jxmc − PECOS, P@1 per seed: " + "; ".join(
        f"{n} {', '.join(f'{g:+.2f}' for g in v['values'])}" for n, v in out["gap"].items())]
    with atomic_write(os.path.join(RESULTS, "seeds.md")) as f:
        f.write("\n".join(lines) + "\n")
    print(f"seeds.py: wrote {os.path.relpath(path, REPO)} and seeds.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
