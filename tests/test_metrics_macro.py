"""Label-wise (macro-P@k, macro-R@k, coverage@k) and calibration (ECE@k, Brier@k) metrics
against straightforward loop implementations written here from the definitions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from jxmc import metrics


def _random_case(seed, n=120, L=30, kmax=10, empty_labels=4, missing=0.1):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, L)) < 0.1).astype(np.float32)
    Y[:, L - empty_labels:] = 0  # labels without test positives (recall denominator 0)
    Y[0] = 0  # a point without labels
    scores = rng.random((n, L))
    scores[:, L - 1] = -1  # never in a top-k whose k < L: a label never predicted
    ids = np.argsort(-scores, axis=1)[:, :kmax].astype(np.int32)
    ids[rng.random(ids.shape) < missing] = -1  # missing predictions
    return ids, Y


def _macro_loops(ids, Y, k, epsilon=0.0):
    n, L = Y.shape
    prec, rec, cov = [], [], []
    for label in range(L):
        tp = fp = fn = 0
        for i in range(n):
            predicted = label in [int(j) for j in ids[i, :k] if j >= 0]
            relevant = Y[i, label] > 0
            tp += predicted and relevant
            fp += predicted and not relevant
            fn += relevant and not predicted
        # xCOLUMNs: counts divided by n, epsilon added to the denominator; 0/0 := 0
        d_p, d_r = (tp + fp) / n + epsilon, (tp + fn) / n + epsilon
        prec.append(tp / n / d_p if d_p > 0 else 0.0)
        rec.append(tp / n / d_r if d_r > 0 else 0.0)
        cov.append(1.0 if tp > 0 else 0.0)
    return sum(prec) / L, sum(rec) / L, sum(cov) / L


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("epsilon", [0.0, 1e-6])
def test_macro_metrics_equal_loops(seed, epsilon):
    ids, Y = _random_case(seed)
    got = metrics.macro_metrics(ids, sp.csr_matrix(Y), ks=(1, 3, 5, 10), epsilon=epsilon)
    for k in (1, 3, 5, 10):
        p, r, c = _macro_loops(ids, Y, k, epsilon)
        assert got[f"macro-P@{k}"] == pytest.approx(p, abs=1e-12), k
        assert got[f"macro-R@{k}"] == pytest.approx(r, abs=1e-12), k
        assert got[f"coverage@{k}"] == pytest.approx(c, abs=1e-12), k


def test_macro_metrics_padded_truth_and_n_labels():
    ids, Y = _random_case(2)
    Ys = sp.csr_matrix(Y)
    padded = metrics.truth_to_padded(Ys)
    a = metrics.macro_metrics(ids, Ys, ks=(3,))
    b = metrics.macro_metrics(ids, padded, ks=(3,), n_labels=Y.shape[1])
    assert a == pytest.approx(b, abs=1e-12)
    # averaging over more labels (never predicted, never relevant) scales every value down
    c = metrics.macro_metrics(ids, Ys, ks=(3,), n_labels=2 * Y.shape[1])
    for key in a:
        assert c[key] == pytest.approx(a[key] / 2, abs=1e-12)


def test_macro_metrics_hand_example():
    # 2 points, 3 labels; top-1: label 0 for both; point 0 has {0}, point 1 has {1}.
    ids = np.array([[0, 1], [0, 2]], np.int32)
    truth = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], np.float32))
    got = metrics.macro_metrics(ids, truth, ks=(1, 2))
    # k=1: label 0 precision 1/2, recall 1/1; labels 1, 2 zero. coverage 1/3.
    assert got["macro-P@1"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert got["macro-R@1"] == pytest.approx((1 + 0 + 0) / 3)
    assert got["coverage@1"] == pytest.approx(1 / 3)
    # k=2: label 0 P 1/2 R 1; label 1 P 0/1 R 0/1; label 2 P 0/1, no positives -> R 0.
    assert got["macro-P@2"] == pytest.approx(0.5 / 3)
    assert got["coverage@2"] == pytest.approx(1 / 3)


def test_macro_metrics_errors():
    ids, Y = _random_case(3, kmax=5)
    with pytest.raises(ValueError, match="larger than"):
        metrics.macro_metrics(ids, sp.csr_matrix(Y), ks=(10,))
    with pytest.raises(ValueError, match="n_labels"):
        metrics.macro_metrics(ids, sp.csr_matrix(Y), ks=(1,), n_labels=3)
    with pytest.raises(ValueError, match="rows"):
        metrics.macro_metrics(ids[:-1], sp.csr_matrix(Y), ks=(1,))


def test_topk_relevance_equals_loops():
    ids, Y = _random_case(4)
    rel = metrics.topk_relevance(ids, sp.csr_matrix(Y))
    expected = np.array([[j >= 0 and Y[i, j] > 0 for j in row] for i, row in enumerate(ids)])
    assert rel.dtype == bool and np.array_equal(rel, expected)


def _ece_loops(probs, rel, k, n_bins=10):
    edges = [b / n_bins for b in range(n_bins + 1)]
    bins = [[] for _ in range(n_bins)]
    sq = []
    for i in range(probs.shape[0]):
        for j in range(k):
            p = float(probs[i, j])
            if not np.isfinite(p):
                continue
            b = n_bins - 1  # p == 1.0 goes to the last bin
            for c in range(n_bins):
                if edges[c] <= p < edges[c + 1]:
                    b = c
                    break
            bins[b].append((p, float(rel[i, j])))
            sq.append((p - float(rel[i, j])) ** 2)
    N = sum(len(b) for b in bins)
    ece = sum(len(b) / N * abs(sum(r for _, r in b) / len(b) - sum(p for p, _ in b) / len(b))
              for b in bins if b)
    return ece, sum(sq) / len(sq)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_brier_equal_loops(seed):
    rng = np.random.default_rng(seed)
    n, k = 200, 10
    probs = rng.random((n, k)) ** 2
    probs[rng.random((n, k)) < 0.05] = 1.0  # the right edge
    probs[rng.random((n, k)) < 0.05] = np.round(rng.random(), 1)  # exactly on bin edges
    probs[rng.random((n, k)) < 0.05] = -np.inf  # missing predictions are left out
    rel = rng.random((n, k)) < np.sqrt(np.maximum(probs, 0.0))
    got = metrics.calibration_metrics(probs, rel, ks=(1, 3, 5, 10))
    for kk in (1, 3, 5, 10):
        ece, brier = _ece_loops(probs, rel, kk)
        assert got[f"ECE@{kk}"] == pytest.approx(ece, abs=1e-12), kk
        assert got[f"Brier@{kk}"] == pytest.approx(brier, abs=1e-12), kk


def test_ece_hand_example():
    # bin [0.9, 1.0]: probs 0.9, 1.0, outcomes 1, 0 -> |0.5 - 0.95| * 2/4
    # bin [0.2, 0.3): probs 0.2, 0.2, outcomes 0, 0 -> |0 - 0.2| * 2/4
    probs = np.array([[0.9, 0.2], [1.0, 0.2]])
    rel = np.array([[True, False], [False, False]])
    got = metrics.calibration_metrics(probs, rel, ks=(2,))
    assert got["ECE@2"] == pytest.approx(0.45 * 0.5 + 0.2 * 0.5)
    assert got["Brier@2"] == pytest.approx((0.01 + 0.04 + 1.0 + 0.04) / 4)


def test_calibration_metrics_refuse_non_probabilities():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.calibration_metrics(np.array([[1.5]]), np.array([[True]]), ks=(1,))
    with pytest.raises(ValueError, match="shape"):
        metrics.calibration_metrics(np.zeros((2, 3)), np.zeros((2, 2), bool), ks=(1,))
