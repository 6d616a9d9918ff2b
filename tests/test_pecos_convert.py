"""``jxmc convert --from pecos`` / ``--to pecos`` (:mod:`jxmc.interop.pecos`).

Fast tests: a hand-made PECOS folder with an irregular tree (uneven and empty
nodes, a pruned node, per-level bias values) predicted by jxmc against a numpy
transcription of PECOS's beam search (``HierarchicalMLModel.predict``); a jxmc-trained
model written for PECOS and read back; bad input (one line, exit 2).

Slow tests (run in CI): PECOS itself, in its own venv (``experiments/.peers-venv``,
made by ``experiments/harness/peers_venv.py`` when missing; skipped without it, failed
under ``CI=true``): a PECOS model trained on debtags (jxmc's TF-IDF features)
converted and predicted by jxmc, and a jxmc model written for PECOS, loaded and
predicted by PECOS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import IN_CI, REPO, shared_dataset

from jxmc import modeldir
from jxmc.cli import main
from jxmc.data.inputs import read_test_split
from jxmc.interop import pecos
from jxmc.predictor import Predictor

SPEC = "synthetic:n_train=600,n_test=200,n_labels=70,n_features=300,branching=4/4"


# ------------------------------------------------------------ PECOS's beam search, in numpy


def reference_predict(model: pecos.PecosModel, X: sp.csr_matrix, k: int):
    """PECOS's prediction (``HierarchicalMLModel.predict`` with the saved
    ``pred_kwargs``, ``only_topk = k`` at the last level): per level the children of
    the kept nodes scored ``[x, b] . w``, ``exp(-max(1 - v, 0)^p)`` times the parent's
    score, the ``only_topk`` best kept.  Returns per row ``[(label, score), ...]``."""
    n = X.shape[0]
    kept = np.ones((n, 1), bool)
    score = np.ones((n, 1))
    for t, lv in enumerate(model.levels):
        p = {"l3-hinge": 3, "l2-hinge": 2}[lv.post_processor]
        Xb = sp.hstack([X, np.full((n, 1), lv.bias)]) if lv.bias > 0 else X
        v = np.asarray((Xb @ lv.W).todense(), np.float64)
        C = sp.csr_matrix(lv.C)
        has = np.diff(C.indptr) == 1
        parent = np.zeros(C.shape[0], np.int64)
        parent[has] = C.indices
        cand = kept[:, parent] & has[None, :]
        s = np.where(cand, score[:, parent] * np.exp(-np.maximum(1 - v, 0) ** p), -1.0)
        top = k if t == len(model.levels) - 1 else lv.only_topk
        order = np.argsort(-s, axis=1, kind="stable")[:, :top]
        kept = np.zeros_like(cand)
        np.put_along_axis(kept, order, np.take_along_axis(cand, order, axis=1), axis=1)
        score = np.where(kept, s, 0.0)
    return [[(int(j), float(score[i, j])) for j in np.argsort(-score[i], kind="stable")
             if kept[i, j]][:k] for i in range(n)]


def _same_sets(rows, ids, scores, rtol=1e-5):
    """Rows whose label sets agree, and the largest relative score gap among them."""
    same, gap = 0, 0.0
    for row, i_row, s_row in zip(rows, ids, scores, strict=True):
        mine = {int(i): float(s) for i, s in zip(i_row, s_row, strict=True) if i >= 0}
        if set(mine) == {j for j, _ in row}:
            same += 1
            gap = max([gap] + [abs(mine[j] - s) / max(abs(s), 1e-30) for j, s in row])
    return same, gap


def _irregular_model(seed=0, d=40) -> pecos.PecosModel:
    """Level 0: 4 clusters; level 1: 9 clusters, 4 / 0 / 3 / 1 under them and one
    pruned (no parent); level 2: 23 labels in leaves of 1..5, one label pruned.  Bias
    1.0, 0.5 and none (-1); post-processor l3-hinge, beam 2."""
    rng = np.random.default_rng(seed)
    par1 = np.array([0, 0, 2, 0, 3, 2, 0, 2, -1])  # 4 / 0 / 3 / 1 children, node 8 pruned
    par2 = np.array([0, 0, 1, 1, 1, 1, 1, 2, 3, 3, 4, 4, 4, 5, 6, 6, 6, 6, 7, 7, 8, 8, -1])
    parents = [np.zeros(4, np.int64), par1, par2]
    biases = [1.0, 0.5, -1.0]
    levels = []
    n_prev = 1
    for par, b in zip(parents, biases, strict=True):
        rows = np.nonzero(par >= 0)[0]
        C = sp.csc_matrix((np.ones(len(rows), np.float32), (rows, par[rows])),
                          shape=(len(par), n_prev))
        dense = rng.normal(0, 0.4, (d + (b > 0), len(par))) * (rng.random((d + (b > 0), len(par))) < 0.4)
        levels.append(pecos.PecosLevel(sp.csc_matrix(dense.astype(np.float32)), C, b, 2, "l3-hinge"))
        n_prev = len(par)
    return pecos.PecosModel(levels, d, len(par2))


def _queries(n=300, d=40, seed=1):
    X = sp.random(n, d, density=0.3, format="csr", dtype=np.float32, random_state=seed)
    X.data = X.data.astype(np.float32)
    return X


def test_irregular_pecos_tree_predicts_as_pecos(tmp_path):
    model = _irregular_model()
    folder = str(tmp_path / "pecos")
    pecos.write_model(folder, model)
    again = pecos.read_model(folder)
    for a, b in zip(model.levels, again.levels, strict=True):
        assert (a.W != b.W).nnz == 0 and (a.C != b.C).nnz == 0 and a.bias == b.bias
    m = str(tmp_path / "m")
    assert main(["convert", "--from", "pecos", folder, "--model-dir", m]) == 0
    saved = modeldir.load(m)
    assert saved.manifest["method"] == "xr-linear"
    assert saved.manifest["config"]["beam_size"] == 2
    assert list(saved.params["branching"]) == [4, 4, 5]  # padded to the widest node per level
    X = _queries()
    p = Predictor(m)
    for k in (1, 5, 10):
        top = p.topk(p.features(X), k=k)
        ref = reference_predict(model, X, k)
        same, gap = _same_sets(ref, top.ids, top.scores)
        assert same == X.shape[0] and gap < 1e-4, (k, same, gap)
        # the order is PECOS's too (ties aside, which random weights do not make)
        assert all([j for j, _ in row] == list(ids[: len(row)]) for row, ids in zip(ref, top.ids,
                                                                                   strict=True))
    # the pruned label (22) and the labels of the pruned cluster are never predicted
    top = p.topk(p.features(X), k=23)
    assert 22 not in top.ids and not np.isin([20, 21], top.ids).any()


def test_to_params_pads_and_round_trips():
    model = _irregular_model(seed=3)
    params = pecos.to_params(model)
    perm = params["perm"]
    assert len(perm) == 4 * 4 * 5 and sorted(perm[perm >= 0]) == list(range(20))
    back = pecos.from_params(params, model.n_labels, beam_size=2, transform="l3-hinge")
    X = _queries(seed=4)
    # jxmc's bias is 1.0 with PECOS's values folded in; the dummy nodes come along
    # (weights DUMMY_WEIGHT), so PECOS's own beam on the written model agrees
    for k in (3, 10):
        a, b = reference_predict(model, X, k), reference_predict(back, X, k)
        assert [[j for j, _ in r] for r in a] == [[j for j, _ in r] for r in b]
        np.testing.assert_allclose([s for r in a for _, s in r], [s for r in b for _, s in r],
                                   rtol=1e-5)


@pytest.fixture(scope="module")
def jxmc_model(tmp_path_factory):
    """An xr-linear model trained by jxmc on synthetic data: tree 4x4x5, 10 dummy leaves."""
    m = str(tmp_path_factory.mktemp("jx") / "m")
    assert main(["train", "--data", SPEC, "--model-dir", m, "--no-progress", "--set", "nr_splits=4",
                 "--set", "max_leaf_size=6", "--set", "beam_size=3"]) == 0
    return m


def test_jxmc_model_to_pecos_and_back(tmp_path, jxmc_model, capsys):
    out = str(tmp_path / "pecos")
    assert main(["convert", "--to", "pecos", "--model-dir", jxmc_model, out]) == 0
    saved = modeldir.load(jxmc_model)
    assert (saved.params["perm"] < 0).sum() > 0  # dummy leaves, left out of PECOS's C
    model = pecos.read_model(out)
    assert [lv.only_topk for lv in model.levels] == [3, 3, pecos.TOP_K]
    assert model.levels[-1].W.shape == (301, 70) and model.levels[-1].C.shape == (70, 16)
    X, Y, _, _ = read_test_split(SPEC, saved)
    p = Predictor(jxmc_model)
    top = p.topk(X, k=10)
    same, gap = _same_sets(reference_predict(model, X, 10), top.ids, top.scores)
    assert same == X.shape[0] and gap < 1e-4, (same, gap)
    # back into jxmc with the dataset: same predictions, and evaluate works (label counts)
    back = str(tmp_path / "back")
    assert main(["convert", "--from", "pecos", out, "--model-dir", back, "--data", SPEC]) == 0
    top2 = Predictor(back).topk(X, k=10)
    np.testing.assert_array_equal(top.ids, top2.ids)
    np.testing.assert_allclose(top.scores, top2.scores, rtol=1e-6)
    capsys.readouterr()
    results = []
    for m in (jxmc_model, back):
        assert main(["evaluate", "--data", SPEC, "--model-dir", m, "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == pytest.approx(results[1], abs=1e-6)
    # re-writing the same PECOS folder replaces it
    assert main(["convert", "--to", "pecos", "--model-dir", back, out]) == 0


# ------------------------------------------------------------------ bad input


def _one_line_error(capsys, argv, *needles):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("jxmc: error:")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]) and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _folder(tmp_path, model=None):
    folder = str(tmp_path / f"p{len(os.listdir(tmp_path))}")
    pecos.write_model(folder, model or _irregular_model())
    return folder


def _edit_json(path, **changes):
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    for key, v in changes.items():
        if key == "pred":
            value["pred_kwargs"].update(v)
        else:
            value[key] = v
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f)


def test_bad_pecos_folders_exit_2_in_one_line(tmp_path, capsys):
    m = str(tmp_path / "m")
    argv = ["convert", "--from", "pecos", None, "--model-dir", m]

    def run(folder, *needles):
        return _one_line_error(capsys, [folder if a is None else a for a in argv], *needles)

    run(str(tmp_path / "nowhere"), "nowhere", "not found")
    folder = _folder(tmp_path)
    os.remove(os.path.join(folder, "ranker", "1.model", "W.npz"))
    run(folder, "1.model/W.npz", "missing")
    folder = _folder(tmp_path)
    with open(os.path.join(folder, "ranker", "2.model", "C.npz"), "wb") as f:
        f.write(b"not a zip")
    run(folder, "2.model/C.npz")
    folder = _folder(tmp_path)
    with open(os.path.join(folder, "ranker", "param.json"), "w") as f:
        f.write("{broken")
    run(folder, "ranker/param.json", "JSON")
    folder = _folder(tmp_path)
    _edit_json(os.path.join(folder, "ranker", "0.model", "param.json"), pred={"post_processor": "sigmoid"})
    run(folder, "0.model/param.json", "sigmoid")
    folder = _folder(tmp_path)
    _edit_json(os.path.join(folder, "ranker", "1.model", "param.json"), pred={"only_topk": 7})
    run(folder, "param.json", "beam size")
    folder = _folder(tmp_path)
    _edit_json(os.path.join(folder, "ranker", "2.model", "param.json"), is_mmap=True)
    run(folder, "2.model/param.json", "memory-mapped")
    folder = _folder(tmp_path)
    _edit_json(os.path.join(folder, "param.json"), __meta__={"class_fullname": "pecos.xmc.xtransformer.model###XTransformer"})
    run(folder, "param.json", "XTransformer")
    folder = _folder(tmp_path)
    _edit_json(os.path.join(folder, "ranker", "param.json"), nr_features=41)
    run(folder, "W.npz", "shape")
    # a node with two parents; a partial chain (level 0 with several parents)
    model = _irregular_model()
    C = model.levels[1].C.tolil()
    C[0, 1] = 1.0
    two = pecos.PecosModel([model.levels[0], model.levels[1]._replace(C=sp.csc_matrix(C)),
                            model.levels[2]], model.n_features, model.n_labels)
    run(_folder(tmp_path, two), "1.model/C.npz", "2 parents")
    partial = pecos.PecosModel(model.levels[1:], model.n_features, model.n_labels)
    run(_folder(tmp_path, partial), "0.model/C.npz", "partial chain")
    # a model directory that is not empty; --data of another shape
    folder = _folder(tmp_path)
    os.makedirs(m)
    open(os.path.join(m, "x"), "w").close()
    run(folder, m, "not empty")
    os.remove(os.path.join(m, "x"))
    _one_line_error(capsys, ["convert", "--from", "pecos", folder, "--model-dir", m, "--data", SPEC],
                    "300 features", "40")


def test_bad_exports_exit_2_in_one_line(tmp_path, capsys, jxmc_model):
    _one_line_error(capsys, ["convert", "--to", "pecos", "--model-dir", str(tmp_path / "none"),
                             str(tmp_path / "out")], "none")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine\n")
    _one_line_error(capsys, ["convert", "--to", "pecos", "--model-dir", jxmc_model, str(taken)],
                    "taken", "not a PECOS model folder")
    assert (taken / "notes.txt").read_text() == "mine\n"
    _one_line_error(capsys, ["convert", "--to", "pecos", "--model-dir", jxmc_model,
                             str(tmp_path / "o"), "--data", SPEC], "--data")
    ovr = str(tmp_path / "ovr")
    assert main(["train", "--data", SPEC, "--model-dir", ovr, "--no-progress", "--method",
                 "ovr"]) == 0
    _one_line_error(capsys, ["convert", "--to", "pecos", "--model-dir", ovr, str(tmp_path / "o")],
                    "ovr model", "xr-linear")
    with pytest.raises(SystemExit) as e:  # neither --from nor --to
        main(["convert", str(tmp_path / "o"), "--model-dir", ovr])
    assert e.value.code == 2


def test_label_copies_are_refused():
    params = pecos.to_params(_irregular_model())
    perm = params["perm"].copy()
    perm[perm < 0] = 0  # label 0 at several leaves
    with pytest.raises(pecos.ConfigError, match="label copies"):
        pecos.from_params(dict(params, perm=perm), 23, beam_size=2, transform="l3-hinge")


# ------------------------------------------------------------------ PECOS itself


def _peers_python() -> str:
    """The PECOS venv's interpreter, made when missing; skip without it (fail under CI)."""
    sys.path.insert(0, str(REPO / "experiments" / "harness"))
    import peers_venv

    venv = str(REPO / "experiments" / ".peers-venv")
    try:
        peers_venv.ensure(venv, log=lambda msg: print(msg, file=sys.stderr))
    except (RuntimeError, OSError) as e:
        why = str(e).splitlines()[0]
        if IN_CI:
            pytest.fail(f"CI=true but the PECOS venv cannot be made: {why}", pytrace=False)
        pytest.skip(f"PECOS venv not available: {why}")
    return peers_venv.venv_python(venv)


