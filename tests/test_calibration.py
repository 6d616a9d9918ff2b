"""Calibration of top-k scores (jxmc.calibration) and the CLI around it:
``jxmc calibrate``, ``evaluate --json`` ECE@k keys, ``predict --threshold``."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from jxmc import calibration, metrics
from jxmc.cli import main
from jxmc.commands import JSON_KEYS, KS
from jxmc.errors import ConfigError, ModelError
from jxmc.types import TopK

SMALL = "synthetic:n_train=600,n_test=200,n_labels=48,n_features=300,branching=4/4"


def _run(capsys, *argv):
    """``jxmc ARGV`` in this process (compiled programs are reused between calls):
    ``(exit status, stdout, stderr)``."""
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return SimpleNamespace(returncode=rc, stdout=out.out, stderr=out.err)


def _miscalibrated(n, seed):
    """Scores ``s ~ U(0, 1)`` of top-10 predictions whose true relevance probability is
    ``s ** 3`` (over-confident), so the raw ECE is large."""
    rng = np.random.default_rng(seed)
    s = np.sort(rng.random((n, 10)), axis=1)[:, ::-1]
    return s, rng.random((n, 10)) < s ** 3


@pytest.mark.parametrize("method", calibration.METHODS)
def test_calibrator_is_monotone(method):
    s, r = _miscalibrated(500, 0)
    cal = calibration.fit(s, r, method)
    grid = np.linspace(-0.5, 1.5, 2001)
    p = cal(grid)
    assert np.all(np.diff(p) >= 0) and p.min() >= 0 and p.max() <= 1
    if method == "platt":
        assert cal.a > 0 and np.all(np.diff(p) > 0)
    assert np.isneginf(cal(np.array([-np.inf]))[0])  # a missing prediction stays missing


@pytest.mark.parametrize("method", calibration.METHODS)
def test_ece_decreases_on_held_out_split(method):
    s_fit, r_fit = _miscalibrated(1000, 1)
    s_test, r_test = _miscalibrated(1000, 2)  # not seen by the fit
    cal = calibration.fit(s_fit, r_fit, method)
    raw = metrics.calibration_metrics(s_test, r_test, ks=KS)
    after = metrics.calibration_metrics(cal(s_test), r_test, ks=KS)
    for k in KS:
        assert after[f"ECE@{k}"] < raw[f"ECE@{k}"], (k, raw, after)
        assert after[f"Brier@{k}"] < raw[f"Brier@{k}"], k
    # fitted on the pooled ranks 1..10: calibrated best there (Platt's logistic curve
    # cannot follow s ** 3 exactly, isotonic regression can)
    assert after["ECE@10"] < (0.03 if method == "isotonic" else 0.5 * raw["ECE@10"])


def test_isotonic_matches_sklearn_transform():
    from sklearn.isotonic import IsotonicRegression

    s, r = _miscalibrated(400, 3)
    cal = calibration.fit(s, r, "isotonic")
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s.ravel(), r.ravel())
    x = np.random.default_rng(4).random(1000) * 1.2 - 0.1
    np.testing.assert_allclose(cal(x), iso.transform(x), atol=1e-6)


def test_fit_refuses_one_outcome_and_unknown_method():
    s, _ = _miscalibrated(50, 5)
    with pytest.raises(ConfigError, match="both outcomes"):
        calibration.fit(s, np.zeros(s.shape, bool))
    with pytest.raises(ConfigError, match="--method"):
        calibration.fit(s, s > 0.5, "beta")


def test_save_load_round_trip_and_stale_calibrator(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "jxmc_model.json").write_text('{"method": "x"}')
    assert calibration.load(str(d)) is None
    s, r = _miscalibrated(300, 6)
    for method in calibration.METHODS:
        cal = calibration.fit(s, r, method, folds=3)
        calibration.save(str(d), cal)
        back = calibration.load(str(d))
        assert back == cal
        np.testing.assert_array_equal(back(s), cal(s))
    (d / "jxmc_model.json").write_text('{"method": "x", "retrained": true}')
    with pytest.raises(ModelError, match="earlier model"):
        calibration.load(str(d))


@pytest.mark.parametrize("text", ["[]", "3", "null", "{\"format\": 99}", "{not json"])
def test_a_damaged_calibrator_is_one_model_error(tmp_path, text):
    d = tmp_path / "m"
    d.mkdir()
    (d / "jxmc_model.json").write_text('{"method": "x"}')
    (d / calibration.CALIBRATION_FILE).write_text(text)
    with pytest.raises(ModelError, match="unreadable calibrator") as e:
        calibration.load(str(d))
    assert "\n" not in str(e.value)


def test_fold_ids_balanced_and_seeded():
    f = calibration.fold_ids(101, 4, seed=3)
    assert sorted(np.bincount(f).tolist()) == [25, 25, 25, 26]
    assert np.array_equal(f, calibration.fold_ids(101, 4, seed=3))
    assert not np.array_equal(f, calibration.fold_ids(101, 4, seed=4))
    with pytest.raises(ConfigError, match="--folds"):
        calibration.fold_ids(10, 1)


def test_cross_fit_scores_each_point_with_a_model_that_did_not_see_it():
    rng = np.random.default_rng(0)
    n, L = 40, 6
    X = sp.csr_matrix(np.eye(n, dtype=np.float32))  # row i is point i
    Y = sp.csr_matrix((rng.random((n, L)) < 0.4).astype(np.float32))
    seen = []

    def fit(X, Y, config, **kw):
        rows = set(X.indices.tolist())
        seen.append(rows)
        return {"rows": rows}

    def predict(params, X, config, k, texts=None):
        assert not set(X.indices.tolist()) & params["rows"]  # held-out points only
        ids = np.tile(np.arange(k, dtype=np.int32) % L, (X.shape[0], 1))
        return TopK(ids, np.tile(np.linspace(1, 0.1, k, dtype=np.float32), (X.shape[0], 1)))

    method = SimpleNamespace(fit=fit, predict=predict, needs_texts=False)
    scores, rel = calibration.cross_fit_pairs(method, X, Y, None, folds=4, k=5, seed=1)
    assert len(seen) == 4 and all(len(s) == 30 for s in seen)
    assert np.all(np.isfinite(scores))
    np.testing.assert_array_equal(rel, Y.toarray()[:, :5] > 0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model = str(tmp_path_factory.mktemp("cal") / "m")
    assert main(["train", "--data", SMALL, "--model-dir", model, "--no-progress"]) == 0
    return model


def test_threshold_without_calibrator_is_one_line_exit_2(trained, tmp_path, capsys):
    r = _run(capsys, "predict", "--data", SMALL, "--model-dir", trained, "--out", str(tmp_path / "p.txt"),
             "--threshold", "0.5")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "calibrate" in r.stderr
    assert not (tmp_path / "p.txt").exists()


def _read(path):
    return [[(int(p.rsplit(":", 1)[0]), float(p.rsplit(":", 1)[1])) for p in line.split()]
            for line in open(path, encoding="utf-8")]


def test_cli_calibrate_evaluate_predict(trained, tmp_path, capsys):
    from jxmc.data.synthetic import generate, parse_spec

    _, _, _, Yte = generate(parse_spec(SMALL))
    raw_file = tmp_path / "raw.txt"
    assert _run(capsys, "predict", "--data", SMALL, "--model-dir", trained, "--out", str(raw_file)).returncode == 0
    before = json.loads(_run(capsys, "evaluate", "--data", SMALL, "--model-dir", trained, "--json").stdout)
    assert not any(key.startswith(("ECE", "Brier")) for key in before)
    assert all(f"{m}@{k}" in before for m in ("macro-P", "macro-R", "coverage") for k in KS)

    r = _run(capsys, "calibrate", "--data", SMALL, "--model-dir", trained, "--folds", "2")
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(trained, calibration.CALIBRATION_FILE))
    after = json.loads(_run(capsys, "evaluate", "--data", SMALL, "--model-dir", trained, "--json").stdout)
    assert list(after)[: len(JSON_KEYS)] == list(JSON_KEYS)
    for k in KS:
        assert f"ECE@{k}" in after and f"Brier@{k}" in after
    for key in before:  # the ranking is kept: P@k and every other metric unchanged
        assert after[key] == before[key], key

    # raw xr-linear scores (l3-hinge products) are probabilities, but badly calibrated ones
    rows = _read(raw_file)
    ids = np.array([[i for i, _ in row] for row in rows])
    raw = metrics.calibration_metrics(np.array([[s for _, s in row] for row in rows]),
                                      metrics.topk_relevance(ids, Yte), ks=KS)
    assert after["ECE@10"] < raw["ECE@10"], (raw, after)

    # calibrated predict writes probabilities; --threshold keeps those >= P, in order
    cal = calibration.load(trained)
    out = tmp_path / "p.txt"
    assert _run(capsys, "predict", "--data", SMALL, "--model-dir", trained, "--out", str(out)).returncode == 0
    probs = _read(out)
    for row, raw_row in zip(probs, rows, strict=True):
        assert [i for i, _ in row] == [i for i, _ in raw_row]
        np.testing.assert_allclose([p for _, p in row], cal(np.array([s for _, s in raw_row])),
                                   atol=1e-4)  # raw scores as printed (6 digits)
    r = _run(capsys, "predict", "--data", SMALL, "--model-dir", trained, "--out", str(out), "--threshold", "0.5")
    assert r.returncode == 0, r.stderr
    kept = _read(out)
    assert len(kept) == len(probs)
    for row, full in zip(kept, probs, strict=True):
        assert row == [(i, p) for i, p in full if p >= 0.5]
    assert 0 < sum(map(len, kept)) < sum(map(len, probs))
