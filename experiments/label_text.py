"""A tree method with and without label texts (``--set label_text=true``) on debian-deps.

Command (from the repository root; about 20 minutes for xr-linear on 2 CPU cores):

    python experiments/label_text.py [--data ../shared/data] [--method xr-linear]
        [--set key=value ...] [--weights 0.1,...] [--decays 0,1,...] [--trees a,b]
        [--out DIR] [--allow-dirty]

debian-deps ships ``label_texts.txt.xz`` (each label's own short description); 6,016
of its test labels never occur in training.  The text-backed score of
:mod:`jxmc.models.tree_linear.label_text` has two knobs, ``label_text_weight``
(``lam``) and ``label_text_decay`` (``lam_l = lam / (1 + decay * n_l)``: 0 mixes
every label alike, a larger one leaves the head labels their tree scores).  The script

1. chooses them, and the tree's label embedding ``label_text_tree`` (``pifa_lf_concat``
   or ``pifa_or_text``), on a held-out fifth of the *training* split (random, seed 0;
   the test split is not read for the choice): the method is fitted on the other four
   fifths without label texts and with ``label_text=true`` (once per tree embedding),
   the latter's predictions rescored for every (weight, decay) of the grid, and the
   chosen setting is the one of largest P@1 among those whose PSP@5 is at least
   ``MIN_GAIN = 2`` points above the method without label texts (issue 18's goal;
   none: the one of largest PSP@5); the same choice restricted to ``decay = 0`` and
   ``pifa_lf_concat`` (the uniform mix) is reported beside it;
2. fits the method on the whole training split without label texts (the defaults)
   and with ``label_text=true`` and the chosen tree embedding(s), and predicts the
   test split (scored with both chosen settings).

Every run is scored against the same ground truth, every test label kept (test labels
unseen in training are columns with training count 0: they count in the ideal of
PSP@k and the denominator of recall@k): P@1/3/5, PSP@1/3/5 (A=0.55, B=1.5), R@10;
on the test points whose labels include an unseen one: P@1/3/5, PSP@5, R@10 over
those points; and recall@10 on the unseen labels (their positives found in the top
10 / all their positives, micro-averaged,
:func:`jxmc.models.tree_linear.label_text.unseen_recall`).  Writes ``label_text.json``
and ``.md`` (``label_text_<method>.*`` for another method) under ``--out`` (default
``experiments/results``) with the provenance (command, date, commit, machine;
:mod:`experiments.harness.provenance`).
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
from jxmc.models import get_method  # noqa: E402
from jxmc.models.base import config_to_dict, parse_overrides  # noqa: E402
from jxmc.models.tree_linear import label_text as lt  # noqa: E402

KS = (1, 3, 5, 10)
WEIGHTS = (0.05, 0.1, 0.2, 0.3, 0.5)
DECAYS = (0.0, 0.1, 0.3, 1.0, 3.0)
TREES = ("pifa_lf_concat", "pifa_or_text")
MIN_GAIN = 2.0  # PSP@5 points above the method without label texts (issue 18's goal)
KEYS = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "R@10")
SUB_KEYS = ("P@1", "P@3", "P@5", "PSP@5", "R@10")


def _fit_predict(method, config, X, Y, Xte, space=None, settings=None):
    """Fits, predicts ``Xte`` (top 10); returns ``({setting: ids}, fit_s, predict_s)``
    (one entry, key None, without label texts; ``setting`` a (weight, decay) pair)."""
    t0 = time.perf_counter()
    if space is None:
        params = method.fit(X, Y, config, seed=0, progress=False)
    else:
        params = lt.fit(method, X, Y, config, space, seed=0, progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    off = replace(config, label_text=False)  # the tree (average) alone, then the texts
    tree_top = method.predict(params, Xte, off, k=max(KS))
    if space is None:
        out = {None: tree_top.ids}
    else:
        tops = lt.rescore_grid(params, Xte, tree_top, settings, max(KS))
        out = {st: top.ids for st, top in zip(settings, tops, strict=True)}
    return out, fit_s, time.perf_counter() - t0


def scores(ids, Y, inv_prop, counts) -> dict:
    """The metrics of the module docstring (in %) for predictions ``ids`` of truth ``Y``
    (``counts``: the training positives of each label; 0: unseen)."""
    res = metrics.evaluate(ids, Y, inv_prop, ks=KS)
    row = {k: round(100 * res[k], 2) for k in KEYS}
    Y = sp.csr_matrix(Y)
    seen = np.zeros(Y.shape[1], bool)
    seen[: len(counts)] = np.asarray(counts) > 0
    rows = np.flatnonzero(np.diff(sp.csr_matrix(Y[:, ~seen]).indptr) > 0)
    sub = metrics.evaluate(ids[rows], Y[rows], inv_prop, ks=KS)
    row.update({f"unseen-points {k}": round(100 * sub[k], 2) for k in SUB_KEYS})
    un = lt.unseen_recall(ids, Y, counts, k=10)
    row["unseen-labels R@10"] = round(100 * un["R@10"], 2)
    row["unseen points"] = un["points"]
    row["unseen positives"] = un["positives"]
    return row


def _choose(rows, base: dict, uniform: bool = False) -> dict:
    """The row of largest P@1 (then PSP@5) among those whose PSP@5 is at least
    :data:`MIN_GAIN` points above ``base`` (none: the row of largest PSP@5); with
    ``uniform`` among the rows of decay 0 and the ``pifa_lf_concat`` tree only."""
    if uniform:
        rows = [r for r in rows if r["decay"] == 0.0 and r["tree"] == TREES[0]]
    ok = [r for r in rows if r["PSP@5"] >= base["PSP@5"] + MIN_GAIN]
    if not ok:
        return max(rows, key=lambda r: r["PSP@5"])
    return max(ok, key=lambda r: (r["P@1"], r["PSP@5"]))


def choose_weight(ds, method, space: lt.LabelSpace, off, on, settings, trees=TREES):
    """(tree, weight, decay) chosen on a held-out fifth of the training split (module
    docstring); returns ``(best, best_uniform, base_row, rows)``."""
    X, Y, T = ds.train.X, ds.train.Y, space.features
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
    sub = lt.LabelSpace([space.names[j] for j in order], T[order], n_seen)
    plain, _, _ = _fit_predict(method, off, X[tr], Ytr_, X[va])
    base = {"tree": None, "weight": None, "decay": None, **scores(plain[None], Yva, inv, counts)}
    rows = []
    for tree in trees:
        ids, _, _ = _fit_predict(method, replace(on, label_text_tree=tree), X[tr], Ytr_, X[va],
                                 sub, settings)
        rows += [{"tree": tree, "weight": w, "decay": d, **scores(ids[(w, d)], Yva, inv, counts)}
                 for w, d in settings]
        print(json.dumps({"held-out": tree, "rows": rows[-len(settings):]}), flush=True)
    return _choose(rows, base), _choose(rows, base, uniform=True), base, rows


def _reindex(Y: sp.csr_matrix, col: np.ndarray, width: int) -> sp.csr_matrix:
    out = sp.csr_matrix((Y.data, col[Y.indices], Y.indptr), shape=(Y.shape[0], width))
    out.sort_indices()
    return out


def markdown(info: dict, result: dict) -> str:
    m, git = info["machine"], info["git"]
    best, uni = result["chosen"], result["chosen_uniform"]
    lines = [f"# {result['method']} with label texts: {result['dataset']}", "",
             f"Command: `{info['command']}`", "",
             f"Date: {info['date']}; commit {git['commit'][:10]}"
             f"{' (uncommitted changes)' if git['dirty'] else ''}; machine: {m['cpu']}, "
             f"{m['cores']} cores, JAX {m.get('jax', '?')} ({m.get('backend', '?')}); shared "
             f"development machine, load average at start {info['load_avg_start']}: times are "
             f"noisy.", "",
             f"Labels: {result['n_labels_train']} in training, {result['n_labels_ext']} with "
             f"label texts ({result['n_text_only']} text-only); test labels unseen in training: "
             f"{result['n_unseen_test']}, of which {result['n_unseen_with_text']} have a text. "
             f"Chosen on a held-out fifth of the training split (largest P@1 among the settings "
             f"whose PSP@5 is at least {MIN_GAIN:g} points above {result['method']} without "
             f"label texts there): label_text_tree {best['tree']}, label_text_weight "
             f"{best['weight']}, label_text_decay {best['decay']}; the same choice with decay 0 "
             f"and the pifa_lf_concat tree (every label mixed alike): weight {uni['weight']}.", "",
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
    lines += ["", "Choice of label_text_tree, label_text_weight and label_text_decay (held-out "
              "fifth of the training split; first row: without label texts):", "",
              "| tree | weight | decay | P@1 | P@3 | P@5 | PSP@5 | unseen labels R@10 |",
              "|" + " --- |" * 8]
    for r in [result["tuning_base"]] + result["tuning"]:
        lines.append(f"| {r['tree'] or '-'} | {r['weight'] if r['weight'] is not None else '-'} | "
                     f"{r['decay'] if r['decay'] is not None else '-'} | {r['P@1']:.2f} | "
                     f"{r['P@3']:.2f} | {r['P@5']:.2f} | {r['PSP@5']:.2f} | "
                     f"{r['unseen-labels R@10']:.2f} |")
    return "\n".join(lines) + "\n"


def _grid(text: str) -> tuple[float, ...]:
    return tuple(float(w) for w in text.split(","))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--dataset", default="debian-deps")
    parser.add_argument("--method", default="xr-linear", choices=("xr-linear", "parabel", "bonsai"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="the method's option for every run")
    parser.add_argument("--weights", default=",".join(map(str, WEIGHTS)),
                        help="the label_text_weight grid (comma-separated)")
    parser.add_argument("--decays", default=",".join(map(str, DECAYS)),
                        help="the label_text_decay grid (comma-separated; 0 is always tried)")
    parser.add_argument("--trees", default=",".join(TREES),
                        help="the label_text_tree values tried (comma-separated)")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results"))
    provenance.add_arguments(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty, "label_text.py")
    command = "python experiments/label_text.py" \
        + (f" --method {args.method}" if args.method != "xr-linear" else "") \
        + "".join(f" --set {o}" for o in args.overrides) \
        + (f" --weights {args.weights}" if args.weights != parser.get_default("weights") else "") \
        + (f" --decays {args.decays}" if args.decays != parser.get_default("decays") else "") \
        + (f" --trees {args.trees}" if args.trees != parser.get_default("trees") else "") \
        + (" --allow-dirty" if args.allow_dirty else "")
    info = provenance.record(command)
    info.pop("compile_cache", None)  # no jxmc subprocess: the library is called in-process
    decays = tuple(sorted(set(_grid(args.decays)) | {0.0}))
    settings = [(w, d) for d in decays for w in _grid(args.weights)]

    ds = load_dataset(str(Path(args.data) / args.dataset))
    method = get_method(args.method)
    space = lt.for_dataset(ds)
    names = space.names
    Yte = lt.test_labels(ds, names)
    L = ds.n_labels
    off = parse_overrides(method.Config, args.overrides)
    on = replace(off, label_text=True)
    best, uni, base, tuning = choose_weight(ds, method, space, off, on, settings,
                                            tuple(args.trees.split(",")))
    print(json.dumps({"chosen": best, "chosen_uniform": uni, "base": base}), flush=True)

    counts = np.zeros(Yte.shape[1], np.int64)
    counts[:L] = ds.label_counts()[:L]
    inv = metrics.inv_propensity(counts, ds.train.X.shape[0], *metrics.propensity_ab(ds.name))
    rows = []
    runs = [(off, None, None)]  # (config, label space, (weight, decay) settings)
    if uni["tree"] == best["tree"]:
        runs.append((replace(on, label_text_tree=best["tree"]), space, list(dict.fromkeys(
            [(best["weight"], best["decay"]), (uni["weight"], 0.0)]))))
    else:
        runs += [(replace(on, label_text_tree=r["tree"]), space, [(r["weight"], r["decay"])])
                 for r in (best, uni)]
    for config, space_run, chosen in runs:
        ids, fit_s, pred_s = _fit_predict(method, config, ds.train.X, ds.train.Y, ds.test.X,
                                          space_run, chosen)
        for key, run_ids in ids.items():
            run = args.method if key is None else (f"{args.method} label_text (tree "
                                                   f"{config.label_text_tree}, weight {key[0]}, "
                                                   f"decay {key[1]})")
            cfg = config if key is None else replace(config, label_text_weight=key[0],
                                                     label_text_decay=key[1])
            row = {"run": run, "config": config_to_dict(cfg),
                   **scores(run_ids, Yte, inv, counts),
                   "fit_s": round(fit_s, 1), "predict_s": round(pred_s, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    unseen = set(ds.extra_label_names)
    result = {"dataset": ds.name, "method": args.method, "chosen": best, "chosen_uniform": uni,
              "n_labels_train": L, "n_labels_ext": len(names), "n_text_only": len(names) - L,
              "n_unseen_test": len(unseen),
              "n_unseen_with_text": len(unseen.intersection(names)),
              "rows": rows, "tuning_base": base, "tuning": tuning}
    out = Path(args.out)
    stem = "label_text" if args.method == "xr-linear" else f"label_text_{args.method}"
    with atomic_write(out / f"{stem}.json") as f:
        f.write(json.dumps({**info, **result}, indent=1) + "\n")
    with atomic_write(out / f"{stem}.md") as f:
        f.write(markdown(info, result))


if __name__ == "__main__":
    main()
