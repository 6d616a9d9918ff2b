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


def rows_as_text(X: sp.csr_matrix) -> list[str]:
    """The rows of ``X`` as XC-format feature lines (``j:v`` pairs)."""
    return [" ".join(f"{j}:{v!r}" for j, v in zip(r.indices.tolist(), r.data.tolist(), strict=True))
            for r in X]


def read_predictions(path) -> list[list[tuple[str, float]]]:
    """A ``jxmc predict`` output file: per line, ``(label, score)`` pairs."""
    with open(path, encoding="utf-8") as f:
        return [[(p.rsplit(":", 1)[0], float(p.rsplit(":", 1)[1])) for p in line.split()] for line in f]


def trained_synthetic(model_dir: str, spec: str):
    """``jxmc train`` of the default method on the synthetic ``spec`` into ``model_dir``;
    returns the test features ``X_test`` of that spec."""
    from jxmc.cli import main
    from jxmc.data.synthetic import generate, parse_spec

    assert main(["train", "--data", spec, "--model-dir", model_dir, "--no-progress"]) == 0
    return generate(parse_spec(spec))[2]
