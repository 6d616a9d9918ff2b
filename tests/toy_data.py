"""A tiny planted multi-label problem shared by the tests (and the sharding worker script)."""

import numpy as np
import scipy.sparse as sp


def planted(n: int = 300, d: int = 60, L: int = 24, seed: int = 0, density: float = 0.15,
            noise: float = 0.05, noise_density: float = 0.1):
    """``(X: csr f32[n, d], Y: csr f32[n, L])``: each point has 1-2 labels and features
    that are the sum of its labels' sparse prototypes (``density`` of ``d``) plus
    ``noise`` times uniform noise on ``noise_density`` of ``d``; rows of ``X`` are L2-normalised."""
    rng = np.random.default_rng(seed)
    proto = rng.random((L, d)) * (rng.random((L, d)) < density)
    Y = np.zeros((n, L), np.float32)
    X = np.zeros((n, d), np.float32)
    for i in range(n):
        labs = rng.choice(L, size=rng.integers(1, 3), replace=False)
        Y[i, labs] = 1
        X[i] = proto[labs].sum(0) + noise * rng.random(d) * (rng.random(d) < noise_density)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return sp.csr_matrix(X), sp.csr_matrix(Y)
