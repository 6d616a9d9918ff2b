"""Calibration of the top-k scores of xr-linear on debtags and debian-deps (issue 19).

Command (from the repository root; ~10 minutes on 2 shared CPU cores, most of it
debian-deps' four trainings):

    nice -n 19 python experiments/calibration.py [--data ../shared/data]
        [--datasets debtags debian-deps] [--folds 3]

For each raw-text dataset, in one process and with the library calls that
``jxmc train`` / ``jxmc calibrate`` / ``jxmc evaluate`` make:

1. the default method (xr-linear, default config, seed 0) is trained on the whole
   training split (TF-IDF featurisation as ``jxmc train --data DIR`` does it);
2. the calibration pairs are cross-fitted on the training split
   (:func:`jxmc.calibration.cross_fit_pairs`, ``--folds`` folds: train on F-1,
   score the held-out fold's top-10) and an isotonic and a Platt calibrator are
   fitted on the same pooled pairs (``jxmc calibrate --method isotonic|platt``);
3. on the test split: ECE@k (L1, 10 equal-width bins) and Brier@k of the raw
   scores (xr-linear's l3-hinge path products, already in [0, 1]) and of both
   calibrated probabilities, and P@k of the raw and the calibrated rankings (the
   predictions are not re-sorted, so P@k cannot change; it is recomputed from the
   calibrated output to show it).

Writes ``experiments/results/calibration.json`` and ``.md`` (machine, date,
commit, the figures) and ``calibration_reliability.png`` (reliability diagrams of
the top-10 pairs, when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))
sys.path.insert(0, str(REPO / "experiments" / "harness"))
import provenance  # noqa: E402

KS = (1, 3, 5, 10)
RESULTS = REPO / "experiments" / "results"


def git_state() -> dict:
    """The commit and whether tracked files outside experiments/results/ have changes."""
    return provenance.git_state()


def machine() -> dict:
    import jax
    from bench_scale import machine as host

    return {**host(), "jax": jax.__version__, "backend": jax.default_backend()}


def write_atomic(path: Path, data, mode="w") -> None:
    from jxmc.fileio import atomic_write

    with atomic_write(str(path), mode=mode, encoding=None if "b" in mode else "utf-8") as f:
        f.write(data)


def run_dataset(data_root: Path, name: str, folds: int) -> dict:
    from jxmc import calibration, metrics
    from jxmc.data.dataset import load_dataset
    from jxmc.models import DEFAULT_METHOD, get_method

    method = get_method(DEFAULT_METHOD)
    config = method.Config()
    t0 = time.perf_counter()
    ds = load_dataset(str(data_root / name))
    t_data = time.perf_counter() - t0
    print(f"{name}: {ds.train.X.shape[0]} train / {ds.test.X.shape[0]} test, L={ds.n_labels} "
          f"({t_data:.0f} s)", flush=True)
    t0 = time.perf_counter()
    params = method.fit(ds.train.X, ds.train.Y, config, seed=0, progress=False)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    pair_scores, pair_rel = calibration.cross_fit_pairs(
        method, ds.train.X, ds.train.Y, config, folds=folds, k=max(KS), seed=0,
        log=lambda m: print(m, flush=True))
    t_cross = time.perf_counter() - t0
    cals = {m: calibration.fit(pair_scores, pair_rel, m, k=max(KS), folds=folds)
            for m in calibration.METHODS}
    topk = method.predict(params, ds.test.X, config, k=max(KS))
    rel = metrics.topk_relevance(topk.ids, ds.test.Y)
    p_at = {f"P@{k}": float(rel[:, :k].sum() / (k * rel.shape[0])) for k in KS}
    raw = metrics.calibration_metrics(topk.scores, rel, ks=KS)
    out = {"dataset": name, "n_train": int(ds.train.X.shape[0]), "n_test": int(ds.test.X.shape[0]),
           "n_labels": int(ds.n_labels), "method": DEFAULT_METHOD, "folds": folds,
           "seconds": {"data": round(t_data, 1), "train": round(t_train, 1),
                       "cross_fit": round(t_cross, 1)},
           "n_pairs": int(np.isfinite(pair_scores).sum()),
           "raw": {**raw, **p_at}, "bins": {"raw": _bins(topk.scores, rel)}}
    official = metrics.evaluate(topk.ids, ds.test.Y, ks=KS)
    out["raw"].update({f"P@{k}_evaluate": official[f"P@{k}"] for k in KS})
    for m, cal in cals.items():
        probs = cal(topk.scores)
        # the ranking is the model's (not re-sorted): P@k from the calibrated output
        order_same = bool(np.all(np.diff(np.where(np.isfinite(probs), probs, -1.0), axis=1) <= 0))
        out[m] = {**metrics.calibration_metrics(probs, rel, ks=KS), **p_at,
                  "rows_still_sorted": order_same,
                  "n_breakpoints": len(cal.x), "a": cal.a, "b": cal.b}
        out["bins"][m] = _bins(probs, rel)
    print(json.dumps({k: out[k] for k in ("raw", "isotonic", "platt")}, indent=1), flush=True)
    return out


def _bins(probs, rel) -> dict:
    from jxmc import metrics

    b = metrics.reliability_bins(probs, rel, 10)
    return {k: v.tolist() for k, v in b.items()}


def plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.6), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
        for key, style in (("raw", "o-"), ("isotonic", "s-"), ("platt", "^-")):
            b = r["bins"][key]
            cnt = np.asarray(b["count"])
            keep = cnt > 0
            ece = r[key]["ECE@10"]
            ax.plot(np.asarray(b["confidence"])[keep], np.asarray(b["accuracy"])[keep], style,
                    label=f"{key} (ECE@10 {100 * ece:.1f}%)")
        ax.set_title(f"{r['dataset']}: xr-linear top-10, test split")
        ax.set_xlabel("predicted probability (bin mean)")
        ax.set_ylabel("share relevant")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue(), mode="wb")
    return True


def markdown(res: dict) -> str:
    g, m = res["git"], res["machine"]
    lines = ["# Calibration of xr-linear's top-k scores (issue 19)", "",
             f"Command: `{res['command']}`", "",
             f"Date {res['date']}; commit `{g['commit'][:12]}`"
             + (" with uncommitted changes in the working tree" if g["dirty"] else "") + ".",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; jax {m['jax']} "
             f"({m['backend']}); load average {m['load_average_start']:.1f} at the start.", "",
             f"Calibrators cross-fitted on the training split ({res['folds']} folds: train on "
             f"{res['folds'] - 1}, score the held-out fold's top-10, pool the pairs); metrics on "
             "the test split. ECE@k: L1, 10 equal-width bins over the top-k (probability, "
             "relevant) pairs; Brier@k: their mean squared error. In %.", ""]
    for r in res["results"]:
        lines += [f"## {r['dataset']} ({r['n_train']} train / {r['n_test']} test, L={r['n_labels']}; "
                  f"{r['n_pairs']} calibration pairs)", "",
                  "| scores | " + " | ".join(f"ECE@{k}" for k in KS) + " | "
                  + " | ".join(f"Brier@{k}" for k in KS) + " | P@1 | P@3 | P@5 |",
                  "|---" * (2 * len(KS) + 4) + "|"]
        for key in ("raw", "isotonic", "platt"):
            v = r[key]
            lines.append(f"| {key} | " + " | ".join(f"{100 * v[f'ECE@{k}']:.2f}" for k in KS) + " | "
                         + " | ".join(f"{100 * v[f'Brier@{k}']:.2f}" for k in KS) + " | "
                         + " | ".join(f"{100 * v[f'P@{k}']:.2f}" for k in (1, 3, 5)) + " |")
        lines += ["", f"Times: featurisation {r['seconds']['data']} s, training {r['seconds']['train']} s, "
                  f"cross-fitting {r['seconds']['cross_fit']} s. Isotonic breakpoints: "
                  f"{r['isotonic']['n_breakpoints']}; Platt a={r['platt']['a']:.3f}, "
                  f"b={r['platt']['b']:.3f}.", ""]
    lines.append("Reliability diagram: `calibration_reliability.png`." if res["figure"]
                 else "No reliability diagram: matplotlib is not installed.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--datasets", nargs="+", default=["debtags", "debian-deps"])
    ap.add_argument("--folds", type=int, default=3)
    provenance.add_arguments(ap)
    args = ap.parse_args()
    provenance.require_clean(args.allow_dirty, "calibration.py")
    res = {"command": "python experiments/calibration.py " + " ".join(sys.argv[1:]),
           "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
           "compile_cache": "off (in-process; no persistent cache)",
           "git": git_state(), "machine": machine(), "folds": args.folds, "results": []}
    for name in args.datasets:
        res["results"].append(run_dataset(Path(args.data), name, args.folds))
    res["figure"] = plot(res["results"], RESULTS / "calibration_reliability.png")
    write_atomic(RESULTS / "calibration.json", json.dumps(res, indent=1))
    write_atomic(RESULTS / "calibration.md", markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
