"""XR-Linear with and without label texts (``--set label_text=true``) on debian-deps.

Command (from the repository root; about 10 minutes on 2 CPU cores):

    python experiments/label_text.py [--data ../shared/data] [--set key=value ...]
        [--weights 0,0.1,...] [--out DIR] [--allow-dirty]

debian-deps ships ``label_texts.txt.xz`` (each label's own short description); 6,016
of its test labels never occur in training.  The script

1. chooses ``label_text_weight`` (``lam`` of :func:`jxmc.models.tree_linear.label_text.rescore`)
   on a held-out fifth of the *training* split (random, seed 0): XR-Linear with
   ``label_text=true`` is fitted on the other four fifths and ``lam`` is the grid
   value of largest PSP@5 whose P@1 is not below that of ``lam = 0`` (the test split
   is not read for the choice);
2. fits XR-Linear on the whole training split without label texts (the defaults) and
   with ``label_text=true`` and the chosen ``lam``, and predicts the test split.

Both are scored against the same ground truth, every test label kept (test labels
unseen in training are columns with training count 0: they count in the ideal of
PSP@k and the denominator of recall@k): P@1/3/5, PSP@1/3/5 (A=0.55, B=1.5), R@10;
on the test points whose labels include an unseen one: P@1/3/5, PSP@5, R@10 over
those points; and recall@10 on the unseen labels (their positives found in the top
10 / all their positives, micro-averaged).  Writes ``label_text.json`` and ``.md``
under ``--out`` (default ``experiments/results``) with the provenance (command,
date, commit, machine; :mod:`experiments.harness.provenance`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "harness"))

import provenance  # noqa: E402

from jxmc import metrics  # noqa: E402
from jxmc.data.dataset import load_dataset  # noqa: E402
from jxmc.fileio import atomic_write  # noqa: E402
from jxmc.models.base import config_to_dict, parse_overrides  # noqa: E402
from jxmc.models.tree_linear import label_text as lt  # noqa: E402
from jxmc.models.tree_linear import xr_linear as xr  # noqa: E402

KS = (1, 3, 5, 10)
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
KEYS = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "R@10")
SUB_KEYS = ("P@1", "P@3", "P@5", "PSP@5", "R@10")


def _fit_predict(config, X, Y, Xte, T=None, weights=None):
    """Fits, predicts ``Xte`` (top 10); returns ``({weight: ids}, fit_s, predict_s)``
    (one entry, key None, without label texts)."""
    t0 = time.perf_counter()
    params = xr.fit(X, Y, config, seed=0, progress=False, label_features=T)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = xr.prepare(params, config)
    tree_top = xr.predict_prepared(model, Xte, replace(config, label_text=False), k=max(KS))
    out = {None: tree_top.ids} if T is None else {
        w: lt.rescore(params, Xte, tree_top, w, max(KS)).ids for w in weights}
    return out, fit_s, time.perf_counter() - t0


def scores(ids, Y, inv_prop, n_seen: int) -> dict:
    """The metrics of the module docstring (in %) for predictions ``ids`` of truth ``Y``."""
    res = metrics.evaluate(ids, Y, inv_prop, ks=KS)
    row = {k: round(100 * res[k], 2) for k in KEYS}
    Y = sp.csr_matrix(Y)
    unseen = sp.csr_matrix(Y[:, n_seen:])
    rows = np.flatnonzero(np.diff(unseen.indptr) > 0)
    sub = metrics.evaluate(ids[rows], Y[rows], inv_prop, ks=KS)
    row.update({f"unseen-points {k}": round(100 * sub[k], 2) for k in SUB_KEYS})
    hits = 0
    for i in rows:
        pos = set(unseen.indices[unseen.indptr[i]:unseen.indptr[i + 1]] + n_seen)
        hits += len(pos.intersection(ids[i].tolist()))
    row["unseen-labels R@10"] = round(100 * hits / max(unseen.nnz, 1), 2)
    row["unseen points"] = int(len(rows))
    row["unseen positives"] = int(unseen.nnz)
    return row


def choose_weight(ds, T, config, weights) -> tuple[float, list[dict]]:
    """``lam`` chosen on a held-out fifth of the training split (module docstring)."""
    X, Y = ds.train.X, ds.train.Y
    perm = np.random.default_rng(0).permutation(X.shape[0])
    cut = X.shape[0] * 4 // 5
    tr, va = np.sort(perm[:cut]), np.sort(perm[cut:])
    # the sub-model's labels: those with a point in the four fifths, then those with a
    # text only; the rest (neither) are columns of the held-out truth only
    seen = np.zeros(T.shape[0], bool)
    seen[: Y.shape[1]] = np.diff(sp.csc_matrix(Y[tr]).indptr) > 0
    has_text = np.diff(T.indptr) > 0
    order = np.concatenate([np.flatnonzero(seen), np.flatnonzero(~seen & has_text)])
    rest = np.flatnonzero(~seen & ~has_text)
    col = np.empty(T.shape[0], np.int64)
    col[order] = np.arange(len(order))
    col[rest] = len(order) + np.arange(len(rest))
    n_seen = int(seen.sum())
    Ytr_ = _reindex(sp.csr_matrix(Y[tr]), col, T.shape[0])[:, :n_seen]
    Yva = _reindex(sp.csr_matrix(Y[va]), col, T.shape[0])
    counts = np.zeros(T.shape[0], np.int64)
    counts[:n_seen] = np.diff(sp.csc_matrix(Ytr_).indptr)
    inv = metrics.inv_propensity(counts, len(tr), *metrics.propensity_ab(ds.name))
    ids, _, _ = _fit_predict(config, X[tr], Ytr_, ds.train.X[va], T[order], weights)
    rows = [{"weight": w, **scores(ids[w], Yva, inv, n_seen)} for w in weights]
    base = rows[0]["P@1"]
    ok = [r for r in rows if r["P@1"] >= base] or rows[:1]
    return max(ok, key=lambda r: r["PSP@5"])["weight"], rows


def _reindex(Y: sp.csr_matrix, col: np.ndarray, width: int) -> sp.csr_matrix:
    out = sp.csr_matrix((Y.data, col[Y.indices], Y.indptr), shape=(Y.shape[0], width))
    out.sort_indices()
    return out


def markdown(info: dict, result: dict) -> str:
    m, git = info["machine"], info["git"]
    lines = [f"# XR-Linear with label texts: {result['dataset']}", "",
             f"Command: `{info['command']}`", "",
             f"Date: {info['date']}; commit {git['commit'][:10]}"
             f"{' (uncommitted changes)' if git['dirty'] else ''}; machine: {m['cpu']}, "
             f"{m['cores']} cores, JAX {m.get('jax', '?')} ({m.get('backend', '?')}); shared "
             f"development machine, load average at start {info['load_avg_start']}: times are "
             f"noisy.", "",
             f"Labels: {result['n_labels_train']} in training, {result['n_labels_ext']} with "
             f"label texts ({result['n_text_only']} text-only); test labels unseen in training: "
             f"{result['n_unseen_test']}, of which {result['n_unseen_with_text']} have a text. "
             f"label_text_weight chosen on a held-out fifth of the training split: "
             f"{result['weight']}.", "",
             "Metrics in % on the test split, every test label kept (unseen ones count 0 in "
             "training); PSP@k with A=0.55, B=1.5. 'unseen points': the "
             f"{result['rows'][0]['unseen points']} test points whose labels include one unseen "
             "in training; 'unseen R@10': their unseen labels found in the top 10 / all "
             f"{result['rows'][0]['unseen positives']} such positives.", "",
             "| run | P@1 | P@3 | P@5 | PSP@1 | PSP@3 | PSP@5 | R@10 | unseen pts P@1 | P@3 | P@5 "
             "| PSP@5 | R@10 | unseen labels R@10 | fit s | predict s |", "|" + " --- |" * 16]
    for r in result["rows"]:
        lines.append(f"| {r['run']} | " + " | ".join(f"{r[k]:.2f}" for k in KEYS) + " | "
                     + " | ".join(f"{r['unseen-points ' + k]:.2f}" for k in SUB_KEYS)
                     + f" | {r['unseen-labels R@10']:.2f} | {r['fit_s']:.1f} | "
                       f"{r['predict_s']:.1f} |")
    lines += ["", "Choice of label_text_weight (held-out fifth of the training split):", "",
              "| weight | P@1 | P@3 | P@5 | PSP@5 | unseen labels R@10 |", "|" + " --- |" * 6]
    for r in result["tuning"]:
        lines.append(f"| {r['weight']} | {r['P@1']:.2f} | {r['P@3']:.2f} | {r['P@5']:.2f} | "
                     f"{r['PSP@5']:.2f} | {r['unseen-labels R@10']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--dataset", default="debian-deps")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="xr-linear option for every run")
    parser.add_argument("--weights", default=",".join(map(str, WEIGHTS)),
                        help="the label_text_weight grid (comma-separated)")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results"))
    provenance.add_arguments(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty, "label_text.py")
    command = "python experiments/label_text.py" + "".join(f" --set {o}" for o in args.overrides) \
        + (f" --weights {args.weights}" if args.weights != parser.get_default("weights") else "") \
        + (" --allow-dirty" if args.allow_dirty else "")
    info = provenance.record(command)
    info.pop("compile_cache", None)  # no jxmc subprocess: the library is called in-process
    weights = tuple(float(w) for w in args.weights.split(","))

    ds = load_dataset(str(Path(args.data) / args.dataset))
    if not ds.label_texts:
        sys.exit(f"label_text.py: {ds.source} has no label_texts.txt")
    names = lt.label_space(ds.label_names, ds.label_texts)
    T = lt.label_features(ds.featurizer, names, ds.label_texts)
    Yte = lt.test_labels(ds, names)
    L = ds.n_labels
    off = parse_overrides(xr.Config, args.overrides)
    on = replace(off, label_text=True)
    weight, tuning = choose_weight(ds, T, on, weights)
    print(json.dumps({"weight": weight, "tuning": tuning}), flush=True)

    counts = np.zeros(Yte.shape[1], np.int64)
    counts[:L] = ds.label_counts()[:L]
    inv = metrics.inv_propensity(counts, ds.train.X.shape[0], *metrics.propensity_ab(ds.name))
    rows = []
    for run, config, T_run in (("xr-linear", off, None),
                               (f"xr-linear label_text (weight {weight})",
                                replace(on, label_text_weight=weight), T)):
        ids, fit_s, pred_s = _fit_predict(config, ds.train.X, ds.train.Y, ds.test.X, T_run,
                                          [weight])
        row = {"run": run, "config": config_to_dict(config),
               **scores(next(iter(ids.values())), Yte, inv, L),
               "fit_s": round(fit_s, 1), "predict_s": round(pred_s, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    unseen = set(ds.extra_label_names)
    result = {"dataset": ds.name, "weight": weight, "n_labels_train": L,
              "n_labels_ext": len(names), "n_text_only": len(names) - L,
              "n_unseen_test": len(unseen),
              "n_unseen_with_text": len(unseen.intersection(names)),
              "rows": rows, "tuning": tuning}
    out = Path(args.out)
    with atomic_write(out / "label_text.json") as f:
        f.write(json.dumps({**info, **result}, indent=1) + "\n")
    with atomic_write(out / "label_text.md") as f:
        f.write(markdown(info, result))


if __name__ == "__main__":
    main()
