"""Seeded raw-text subsets and top-1 P@1 (:mod:`jxmc.data.subsets`)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from jxmc.data.subsets import p_at_1, text_subset
from jxmc.data.text import write_text_labels, write_texts


def test_p_at_1_counts_misses_and_empty_predictions():
    Y = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 0, 0]], np.float32))
    assert p_at_1(np.array([0, 2, -1, 1]), Y) == 0.5  # hit, hit, none, miss


def test_text_subset_draws_seeded_points_with_train_vocabulary(tmp_path):
    train = [f"doc {i} word{i % 3}" for i in range(20)]
    test = [f"query {i} word{i % 3}" for i in range(10)]
    write_texts(tmp_path / "train_texts.txt.xz", train)
    write_texts(tmp_path / "test_texts.txt.xz", test)
    write_text_labels(tmp_path / "train_labels.txt.xz",
                      [["a"] if i % 4 else ["a", "b"] for i in range(20)])
    write_text_labels(tmp_path / "test_labels.txt.xz",
                      [["b"] if i % 2 else ["new"] for i in range(10)])
    d = text_subset(tmp_path, 8, 6, seed=1)
    again = text_subset(tmp_path, 8, 6, seed=1)
    assert d["tr_t"] == again["tr_t"] and d["te_t"] == again["te_t"]
    assert len(d["tr_t"]) == 8 and set(d["tr_t"]) <= set(train)
    assert d["tr_t"] == sorted(d["tr_t"], key=train.index)  # file order kept
    assert d["Ytr"].shape == (8, 2) and d["Xtr"].shape[0] == 8
    assert d["Yte"].shape == (6, 3)  # "new" never occurs in training: an extra column
    assert d["Xte"].shape == (6, d["Xtr"].shape[1])
    # "a" is the most frequent training label; no test point has it
    assert d["baseline"] == 0.0
    with pytest.raises(ValueError):
        text_subset(tmp_path, 21, 6)