def _run_pecos(python: str, script: str, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    r = subprocess.run([python, "-c", textwrap.dedent(script), *args], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


# the harness's settings (experiments/harness/run_pecos.py): PIFA, hierarchical k-means of
# 16 splits and leaves <= 100, squared-hinge SVMs Cp = Cn = 1, threshold 0.1, beam 10
TRAIN = """
    import sys, numpy as np, scipy.sparse as sp
    from pecos.xmc import Indexer, LabelEmbeddingFactory
    from pecos.xmc.xlinear.model import XLinearModel
    work = sys.argv[1]
    X = sp.load_npz(work + "/X_train.npz").tocsr().astype(np.float32)
    Y = sp.load_npz(work + "/Y_train.npz").tocsc().astype(np.float32)
    Z = LabelEmbeddingFactory.create(Y, X, method="pifa", threads=2)
    chain = Indexer.gen(Z, indexer_type="hierarchicalkmeans", nr_splits=16, max_leaf_size=100,
                        seed=0, threads=2)
    model = XLinearModel.train(X, Y, C=chain, threshold=0.1, Cp=1.0, Cn=1.0,
                               solver_type="L2R_L2LOSS_SVC_DUAL", threads=2, beam_size=10,
                               only_topk=10)
    model.save(work + "/pecos_model")
"""

# PECOS's top-10 of X for each model folder given: <folder>.ids.npy, <folder>.scores.npy, from
# XLinearModel.load(is_predict_only=True) (C++); with "both", also from load() (Python; its
# CSC product takes 17 s on debtags, so there it is only loaded), checked equal
PREDICT = """
    import sys, numpy as np, scipy.sparse as sp
    from pecos.xmc.xlinear.model import XLinearModel
    X = sp.load_npz(sys.argv[1]).tocsr().astype(np.float32)
    X.sort_indices()
    for folder in sys.argv[3:]:
        outs = []
        assert XLinearModel.load(folder).nr_labels > 0
        for only in (True, False) if sys.argv[2] == "both" else (True,):
            P = XLinearModel.load(folder, is_predict_only=only).predict(X, only_topk=10, threads=2)
            P = sp.csr_matrix(P)
            ids = np.full((X.shape[0], 10), -1, np.int32)
            scores = np.full((X.shape[0], 10), -np.inf, np.float32)
            for i in range(X.shape[0]):
                a, b = P.indptr[i], P.indptr[i + 1]
                o = np.argsort(-P.data[a:b], kind="stable")[:10]
                ids[i, :len(o)], scores[i, :len(o)] = P.indices[a:b][o], P.data[a:b][o]
            outs.append((ids, scores))
        assert all((ids == outs[0][0]).all() for ids, _ in outs), folder
        np.save(folder + ".ids.npy", outs[0][0])
        np.save(folder + ".scores.npy", outs[0][1])
"""


def _agreement(ids_a, scores_a, ids_b, scores_b):
    """Share of rows with the same top-10 label set, and the largest relative score gap
    over the matched labels of those rows."""
    same, gap = 0, 0.0
    for ia, sa, ib, sb in zip(ids_a, scores_a, ids_b, scores_b, strict=True):
        a = {int(i): float(s) for i, s in zip(ia, sa, strict=True) if i >= 0}
        b = {int(i): float(s) for i, s in zip(ib, sb, strict=True) if i >= 0}
        if set(a) == set(b):
            same += 1
            gap = max([gap] + [abs(a[j] - b[j]) / max(abs(b[j]), 1e-30) for j in a])
    return same / len(ids_a), gap


@pytest.mark.slow
def test_pecos_trained_on_debtags_predicts_the_same_in_jxmc(tmp_path, capsys):
    """PECOS's XR-Linear on debtags (jxmc's TF-IDF features), converted: jxmc's top-10
    is PECOS's for >= 99% of the test points, scores within 1e-3; written back for
    PECOS (--to pecos), PECOS predicts exactly what it did."""
    python = _peers_python()
    from jxmc.data.dataset import load_dataset

    folder = shared_dataset("debtags")
    ds = load_dataset(str(folder))
    work = str(tmp_path)
    sp.save_npz(f"{work}/X_train.npz", ds.train.X, compressed=False)
    sp.save_npz(f"{work}/Y_train.npz", sp.csr_matrix(ds.train.Y[:, : ds.n_labels]), compressed=False)
    sp.save_npz(f"{work}/X_test.npz", ds.test.X, compressed=False)
    _run_pecos(python, TRAIN, work)
    m = f"{work}/m"
    assert main(["convert", "--from", "pecos", f"{work}/pecos_model", "--model-dir", m]) == 0
    p = Predictor(m)
    assert p.config.beam_size == 10 and p.config.transform == "l3-hinge"
    top = p.topk(p.features(ds.test.X), k=10)
    assert main(["convert", "--to", "pecos", "--model-dir", m, f"{work}/again"]) == 0
    _run_pecos(python, PREDICT, f"{work}/X_test.npz", "fast", f"{work}/pecos_model",
               f"{work}/again")
    ids, scores = np.load(f"{work}/pecos_model.ids.npy"), np.load(f"{work}/pecos_model.scores.npy")
    share, gap = _agreement(top.ids, top.scores, ids, scores)
    print(f"debtags: jxmc's top-10 = PECOS's for {100 * share:.2f}% of {len(ids)} test points, "
          f"largest relative score gap {gap:.2e}", file=sys.stderr)
    assert share >= 0.99 and gap < 1e-3, (share, gap)
    np.testing.assert_array_equal(np.load(f"{work}/again.ids.npy"), ids)
    np.testing.assert_allclose(np.load(f"{work}/again.scores.npy"), scores, rtol=1e-6)
    # and as well: P@1 0.871 measured (PECOS's own predictions, jxmc's as well)
    hits = np.take_along_axis(ds.test.Y.toarray(), np.maximum(top.ids[:, :1], 0), axis=1)
    assert hits.mean() > 0.85


@pytest.mark.slow
def test_jxmc_model_loads_and_predicts_in_pecos(tmp_path, jxmc_model):
    """A jxmc-trained xr-linear model (a complete tree with dummy leaves), --to pecos:
    PECOS's XLinearModel.load reads it (Python and C++ loaders) and predicts jxmc's
    top-10 for >= 99% of the points (here all), scores within 1e-4."""
    python = _peers_python()
    out = str(tmp_path / "pecos")
    assert main(["convert", "--to", "pecos", "--model-dir", jxmc_model, out]) == 0
    saved = modeldir.load(jxmc_model)
    X, _, _, _ = read_test_split(SPEC, saved)
    sp.save_npz(str(tmp_path / "X.npz"), X, compressed=False)
    _run_pecos(python, PREDICT, str(tmp_path / "X.npz"), "both", out)
    top = Predictor(jxmc_model).topk(X, k=10)
    share, gap = _agreement(top.ids, top.scores, np.load(out + ".ids.npy"),
                            np.load(out + ".scores.npy"))
    assert share >= 0.99 and gap < 1e-4, (share, gap)
