"""Benchmark of ``--method cs`` (compressed sensing, Hsu et al. 2009) on Bibtex and Delicious.

Command (from the repository root; a few minutes on 2 CPU cores):

    python experiments/cs.py [--data ../shared/data] [--datasets bibtex delicious]
        [--set key=value ...] [--tune] [--allow-dirty]

Runs cs with its defaults on each dataset (on Bibtex, L = 159 < the default
m = 400, so m is clipped to L: no compression; a second Bibtex row, ``m=100``,
is the compressive setting), fits on the training split, evaluates on the test
split, and writes ``experiments/results/cs.json`` and ``.md``: P@1/3/5,
nDCG@3/5, PSP@1/3/5 (A=0.55, B=1.5), fit and predict seconds (one process,
compilation included; the machine is shared, so times are noisy), the
published figures beside, and the provenance (command, date, commit, machine;
:mod:`experiments.harness.provenance`).

``--tune`` instead chooses the defaults: it holds out a random fifth of the
*training* split (seed 0), fits on the rest over a small grid of m, sparsity,
ridge and projection, and writes ``experiments/results/cs_tune.json`` / ``.md``
(the test split is never read).

Published P@1/3/5 (Extreme Classification Repository, CS row, BoW features):
Bibtex 58.87/33.53/23.72, Delicious 61.36/56.46/52.07.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "harness"))

import provenance  # noqa: E402

from jxmc import metrics  # noqa: E402
from jxmc.data.dataset import load_dataset  # noqa: E402
from jxmc.fileio import atomic_write  # noqa: E402
from jxmc.models.base import config_to_dict, parse_overrides  # noqa: E402
from jxmc.models.embedding import cs  # noqa: E402

PUBLISHED = {"bibtex": (58.87, 33.53, 23.72), "delicious": (61.36, 56.46, 52.07)}
KEYS = ("P@1", "P@3", "P@5", "nDCG@3", "nDCG@5", "PSP@1", "PSP@3", "PSP@5")
# Extra rows per dataset beyond the defaults (``--set`` pairs on top of the command's).
EXTRA = {"bibtex": [["m=100"]]}
# The tuning grid (held-out fifth of the training split).
GRID = {"m": {"bibtex": [50, 100, 120, 159], "delicious": [100, 200, 400, 600]},
        "sparsity": [10, 20, 40], "ridge": [0.3, 1.0, 3.0],
        "projection": ["gaussian", "rademacher"]}


def run_one(ds, overrides: list[str]) -> dict:
    config = parse_overrides(cs.Config, overrides)
    start = time.perf_counter()
    params = cs.fit(ds.train.X, ds.train.Y, config, seed=0, progress=False)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    topk = cs.predict(params, ds.test.X, config, k=5)
    predict_s = time.perf_counter() - start
    inv_prop = metrics.inv_propensity(metrics.label_counts(ds.train.Y, ds.n_labels_all),
                                      ds.train.X.shape[0], *metrics.propensity_ab(ds.name))
    res = metrics.evaluate(topk.ids, ds.test.Y, inv_prop, ks=(1, 3, 5))
    return {"dataset": ds.name, "method": "cs", "set": overrides,
            "config": config_to_dict(config), "m_used": int(params["A"].shape[0]),
            **{k: round(100 * res[k], 2) for k in KEYS},
            "fit_s": round(fit_s, 2), "predict_s": round(predict_s, 2),
            "published_P@1/3/5": PUBLISHED.get(ds.name)}


def tune(ds, overrides: list[str]) -> list[dict]:
    """The grid on a held-out fifth of the training split; one row per setting."""
    X, Y = ds.train.X, ds.train.Y
    perm = np.random.default_rng(0).permutation(X.shape[0])
    cut = X.shape[0] * 4 // 5
    tr, va = np.sort(perm[:cut]), np.sort(perm[cut:])
    rows = []
    for m, ridge, proj in itertools.product(GRID["m"][ds.name], GRID["ridge"], GRID["projection"]):
        fit_pairs = [f"m={m}", f"ridge={ridge}", f"projection={proj}", *overrides]
        params = cs.fit(X[tr], Y[tr], parse_overrides(cs.Config, fit_pairs), seed=0,
                        progress=False)
        for s in GRID["sparsity"]:
            config = parse_overrides(cs.Config, [*fit_pairs, f"sparsity={s}"])
            res = metrics.evaluate(cs.predict(params, X[va], config, k=5).ids, Y[va],
                                   ks=(1, 3, 5))
            row = {"dataset": ds.name, "m": m, "ridge": ridge, "projection": proj,
                   "sparsity": s, **{k: round(100 * res[k], 2) for k in ("P@1", "P@3", "P@5")}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _header(info: dict, title: str) -> list[str]:
    m = info["machine"]
    git = info["git"]
    return [f"# {title}", "", f"Command: `{info['command']}`", "",
            f"Date: {info['date']}; commit {git['commit'][:10]}"
            f"{' (uncommitted changes)' if git['dirty'] else ''}; machine: {m['cpu']}, "
            f"{m['cores']} cores, JAX {m.get('jax', '?')} ({m.get('backend', '?')}); shared "
            f"development machine, load average at start {info['load_avg_start']}: times are "
            f"noisy.", ""]


def results_markdown(rows: list[dict], info: dict) -> str:
    lines = _header(info, "Compressed sensing (cs): Bibtex and Delicious") + [
        "Metrics in % on the test split; PSP@k with A=0.55, B=1.5. Fit and predict seconds in "
        "one process, XLA compilation included. Published: Extreme Classification Repository, "
        "CS row.", "",
        "| dataset | --set | m used | P@1 | P@3 | P@5 | nDCG@3 | nDCG@5 | PSP@1 | PSP@3 | PSP@5 "
        "| fit s | predict s | published P@1/3/5 |", "|" + " --- |" * 14]
    for r in rows:
        pub = "/".join(f"{v:.2f}" for v in r["published_P@1/3/5"]) if r["published_P@1/3/5"] \
            else "-"
        lines.append(f"| {r['dataset']} | {' '.join(r['set']) or 'defaults'} | {r['m_used']} | "
                     + " | ".join(f"{r[k]:.2f}" for k in KEYS)
                     + f" | {r['fit_s']:.1f} | {r['predict_s']:.1f} | {pub} |")
    return "\n".join(lines) + "\n"


def tune_markdown(rows: list[dict], info: dict) -> str:
    lines = _header(info, "Tuning cs on a held-out fifth of the training split") + [
        "P@k in % on the held-out fifth (random, seed 0) of the training split, fitted on the "
        "other four fifths; the test split is not read.", "",
        "| dataset | m | ridge | projection | sparsity | P@1 | P@3 | P@5 |", "|" + " --- |" * 8]
    for r in sorted(rows, key=lambda r: (r["dataset"], -r["P@1"])):
        lines.append(f"| {r['dataset']} | {r['m']} | {r['ridge']} | {r['projection']} | "
                     f"{r['sparsity']} | {r['P@1']:.2f} | {r['P@3']:.2f} | {r['P@5']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--datasets", nargs="+", default=["bibtex", "delicious"])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override applied to every run")
    parser.add_argument("--tune", action="store_true",
                        help="grid on a held-out fifth of the training split instead")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results"))
    provenance.add_arguments(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty, "cs.py")
    command = "python experiments/cs.py" + "".join(f" --set {o}" for o in args.overrides) + \
        (" --tune" if args.tune else "") + (" --allow-dirty" if args.allow_dirty else "")
    info = provenance.record(command)
    info.pop("compile_cache", None)  # no jxmc subprocess: the library is called in-process
    rows = []
    for name in args.datasets:
        ds = load_dataset(str(Path(args.data) / name))
        if args.tune:
            rows += tune(ds, args.overrides)
            continue
        for extra in [[], *EXTRA.get(name, [])]:
            row = run_one(ds, [*args.overrides, *extra])
            print(json.dumps(row), flush=True)
            rows.append(row)
    stem = "cs_tune" if args.tune else "cs"
    out = Path(args.out)
    with atomic_write(out / f"{stem}.json") as f:
        f.write(json.dumps({**info, "results": rows}, indent=1) + "\n")
    with atomic_write(out / f"{stem}.md") as f:
        f.write((tune_markdown if args.tune else results_markdown)(rows, info))


if __name__ == "__main__":
    main()
