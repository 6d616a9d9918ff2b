"""PECOS XR-Linear on the harness's features (runs in the PECOS venv, numpy < 2).

``python run_pecos.py WORK OUT`` (see :mod:`common` for the folders).

Settings exactly as ``../shared/PEERS.md``: PIFA label embedding, hierarchical
k-means (16 splits, leaves <= 100), squared-hinge SVM rankers (liblinear
``L2R_L2LOSS_SVC_DUAL``, Cp = Cn = 1), weight threshold 0.1, beam 10, top 10;
``threads`` from the spec (2) everywhere.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.sparse as sp  # noqa: E402

SETTINGS = {
    "label_embedding": "pifa",
    "indexer": "hierarchicalkmeans",
    "nr_splits": 16,
    "max_leaf_size": 100,
    "solver_type": "L2R_L2LOSS_SVC_DUAL",
    "Cp": 1.0,
    "Cn": 1.0,
    "threshold": 0.1,
    "beam_size": 10,
    "seed": 0,
}


def run(work: str, out: str) -> dict:
    import pecos
    import sklearn
    from pecos.xmc import Indexer, LabelEmbeddingFactory
    from pecos.xmc.xlinear.model import XLinearModel

    spec, X, Y, Xt, one_idx = common.load_work(work)
    threads, k = int(spec["threads"]), int(spec["k"])
    rss_load = common.maxrss_mb()
    Yc = sp.csc_matrix(Y, dtype=np.float32)  # PECOS takes labels as csc (format only, not timed)
    s = dict(SETTINGS, seed=int(spec.get("seed", SETTINGS["seed"])))
    with common.Clock() as c_embed:
        Z = LabelEmbeddingFactory.create(Yc, X, method=s["label_embedding"], threads=threads)
    with common.Clock() as c_index:
        chain = Indexer.gen(Z, indexer_type=s["indexer"], nr_splits=s["nr_splits"],
                            max_leaf_size=s["max_leaf_size"], seed=s["seed"], threads=threads)
    with common.Clock() as c_rank:
        model = XLinearModel.train(X, Yc, C=chain, threshold=s["threshold"], Cp=s["Cp"], Cn=s["Cn"],
                                   solver_type=s["solver_type"], threads=threads,
                                   beam_size=s["beam_size"], only_topk=k)
    rss_train = common.maxrss_mb()
    model_dir = os.path.join(out, "model")
    model.save(model_dir)

    def predict(x, n_threads=threads):
        P = model.predict(x, beam_size=s["beam_size"], only_topk=k, threads=n_threads)
        return common.csr_topk(P, k)

    # One query at a time with 1 thread: PECOS parallelises over the rows of a call, so
    # a second thread has nothing to do on one row, and waking its OpenMP pool costs
    # about 18 ms per call on a busy 2-core machine (recorded below as well).
    ids, pt = common.predict_passes(predict, lambda x: predict(x, 1), Xt, one_idx)
    rows = [Xt[int(i): int(i) + 1] for i in one_idx]
    with common.Clock() as c_one_t:
        for x in rows:
            predict(x)
    pt["predict_one_threads_spec_ms_per_query"] = 1e3 * c_one_t.s / max(len(rows), 1)
    pt["predict_one_threads"] = 1
    common.save_pred(out, ids)
    return {
        "system": "pecos",
        "settings": {**s, "threads": threads, "only_topk": k, "post_processor": "model default (l3-hinge)"},
        "train_s": c_embed.s + c_index.s + c_rank.s,
        "compile_s": 0.0,
        "train_parts_s": {"label_embedding": c_embed.s, "indexer": c_index.s, "rankers": c_rank.s},
        "tree_depth": len(chain),
        "predict": pt,
        "predict_compile_s": 0.0,
        "model_bytes": common.dir_bytes(model_dir),
        "rss_after_load_mb": rss_load,
        "rss_after_train_mb": rss_train,
        "versions": {"libpecos": pecos.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
                     "scikit-learn": sklearn.__version__, "python": sys.version.split()[0]},
    }


if __name__ == "__main__":
    common.runner_main(run)
