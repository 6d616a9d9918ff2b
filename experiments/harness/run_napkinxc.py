"""napkinXC PLT with its defaults on the harness's features (runs in jxmc's venv).

``python run_napkinxc.py WORK OUT`` (see :mod:`common` for the folders).

napkinXC 0.7.2 ``PLT(model_dir)`` with every default (hierarchical balanced
k-means tree, arity 2, leaves <= 100, logistic loss by liblinear C=10, weight
threshold 0.1, exact tree search) except ``threads``, set to the spec's 2 (its
default 0 means "all cores", which is also 2 on the reference machine), and
``seed``, the spec's (its default draws one at random, so results moved by about
+-0.2 points run to run before the harness fixed it).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import numpy as np  # noqa: E402


def run(work: str, out: str) -> dict:
    from importlib.metadata import version

    from napkinxc.models import PLT

    spec, X, Y, Xt, one_idx = common.load_work(work)
    threads, k = int(spec["threads"]), int(spec["k"])
    rss_load = common.maxrss_mb()
    model_dir = os.path.join(out, "model")
    model = PLT(model_dir, threads=threads, seed=int(spec.get("seed", 0)))
    with common.Clock() as c_fit:
        model.fit(X, Y)
    rss_train = common.maxrss_mb()

    def predict(x):
        return common.pad_rows(model.predict(x, top_k=k), k)

    ids, pt = common.predict_passes(predict, predict, Xt, one_idx)
    common.save_pred(out, ids)
    params = {key: val for key, val in model.get_params().items() if key != "output"}
    return {
        "system": "napkinxc",
        "settings": {"model": "PLT", **{key: (val if isinstance(val, (int, float, str, bool)) or val is None
                                             else str(val)) for key, val in params.items()}},
        "train_s": c_fit.s,
        "compile_s": 0.0,
        "predict": pt,
        "predict_compile_s": 0.0,
        "model_bytes": common.dir_bytes(model_dir),
        "rss_after_load_mb": rss_load,
        "rss_after_train_mb": rss_train,
        "versions": {"napkinxc": version("napkinxc"), "numpy": np.__version__,
                     "python": sys.version.split()[0]},
    }


if __name__ == "__main__":
    common.runner_main(run)
