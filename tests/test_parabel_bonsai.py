"""parabel and bonsai (tree ensembles) and label disentanglement on XR-Linear, on tiny data."""

import dataclasses
import os
import shutil

import numpy as np
from toy_data import planted

from jxmc.checkpoint import TrainCheckpoints
from jxmc.cli import main
from jxmc.models import get_method
from jxmc.models.tree_linear import bonsai, parabel, scoring
from jxmc.models.tree_linear import xr_linear as xr
from jxmc.tree.label_tree import check_tree, has_copies, label_copies

_data = planted


def _p1(top, Y):
    return float(np.mean([Y[i, top.ids[i, 0]] for i in range(Y.shape[0])]))


def _distinct(ids):
    return all(len(set(r[r >= 0].tolist())) == int((r >= 0).sum()) for r in ids)


def test_parabel_binary_trees_averaged():
    X, Y = _data()
    cfg = parabel.Config(max_leaf_size=6, n_trees=2, beam_size=4, predict_batch_size=64)
    params = parabel.fit(X[:240], Y[:240], cfg, seed=0, progress=False)
    trees = [params["trees"][f"tree_{t}"] for t in range(2)]
    for p in trees:
        assert tuple(int(b) for b in p["branching"]) == (2, 2, 6)
    assert not np.array_equal(trees[0]["perm"], trees[1]["perm"])  # seeds 0 and 1
    top = parabel.predict(params, X[240:], cfg, k=3)
    assert top.ids.shape == (60, 3) and _distinct(top.ids) and _p1(top, Y[240:]) > 0.7
    # the average of the two trees' lists, each of beam_size * leaf = 24 labels, missing = 0
    total = np.zeros((60, 24))
    for p in trees:
        t = xr.predict(p, X[240:], cfg, k=24)
        for i in range(60):
            total[i, t.ids[i][t.ids[i] >= 0]] += t.scores[i][t.ids[i] >= 0]
    want = np.sort(total / 2, axis=1)[:, ::-1][:, :3]
    np.testing.assert_allclose(top.scores, want, rtol=1e-5)
    np.testing.assert_array_equal(total[np.arange(60), top.ids[:, 0]] / 2, want[:, 0])


def test_bonsai_wide_tree_and_one_tree_is_xr_linear():
    X, Y = _data(seed=1)
    cfg = bonsai.Config(nr_splits=4, max_leaf_size=3, n_trees=1, beam_size=4, predict_batch_size=64)
    params = bonsai.fit(X[:240], Y[:240], cfg, seed=0, progress=False)
    p = params["trees"]["tree_0"]
    assert tuple(int(b) for b in p["branching"]) == (4, 4, 2)
    assert "disentangled" not in p and not has_copies(scoring.tree_of(p))  # lambda = 1: first tree kept
    top = bonsai.predict(params, X[240:], cfg, k=3)
    same = xr.predict(p, X[240:], cfg, k=3)
    np.testing.assert_array_equal(top.ids, same.ids)
    np.testing.assert_array_equal(top.scores, same.scores)
    assert _p1(top, Y[240:]) > 0.7


def test_disentangled_xr_linear_copies_predicts_distinct_and_resumes(tmp_path):
    X, Y = _data(seed=2)
    cfg = xr.Config(max_leaf_size=4, nr_splits=4, beam_size=4, predict_batch_size=64,
                    clusters_per_label=2)
    ck = TrainCheckpoints(tmp_path / "ck")
    params = xr.fit(X[:240], Y[:240], cfg, seed=0, ckpt=ck, progress=False)
    tree = scoring.tree_of(params)
    check_tree(tree, 24, max_copies=2)
    indptr, _ = label_copies(tree, 24)
    assert (np.diff(indptr) == 2).all() and int(params["disentangled"]) == 2
    sizes = (tree.perm.reshape(-1, tree.branching[-1]) >= 0).sum(axis=1)
    assert sizes.max() - sizes.min() <= 1
    top = xr.predict(params, X[240:], cfg, k=5)
    assert _distinct(top.ids) and _p1(top, Y[240:]) > 0.7
    # interrupted after the matcher: the re-assignment is recomputed identically
    D = tree.depth
    del ck
    shutil.rmtree(os.path.join(tmp_path, "ck", str(D)))
    ck2 = TrainCheckpoints(tmp_path / "ck")
    assert ck2.latest_step() == D - 1
    again = xr.fit(X[:240], Y[:240], cfg, seed=0, ckpt=ck2, progress=False)
    np.testing.assert_array_equal(again["perm"], params["perm"])
    top2 = xr.predict(again, X[240:], cfg, k=5)
    np.testing.assert_array_equal(top2.ids, top.ids)


def test_methods_registered_and_cli_flag(tmp_path, capsys):
    assert get_method("parabel").Config is parabel.Config
    assert get_method("bonsai").Config is bonsai.Config
    assert dataclasses.asdict(parabel.Config())["clusters_per_label"] == 1
    data = "synthetic:n_train=300,n_test=60,n_labels=24,n_features=120,branching=2/2"
    rc = main(["train", "--data", data, "--model-dir", str(tmp_path / "bad"), "--method", "bonsai",
               "--clusters-per-label", "0", "--no-progress"])
    assert rc == 2 and "clusters_per_label" in capsys.readouterr().err
    rc = main(["train", "--data", data, "--model-dir", str(tmp_path / "m"), "--method", "parabel",
               "--clusters-per-label", "2", "--set", "n_trees=1", "--set", "max_leaf_size=6",
               "--no-progress"])
    assert rc == 0
    from jxmc import modeldir
    model = modeldir.load(str(tmp_path / "m"))
    assert model.manifest["config"]["clusters_per_label"] == 2
    assert int(model.params["trees"]["tree_0"]["disentangled"]) == 2
