import numpy as np
import pytest
import scipy.sparse as sp

from jxmc.embed import pifa


def test_pifa_is_normalised_sum_of_positive_rows():
    X = sp.csr_matrix(np.array([[1, 0, 0], [0, 2, 0], [0, 0, 3]], np.float32))
    Y = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 0]], np.float32))
    Z = pifa(Y, X).toarray()
    np.testing.assert_allclose(Z[0], np.array([1, 2, 0]) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_array_equal(Z[1], 0)  # no positives: zero row


def test_pifa_blocks_are_normalised_separately():
    X1 = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    X2 = np.array([[100.0], [100.0]], np.float32)
    Y = sp.csr_matrix(np.array([[1], [1]], np.float32))
    Z = pifa(Y, [X1, X2]).toarray()
    np.testing.assert_allclose(Z[0], np.array([0.5, 0.5, np.sqrt(0.5)]), rtol=1e-5)


def test_pifa_rejects_mismatched_rows():
    with pytest.raises(ValueError):
        pifa(sp.csr_matrix((3, 2), dtype=np.float32), sp.csr_matrix((2, 4), dtype=np.float32))
