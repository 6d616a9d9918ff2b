"""Sparse bf16 tree-head tables against f32/AdamW (issue 16, part 1): P@1 and the train
step's compiled temporaries of cascadexml / lightxml on the debtags subset of
``tests/test_transformer_learning.py`` (1000 seeded training and 400 test documents,
the pretrained all-MiniLM-L6-v2, 16 tokens, batches of 16).

Command (from the repository root; a few minutes per variant on 2 CPU cores):

    nice -n 19 .venv/bin/python experiments/sparse_heads.py [--methods cascadexml,lightxml]
        [--variants adam,rowwise-adagrad:bfloat16:0.03,sgd:bfloat16:0.3] [--epochs 1]
        [--out /tmp/sparse_heads] [--allow-dirty]

A variant is ``head_update[:head_dtype[:lr_rows]]`` (:mod:`jxmc.nn.sparse_rows`); every
other option is the test's (``lr_heads`` 3e-2 for cascadexml, 1e-2 for lightxml: level 1
and, for ``adam``, every table).  Per method and variant: test P@1, the popularity
baseline, wall seconds of fit + predict, and ``temp_bytes`` of one compiled train step
(:func:`jxmc.models.transformer.plan.compile_train_step`, XLA's memory analysis on
this backend).  The same heads at Amazon-3M's label count: ``experiments/bench_heads_scale.py``.
Writes ``sparse_heads.json`` and ``.md`` under ``--out`` (default ``experiments/results``)
and prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "harness"))
sys.path.insert(0, str(REPO))
import provenance  # noqa: E402

N_TRAIN, N_TEST = 1000, 400
COMMON = dict(max_len=16, batch_size=16, lr_encoder=2e-4, lr_heads=3e-2, warmup=0.1,
              predict_batch_size=100)
EXTRA = {"cascadexml": dict(), "lightxml": dict(lr_heads=1e-2, dropout=0.1)}


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="cascadexml")
    p.add_argument("--variants", default="adam,rowwise-adagrad:bfloat16:0.03")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "debtags"))
    p.add_argument("--out", default=str(REPO / "experiments" / "results"))
    provenance.add_arguments(p)
    return p.parse_args(argv)


def load(folder: str):
    from jxmc.data.subsets import text_subset

    return text_subset(folder, N_TRAIN, N_TEST, seed=0)  # the learning test's subsets


def run_one(method: str, variant: str, data: dict, epochs: int, seed: int) -> dict:
    import numpy as np

    from jxmc.data.subsets import p_at_1
    from jxmc.models.transformer import cascadexml, common, lightxml, plan
    from jxmc.tree.shortlist import level_positives

    module = {"cascadexml": cascadexml, "lightxml": lightxml}[method]
    parts = variant.split(":")
    over = {"head_update": parts[0]}
    if len(parts) > 1:
        over["head_dtype"] = parts[1]
    if len(parts) > 2:
        over["lr_rows"] = float(parts[2])
    config = module.Config(**{**COMMON, **EXTRA[method], "epochs": epochs, **over})
    t0 = time.perf_counter()
    net = common.fit_network(module.RECIPE, data["Xtr"], data["Ytr"], data["tr_t"], config,
                             seed=seed, progress=False)
    params = common.saved_params(net)
    top = module.predict(params, data["Xte"], config, k=1, texts=data["te_t"])
    wall = time.perf_counter() - t0
    ids, Y = top.ids[:, 0], data["Yte"]
    spec = module.make_spec(config, net.bert, net.tree.branching)
    widths = tuple(p.shape[1] for p in level_positives(data["Ytr"], net.tree))
    heads = net.params["heads"]
    compiled = plan.compile_train_step(net.params, spec, net.tree.perm, config,
                                         batch_size=config.batch_size, positives=widths)
    return {"method": method, "variant": variant, "epochs": epochs,
            "p_at_1": round(100 * p_at_1(ids, Y), 2),
            "baseline": round(100 * data["baseline"], 2), "wall_s": round(wall, 1),
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
            "table_dtypes": {k: str(np.asarray(v["w"]).dtype) for k, v in heads.items()},
            "table_rows": {k: int(np.asarray(v["w"]).shape[0]) for k, v in heads.items()}}


def main(argv=None) -> int:
    args = _args(argv)
    provenance.require_clean(args.allow_dirty, "sparse_heads.py")
    record = provenance.record("python experiments/sparse_heads.py " + " ".join(
        sys.argv[1:] if argv is None else argv))
    runs = []
    data = load(args.data)
    for method in args.methods.split(","):
        for variant in args.variants.split(","):
            r = run_one(method, variant, data, args.epochs, args.seed)
            print(json.dumps(r), flush=True)
            runs.append(r)
    write({"record": record, "runs": runs}, args.out)
    return 0


def write(res: dict, out: str) -> None:
    """``sparse_heads.json`` and ``.md`` under ``out`` (atomically)."""
    from jxmc.fileio import atomic_write

    os.makedirs(out, exist_ok=True)
    with atomic_write(os.path.join(out, "sparse_heads.json")) as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    rec = res["record"]
    lines = ["# Sparse low-precision tree-head tables against f32/AdamW "
             "(`experiments/sparse_heads.py`)", "",
             f"{rec['date']}, commit {rec['git'].get('commit', '?')[:12]}"
             f"{' (dirty)' if rec['git'].get('dirty') else ''}; `{rec.get('command', '')}`; "
             f"debtags subset: {N_TRAIN} training and {N_TEST} test documents (seed 0), "
             "all-MiniLM-L6-v2, 16 tokens, batches of 16, one seed.", "",
             "| method | variant (update:dtype:lr_rows) | epochs | P@1 | popularity P@1 | "
             "P@1 - adam | step temp MiB | fit + predict s |", "|" + "---|" * 8]
    adam = {r["method"]: r["p_at_1"] for r in res["runs"] if r["variant"] == "adam"}
    for r in res["runs"]:
        gap = (f"{r['p_at_1'] - adam[r['method']]:+.2f}" if r["method"] in adam else "")
        lines.append(f"| {r['method']} | {r['variant']} | {r['epochs']} | {r['p_at_1']:.2f} | "
                     f"{r['baseline']:.2f} | {gap} | {r['temp_bytes'] / 2 ** 20:.0f} | "
                     f"{r['wall_s']} |")
    with atomic_write(os.path.join(out, "sparse_heads.md")) as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
