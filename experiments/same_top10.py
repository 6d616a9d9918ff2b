"""Same top-10 before and after a refactor: XR-Linear's test-set top-10, two code trees.

A restructuring that changes no behaviour must leave every trained model's
predictions as they were.  This trains ``--method xr-linear`` (the default
config, seed 0) on a dataset with the jxmc of a given source tree and saves the
test set's top-10 ids (``i32[n, 10]``) and scores (``f32[n, 10]``); then compares
two saved runs: the rows whose top-10 ids differ and the largest
``|score difference|`` (0 and 0.0 when nothing changed)::

    # the old code, from a read-only worktree of its commit
    git worktree add /tmp/head 360fee8
    .venv/bin/python experiments/same_top10.py run --src /tmp/head \\
        --data ../shared/data/bibtex --out /tmp/top10_old_bibtex.npz
    # the new code (this checkout)
    .venv/bin/python experiments/same_top10.py run --src . \\
        --data ../shared/data/bibtex --out /tmp/top10_new_bibtex.npz
    .venv/bin/python experiments/same_top10.py compare /tmp/top10_old_bibtex.npz \\
        /tmp/top10_new_bibtex.npz

``compare`` writes ``experiments/results/same_top10_<dataset>.json`` (machine,
date, both commits -- ``+dirty``: the tree's uncommitted state -- the counts).  ``run`` trains in a child process whose
``PYTHONPATH`` is the source tree and checks that ``jxmc`` was imported from
there; it calls the library only (``jxmc.models.get_method``, ``fit``,
``predict``), whose calls both trees share.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

K = 10
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _commit(src: str) -> str:
    """The source tree's commit, ``+dirty`` when its tracked files (other than the
    results this script writes) differ from it."""
    try:
        head = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", src, "status", "--porcelain", "--untracked-files=no",
                                "--", ".", ":(exclude)experiments/results"],
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _child(data: str, out: str, src: str) -> None:
    """Runs in the child process: trains, predicts, saves (``PYTHONPATH=src``)."""
    import jxmc
    from jxmc.data.dataset import load_dataset
    from jxmc.models import get_method

    where = os.path.realpath(os.path.dirname(jxmc.__file__))
    if not where.startswith(os.path.realpath(src) + os.sep):
        raise SystemExit(f"jxmc was imported from {where}, not from {src}")
    method = get_method("xr-linear")
    ds = load_dataset(data)
    t0 = time.perf_counter()
    params = method.fit(ds.train.X, ds.train.Y, method.Config(), seed=0, progress=False)
    t_fit = time.perf_counter() - t0
    top = method.predict(params, ds.test.X, method.Config(), k=K)
    np.savez(out, ids=np.asarray(top.ids), scores=np.asarray(top.scores), dataset=ds.name,
             commit=_commit(src), src=os.path.realpath(src), fit_seconds=t_fit)
    print(f"{ds.name}: {top.ids.shape[0]} test rows, fit {t_fit:.1f} s, saved {out}")


def run(args) -> None:
    env = dict(os.environ, PYTHONPATH=os.path.realpath(args.src))
    data = os.path.abspath(args.data) if os.path.exists(args.data) else args.data
    subprocess.run([sys.executable, os.path.abspath(__file__), "_child", data,
                    os.path.abspath(args.out), args.src], check=True, env=env, cwd=os.path.realpath(args.src))


def compare(args) -> dict:
    a, b = np.load(args.a), np.load(args.b)
    dataset = str(a["dataset"])
    if str(b["dataset"]) != dataset or a["ids"].shape != b["ids"].shape:
        raise SystemExit(f"{args.a} and {args.b} are not runs on the same data")
    rows = int((a["ids"] != b["ids"]).any(axis=1).sum())
    both = np.isfinite(a["scores"]) & np.isfinite(b["scores"])
    same_inf = (np.isfinite(a["scores"]) == np.isfinite(b["scores"])).all()
    diff = np.abs(a["scores"][both] - b["scores"][both])
    out = {"dataset": dataset, "machine": f"{platform.node()} ({platform.machine()}, "
                                          f"{os.cpu_count()} cores)",
           "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "commit_a": str(a["commit"]), "commit_b": str(b["commit"]),
           "src_a": str(a["src"]), "src_b": str(b["src"]),
           "fit_seconds_a": round(float(a["fit_seconds"]), 1),
           "fit_seconds_b": round(float(b["fit_seconds"]), 1),
           "rows": int(a["ids"].shape[0]), "k": K, "rows_with_different_ids": rows,
           "max_abs_score_diff": float(diff.max(initial=0.0)) if same_inf else float("inf"),
           "identical": bool(rows == 0 and same_inf and not diff.any())}
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"same_top10_{dataset}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(json.dumps(out))
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and save the test top-10 with the jxmc of --src")
    r.add_argument("--src", required=True, help="the source tree (holds jxmc/)")
    r.add_argument("--data", required=True, help="a dataset folder or spec")
    r.add_argument("--out", required=True, help="the .npz to write")
    c = sub.add_parser("compare", help="compare two saved runs; write the JSON")
    c.add_argument("a")
    c.add_argument("b")
    args = parser.parse_args()
    run(args) if args.cmd == "run" else compare(args)


if __name__ == "__main__":
    main()
