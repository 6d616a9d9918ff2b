from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from jxmc.data.batches import iterate_batches
from jxmc.ops.ids import csr_to_padded
from jxmc.ops.sparse import csr_to_ell


def _random_csr(rng, n, d, density):
    M = sp.random(n, d, density=density, format="csr", random_state=rng, dtype=np.float32)
    M.data = rng.uniform(0.1, 1.0, M.nnz).astype(np.float32)
    return M


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 30), st.integers(1, 40), st.floats(0.0, 0.5), st.integers(0, 2**31 - 1))
def test_ell_round_trip(n, d, density, seed):
    X = _random_csr(np.random.default_rng(seed), n, d, density)
    x = csr_to_ell(X)
    assert x.indices.dtype == np.int32 and x.values.dtype == np.float32
    back = np.zeros((n, d), np.float32)
    np.add.at(back, (np.arange(n)[:, None], x.indices), x.values)
    np.testing.assert_array_equal(back, X.toarray())


def test_ell_truncation_keeps_largest_magnitudes():
    X = sp.csr_matrix(np.array([[0.1, -0.9, 0.5, 0.0, 0.3]], np.float32))
    x = csr_to_ell(X, z=2)
    assert sorted(x.indices[0].tolist()) == [1, 2]
    assert sorted(x.values[0].tolist()) == [-0.9, 0.5] or np.allclose(sorted(x.values[0]), [-0.9, 0.5])


def test_labels_padded_with_minus_one():
    Y = sp.csr_matrix(np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0]], np.float32))
    np.testing.assert_array_equal(csr_to_padded(Y), [[1, 2], [-1, -1], [0, -1]])


def test_batches_have_fixed_shapes_and_cover_every_row_once():
    rng = np.random.default_rng(0)
    X = _random_csr(rng, 23, 17, 0.3)
    Y = _random_csr(rng, 23, 9, 0.2)
    batches = list(iterate_batches(X, Y, batch_size=8, rng=np.random.default_rng(1)))
    assert len(batches) == 3
    assert {b.x.indices.shape for b in batches} == {(8, max(1, np.diff(X.indptr).max()))}
    assert {b.labels.shape[0] for b in batches} == {8}
    assert sum(int(b.valid.sum()) for b in batches) == 23
    last = batches[-1]
    assert not last.valid[7] and (last.labels[~last.valid] == -1).all()
    assert (last.x.values[~last.valid] == 0).all()
    # every point's features appear exactly once across the batches
    total = sum(float(b.x.values[b.valid].sum()) for b in batches)
    np.testing.assert_allclose(total, X.sum(), rtol=1e-5)


def test_map_batches_keeps_the_valid_rows_in_order():
    from jxmc.train.batches import map_batches
    from jxmc.types import TopK

    ids = np.arange(7 * 2, dtype=np.int32).reshape(7, 2)
    seen = []

    def fn(b):
        seen.append(b["ids"].shape)
        return TopK(b["ids"][:, :1] * 10, b["ids"].astype(np.float32))

    r = map_batches(fn, {"ids": ids, "mask": np.ones_like(ids)}, 3)
    assert seen == [(3, 2)] * 3  # fixed shapes: the last batch padded
    np.testing.assert_array_equal(r.ids[:, 0], ids[:, 0] * 10)
    np.testing.assert_array_equal(r.scores, ids)
