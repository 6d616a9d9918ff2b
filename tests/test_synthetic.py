from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from jxmc.data.synthetic import SyntheticConfig, generate, parse_spec

SMALL = SyntheticConfig(n_train=3000, n_test=500, n_labels=256, n_features=2000, branching=(4, 4))


def test_seeded_and_shaped():
    a, b = generate(SMALL), generate(SMALL)
    for u, v in zip(a, b, strict=True):
        assert (u != v).nnz == 0
    c = generate(SyntheticConfig(**{**SMALL.__dict__, "seed": 1}))
    assert (a[0] != c[0]).nnz > 0
    Xtr, Ytr, Xte, Yte = a
    assert Xtr.shape == (3000, 2000) and Ytr.shape == (3000, 256)
    assert Xte.shape == (500, 2000) and Yte.shape == (500, 256)
    norms = np.sqrt(np.asarray(Xtr.multiply(Xtr).sum(1)).ravel())
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert (np.diff(Ytr.indptr) >= 1).all()


def test_power_law_label_frequencies():
    _, Y, _, _ = generate(SMALL)
    counts = np.sort(np.asarray(Y.sum(0)).ravel())[::-1]
    assert counts[0] > 10 * np.median(counts)  # a heavy head and a long tail


def test_planted_clusters_make_labels_co_occur():
    config = SMALL
    _, Y, _, _ = generate(config)
    C = (Y.T @ Y).toarray()
    np.fill_diagonal(C, 0)
    # spectral view: labels of one planted leaf cluster co-occur far more than chance,
    # so each label's most frequent partner is well above the average partner count.
    top = C.max(1)
    mean = C.sum(1) / (C.shape[1] - 1)
    assert np.median(top[mean > 0] / mean[mean > 0]) > 20


def test_features_carry_signal():
    # a nearest-centroid classifier on the label means beats chance by far
    Xtr, Ytr, Xte, Yte = generate(SMALL)
    centroids = sp.csr_matrix(Ytr.T @ Xtr)
    scores = (Xte @ centroids.T).toarray()
    top1 = scores.argmax(1)
    p1 = np.asarray(Yte[np.arange(Yte.shape[0]), top1]).ravel().mean()
    assert p1 > 0.3


def test_parse_spec():
    c = parse_spec("synthetic:n_labels=100,branching=2/5,zipf_a=1.2")
    assert c.n_labels == 100 and c.branching == (2, 5) and c.zipf_a == 1.2
    with pytest.raises(ValueError, match="unknown option"):
        parse_spec("synthetic:bogus=1")
    with pytest.raises(ValueError, match="n_labels"):
        generate(SyntheticConfig(n_labels=10, branching=(4, 4)))
