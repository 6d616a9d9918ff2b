"""Benchmark of the label-embedding methods: plst, cplst, leml on Bibtex and Delicious.

Command (from the repository root; about 2 minutes on 2 CPU cores):

    python experiments/label_embedding.py [--data ../shared/data] [--datasets bibtex delicious]
        [--methods plst cplst leml] [--set key=value ...]

Writes ``experiments/results/label_embedding.json`` and ``.md``: P@1/3/5,
nDCG@3/5, PSP@1/3/5 (A=0.55, B=1.5; normalised by the best achievable value),
fit seconds cold (first call in the process, with XLA compilation, as ``jxmc
train`` pays it) and warm (a second fit in the same process), predict ms per
test point (warm), and the machine (CPU model from /proc/cpuinfo, cores, JAX
backend).  Every method runs with its defaults (rank 100; ridge 1.0 for
plst/cplst, 3.0 for leml; leml 10 alternations) unless ``--set`` changes them.
The development machine is shared with other jobs, so times are noisy.

Published P@1/3/5 (Extreme Classification Repository, BoW features): Bibtex
CPLST 62.38/37.84/27.62, LEML 62.54/38.41/28.21; Delicious CPLST
65.31/59.95/55.31, LEML 65.67/60.55/56.08.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax

from jxmc import metrics
from jxmc.data.dataset import load_dataset
from jxmc.models.base import config_to_dict, parse_overrides
from jxmc.models.embedding import cplst, leml, plst

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "harness"))
import provenance  # noqa: E402

MODULES = {"plst": plst, "cplst": cplst, "leml": leml}
PUBLISHED = {  # Extreme Classification Repository, P@1/3/5 in percent
    ("bibtex", "cplst"): (62.38, 37.84, 27.62), ("bibtex", "leml"): (62.54, 38.41, 28.21),
    ("delicious", "cplst"): (65.31, 59.95, 55.31), ("delicious", "leml"): (65.67, 60.55, 56.08),
}
KEYS = ("P@1", "P@3", "P@5", "nDCG@3", "nDCG@5", "PSP@1", "PSP@3", "PSP@5")


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(),
            "note": "shared development machine: other jobs ran alongside, times are noisy"}


def run_one(ds, name: str, overrides: list[str]) -> dict:
    module = MODULES[name]
    config = parse_overrides(module.Config, overrides)
    times = []
    for _ in range(2):  # cold (compiles), then warm
        start = time.perf_counter()
        params = module.fit(ds.train.X, ds.train.Y, config, seed=0, progress=False)
        times.append(time.perf_counter() - start)
    module.predict(params, ds.test.X, config, k=5)  # compile the batch shapes
    start = time.perf_counter()
    topk = module.predict(params, ds.test.X, config, k=5)
    predict_s = time.perf_counter() - start
    inv_prop = metrics.inv_propensity(metrics.label_counts(ds.train.Y, ds.n_labels_all),
                                      ds.train.X.shape[0], *metrics.propensity_ab(ds.name))
    res = metrics.evaluate(topk.ids, ds.test.Y, inv_prop, ks=(1, 3, 5))
    return {"dataset": ds.name, "method": name, "config": config_to_dict(config),
            **{k: round(100 * res[k], 2) for k in KEYS},
            "fit_s_cold": round(times[0], 2), "fit_s_warm": round(times[1], 2),
            "predict_ms_per_point": round(1000 * predict_s / ds.test.X.shape[0], 4),
            "published_P@1/3/5": PUBLISHED.get((ds.name, name))}


def to_markdown(rows: list[dict], info: dict, command: str, record: dict | None = None) -> str:
    when = "" if record is None else (
        f"Date: {record['date']}; commit `{record['git']['commit'][:12]}`"
        + (" with uncommitted changes" if record["git"]["dirty"] else "") + ".")
    lines = ["# Label embeddings: plst, cplst, leml", "",
             f"Command: `{command}`", "", when, "",
             f"Machine: {info['cpu']}, {info['cores']} cores, JAX {info['jax']} "
             f"({info['backend']}); {info['note']}.", "",
             "Metrics in % on the test split; PSP@k with A=0.55, B=1.5, normalised by the best "
             "achievable value. Fit cold = first fit in the process (includes XLA compilation); "
             "warm = a second fit. Defaults: rank 100; ridge 1.0 (plst, cplst), 3.0 (leml); "
             "leml 10 alternations.", "",
             "| dataset | method | P@1 | P@3 | P@5 | nDCG@3 | nDCG@5 | PSP@1 | PSP@3 | PSP@5 "
             "| fit s (cold) | fit s (warm) | predict ms/point | published P@1/3/5 |",
             "|" + " --- |" * 14]
    for r in rows:
        pub = "/".join(f"{v:.2f}" for v in r["published_P@1/3/5"]) if r["published_P@1/3/5"] \
            else "-"
        lines.append(f"| {r['dataset']} | {r['method']} | "
                     + " | ".join(f"{r[k]:.2f}" for k in KEYS)
                     + f" | {r['fit_s_cold']:.2f} | {r['fit_s_warm']:.2f} | "
                       f"{r['predict_ms_per_point']:.3f} | {pub} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--datasets", nargs="+", default=["bibtex", "delicious"])
    parser.add_argument("--methods", nargs="+", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override applied to every method")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results"))
    provenance.add_arguments(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty, "label_embedding.py")
    record = provenance.record("python experiments/label_embedding.py" + "".join(
        f" --set {o}" for o in args.overrides))
    rows = []
    for name in args.datasets:
        ds = load_dataset(str(Path(args.data) / name))
        for method in args.methods:
            row = run_one(ds, method, args.overrides)
            print(json.dumps(row), flush=True)
            rows.append(row)
    info = machine()
    command = "python experiments/label_embedding.py" + "".join(
        f" --set {o}" for o in args.overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_embedding.json").write_text(json.dumps({**record, "machine": {**record["machine"], **info},
                                                          "command": command, "results": rows},
                                                         indent=1) + "\n")
    (out / "label_embedding.md").write_text(to_markdown(rows, info, command, record))


if __name__ == "__main__":
    main()
