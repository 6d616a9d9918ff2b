"""jxmc.data.xc: XC Repository sparse formats (round trips, every bad input, real data)."""

from __future__ import annotations

import gzip
import json
import lzma
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jxmc.data.xc import (
    XCData,
    read_sparse_matrix,
    read_xc,
    read_xc_split,
    write_sparse_matrix,
    write_xc,
    write_xc_split,
)
from jxmc.errors import DataError

SUFFIXES = ["", ".gz", ".xz", ".bz2"]
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def shared_data() -> Path:
    from conftest import shared_root

    return shared_root()


def canon(M) -> sp.csr_matrix:
    A = sp.csr_matrix(M, dtype=np.float32, copy=True)
    A.sum_duplicates()
    A.eliminate_zeros()
    A.sort_indices()
    return A


def assert_same(A: sp.csr_matrix, B: sp.csr_matrix) -> None:
    """Bit-exact equality of two canonical CSR matrices."""
    assert sp.isspmatrix_csr(A) and sp.isspmatrix_csr(B)
    assert A.dtype == np.float32 and B.dtype == np.float32
    assert A.shape == B.shape
    np.testing.assert_array_equal(A.indptr, B.indptr)
    np.testing.assert_array_equal(A.indices, B.indices)
    assert A.data.tobytes() == B.data.tobytes()


# ----------------------------------------------------------------------------- strategies

f32_values = st.floats(width=32, allow_nan=False, allow_infinity=False).filter(lambda v: v != 0)
f32_values = f32_values | st.sampled_from([1.0, 1e-45, -1e-45, 3.4028234663852886e38, 1e-38])


@st.composite
def xc_matrices(draw, min_rows: int = 0):
    n = draw(st.integers(min_rows, 7))
    d = draw(st.integers(0, 9))
    L = draw(st.integers(0, 6))
    X = np.zeros((n, d), dtype=np.float32)
    if d:
        mask = draw(st.lists(st.booleans(), min_size=n * d, max_size=n * d))
        vals = draw(st.lists(f32_values, min_size=n * d, max_size=n * d))
        X = np.where(np.reshape(mask, (n, d)), np.reshape(vals, (n, d)), 0).astype(np.float32)
    Y = np.zeros((n, L), dtype=np.float32)
    if L:
        Y = np.reshape(draw(st.lists(st.booleans(), min_size=n * L, max_size=n * L)), (n, L))
        Y = Y.astype(np.float32)
    return sp.csr_matrix(X), sp.csr_matrix(Y)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


# ----------------------------------------------------------------------------- round trips


@HYP
@given(xy=xc_matrices(), suffix=st.sampled_from(SUFFIXES))
def test_round_trip_single_file(xy, suffix):
    X, Y = xy
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"train.txt{suffix}"
        write_xc(path, X, Y)
        D = read_xc(path)
    assert isinstance(D, XCData)
    assert (D.n_features, D.n_labels) == (X.shape[1], Y.shape[1])
    assert_same(D.X, canon(X))
    assert_same(D.Y, canon(Y))
    assert D.X.has_sorted_indices and D.Y.has_sorted_indices


@HYP
@given(xy=xc_matrices(), suffix=st.sampled_from(SUFFIXES), rel=st.booleans())
def test_round_trip_split_files(xy, suffix, rel):
    X, Y = xy
    if rel:  # graded relevance survives in the split layout
        Y = Y.multiply(np.float32(0.3)).tocsr()
    with tempfile.TemporaryDirectory() as tmp:
        fx, fy = Path(tmp) / f"trn_X_Xf.txt{suffix}", Path(tmp) / f"trn_X_Y.txt{suffix}"
        write_xc_split(fx, fy, X, Y)
        D = read_xc_split(fx, fy)
    assert (D.n_features, D.n_labels) == (X.shape[1], Y.shape[1])
    assert_same(D.X, canon(X))
    assert_same(D.Y, canon(Y))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_single_sparse_matrix(tmp_path, suffix):
    M = sp.random(6, 9, density=0.4, format="csr", dtype=np.float32, random_state=2)
    M.data -= 0.5
    path = tmp_path / f"tst_X_Xf.txt{suffix}"
    write_sparse_matrix(path, M)
    assert_same(read_sparse_matrix(path), canon(M))
    write(tmp_path / "y.txt", "1 3\n0:1 3:1\n")
    with pytest.raises(DataError, match=r"y\.txt:2: label id 3 >= n_labels 3"):
        read_sparse_matrix(tmp_path / "y.txt", kind="label")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_compressed_files_are_really_compressed(tmp_path, suffix):
    X = sp.random(20, 30, density=0.3, format="csr", dtype=np.float32, random_state=0)
    Y = sp.random(20, 5, density=0.3, format="csr", dtype=np.float32, random_state=1)
    path = tmp_path / f"a.txt{suffix}"
    write_xc(path, X, Y)
    magic = {"": b"20 30 5", ".gz": b"\x1f\x8b", ".xz": b"\xfd7zXZ", ".bz2": b"BZh"}[suffix]
    assert path.read_bytes().startswith(magic)
    assert_same(read_xc(path).X, canon(X))
    assert not list(tmp_path.glob(".*tmp"))  # no leftover temporary file


def test_writer_layout(tmp_path):
    X = sp.csr_matrix(np.array([[0, 1.5, 0], [0, 0, 0], [2, 0, 0.1], [0, 0, 0]], np.float32))
    Y = sp.csr_matrix(np.array([[1, 0], [0, 1], [0, 0], [0, 0]], np.float32))
    path = tmp_path / "a.txt"
    write_xc(path, X, Y)
    assert path.read_text() == "4 3 2\n0 1:1.5\n1\n 0:2 2:0.100000001\n \n"
    write_xc_split(tmp_path / "x.txt", tmp_path / "y.txt", X, Y)
    assert (tmp_path / "x.txt").read_text() == "4 3\n1:1.5\n\n0:2 2:0.100000001\n\n"
    assert (tmp_path / "y.txt").read_text() == "4 2\n0:1\n1:1\n\n\n"


def test_writer_rejects_bad_input(tmp_path):
    X = sp.csr_matrix(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="X has 2 rows but Y has 3"):
        write_xc(tmp_path / "a.txt", X, np.zeros((3, 1)))
    with pytest.raises(ValueError, match="not finite"):
        write_xc(tmp_path / "a.txt", np.array([[np.nan]]), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="not finite"):  # overflows float32
        write_xc_split(tmp_path / "x.txt", tmp_path / "y.txt", np.array([[1e39]]), [[1.0]])
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- lenient input


def test_accepts_crlf_trailing_space_and_final_empty_lines(tmp_path):
    text = "4 5 3\r\n0,2 1:1 3:0.5  \r\n 4:2\r\n1\r\n \r\n\r\n\r\n"
    D = read_xc(write(tmp_path / "a.txt", text))
    assert D.X.toarray().tolist() == [[0, 1, 0, 0.5, 0], [0, 0, 0, 0, 2], [0] * 5, [0] * 5]
    assert D.Y.toarray().tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_unsorted_ids_are_sorted_and_zeros_dropped(tmp_path):
    D = read_xc(write(tmp_path / "a.txt", "1 5 4\n3,0 4:1 0:2 2:0\n"))
    assert D.X.indices.tolist() == [0, 4] and D.X.data.tolist() == [2, 1]
    assert D.Y.indices.tolist() == [0, 3]


def test_empty_lines_within_count_are_empty_points(tmp_path):
    D = read_xc(write(tmp_path / "a.txt", "3 2 2\n\n1 0:1\n\n"))
    assert D.X.shape == (3, 2) and D.X.getnnz(axis=1).tolist() == [0, 1, 0]
    assert D.Y.getnnz(axis=1).tolist() == [0, 1, 0]


def test_point_without_leading_space_but_features_first(tmp_path):
    D = read_xc(write(tmp_path / "a.txt", "1 3 2\n2:1 0:1\n"))
    assert D.Y.nnz == 0 and D.X.indices.tolist() == [0, 2]


def test_zero_points(tmp_path):
    D = read_xc(write(tmp_path / "a.txt", "0 7 3\n"))
    assert D.X.shape == (0, 7) and D.Y.shape == (0, 3)


def test_width_override(tmp_path):
    path = write(tmp_path / "a.txt", "1 3 2\n1 2:1\n")
    D = read_xc(path, n_features=10, n_labels=4)
    assert D.X.shape == (1, 10) and D.Y.shape == (1, 4) and D.n_features == 10
    with pytest.raises(DataError, match=r"a\.txt:2: feature id 2 >= n_features 2"):
        read_xc(path, n_features=2)
    with pytest.raises(ValueError, match="n_labels must be a non-negative integer"):
        read_xc(path, n_labels=-1)


# ----------------------------------------------------------------------------- bad input

GOOD = "0,1 0:1 2:0.5\n"
BAD_SINGLE = [
    # (file text, line, message regex)
    ("", 1, r"empty file: expected a header line 'n_points n_features n_labels'"),
    ("\n0 0:1\n", 1, r"bad header '': expected 3 non-negative integers"),
    ("2 4\n", 1, r"bad header '2 4': expected 3 non-negative integers"),
    ("2 4 3 1\n", 1, r"bad header '2 4 3 1'"),
    ("2 -4 3\n", 1, r"bad header '2 -4 3'"),
    ("2 4.0 3\n", 1, r"bad header '2 4.0 3'"),
    ("x 4 3\n", 1, r"bad header 'x 4 3'"),
    ("10 4 3\n" + GOOD * 7, 8, r"header says 10 points but the file has 7$"),
    ("10 4 3\n", 1, r"header says 10 points but the file has 0$"),
    ("2 4 3\n" + GOOD * 3, 4, r"header says 2 points but the file has more"),
    ("2 4 3\n" + GOOD * 2 + "\n \n1 0:1\n", 6, r"header says 2 points but the file has more"),
    ("2 4 3\n" + GOOD + "a,1 0:1\n", 3, r"label id 'a' is not an integer"),
    ("2 4 3\n" + GOOD + "1.5 0:1\n", 3, r"label id '1\.5' is not an integer"),
    ("2 4 3\n" + GOOD + "1,-2 0:1\n", 3, r"negative label id -2"),
    ("2 4 3\n" + GOOD + "1,3 0:1\n", 3, r"label id 3 >= n_labels 3"),
    ("2 4 3\n" + GOOD + "1,,2 0:1\n", 3, r"empty label id in '1,,2'"),
    ("2 4 3\n" + GOOD + "1, 0:1\n", 3, r"empty label id in '1,'"),
    ("2 4 3\n" + GOOD + "2,1,2 0:1\n", 3, r"duplicate label id 2"),
    ("2 4 3\n" + GOOD + "1 x:1\n", 3, r"feature id 'x' is not an integer"),
    ("2 4 3\n" + GOOD + "1 0:1 -3:1\n", 3, r"negative feature id -3"),
    ("2 4 3\n" + GOOD + "1 0:1 12:1\n", 3, r"feature id 12 >= n_features 4"),
    ("2 4 3\n" + GOOD + "1 1:1 0:1 1:2\n", 3, r"duplicate feature id 1"),
    ("2 4 3\n" + GOOD + "1 0:1 2\n", 3, r"malformed feature:value pair '2' \(no colon\)"),
    ("2 4 3\n" + GOOD + "1 :1\n", 3, r"malformed feature:value pair ':1' \(empty feature id\)"),
    ("2 4 3\n" + GOOD + "1 2:\n", 3, r"malformed feature:value pair '2:' \(empty value\)"),
    (
        "2 4 3\n" + GOOD + "1 2:1:3\n",
        3,
        r"malformed feature:value pair '2:1:3' \(more than one colon\)",
    ),
    ("2 4 3\n" + GOOD + "1 2:abc\n", 3, r"value 'abc' of feature 2 is not a number"),
    ("2 4 3\n" + GOOD + "1 2:1,5\n", 3, r"value '1,5' of feature 2 is not a number"),
    ("2 4 3\n" + GOOD + "1 2:nan\n", 3, r"value nan of feature 2 is not finite"),
    ("2 4 3\n" + GOOD + "1 0:1 2:inf\n", 3, r"value inf of feature 2 is not finite"),
    ("2 4 3\n" + GOOD + "1 2:-Infinity\n", 3, r"value -inf of feature 2 is not finite"),
    ("2 4 3\n" + GOOD + "1 3:1e39\n", 3, r"value 1e\+39 of feature 3 overflows float32"),
    ("2 4 3\n" + GOOD + "1 3:-3.5e38\n", 3, r"value -3\.5e\+38 of feature 3 overflows float32"),
    ("2 4 3\n" + GOOD + "1 3:1e308 1:1e308\n", 3, r"value 1e\+308 of feature 3 overflows"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_SINGLE)
def test_bad_single_file(tmp_path, text, line, message):
    path = write(tmp_path / "train.txt", text)
    with pytest.raises(DataError, match=rf"train\.txt:{line}: {message}") as err:
        read_xc(path)
    assert err.value.line == line and err.value.path == str(path)


def test_bad_bytes_are_reported_with_their_line(tmp_path):
    path = write(tmp_path / "train.txt.gz", gzip.compress(b"2 4 3\n0 0:1\n1 1:\xff\n"))
    with pytest.raises(DataError, match=r"train\.txt\.gz:3: bytes that are not UTF-8"):
        read_xc(path)


def test_corrupt_compressed_file(tmp_path):
    data = bytearray(gzip.compress(b"2 3 1\n0 0:1\n0 1:0.5\n" * 300))
    data[len(data) // 2] ^= 0xFF  # a damaged deflate stream raises zlib.error inside gzip
    path = write(tmp_path / "train.txt.gz", bytes(data))
    with pytest.raises(DataError, match=r"train\.txt\.gz(:\d+)?: cannot read file"):
        read_xc(path)
    path = write(tmp_path / "test.txt.xz", lzma.compress(b"1 1 1\n0 0:1\n")[:20])
    with pytest.raises(DataError, match=r"test\.txt\.xz(:\d+)?: cannot read file"):
        read_xc(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.txt: file not found") as err:
        read_xc(tmp_path / "nothere.txt")
    assert err.value.line is None
    with pytest.raises(DataError, match="file not found"):
        read_xc_split(tmp_path / "a.txt", tmp_path / "b.txt")


def test_largest_float32_value_is_accepted(tmp_path):
    D = read_xc(write(tmp_path / "a.txt", "1 2 1\n0 0:3.40282347e+38 1:-3.40282347e+38\n"))
    assert D.X.data.tolist() == [np.finfo(np.float32).max, -np.finfo(np.float32).max]


BAD_SPLIT = [
    # (features text, labels text, file with the error, line, message regex)
    ("2 3 1\n", "2 2\n", "X_Xf", 1, r"bad header '2 3 1': expected 2 non-negative integers"),
    ("2 3\n0:1\n1:1\n", "2\n", "X_Y", 1, r"bad header '2': expected 2 .* 'n_rows n_cols'"),
    ("", "2 2\n", "X_Xf", 1, r"empty file: expected a header line 'n_rows n_cols'"),
    ("3 3\n0:1\n", "1 2\n0:1\n", "X_Xf", 2, r"header says 3 rows but the file has 1$"),
    ("1 3\n0:1\n", "1 2\n0:1\n1:1\n", "X_Y", 3, r"header says 1 rows but the file has more"),
    ("2 3\n0:1\n1:1\n", "2 2\n0:1\n2:1\n", "X_Y", 3, r"label id 2 >= n_labels 2"),
    ("2 3\n0:1\n1:1\n", "2 2\n0:1\n0:1 0:1\n", "X_Y", 3, r"duplicate label id 0"),
    ("2 3\n0:1\n5:1\n", "2 2\n\n\n", "X_Xf", 3, r"feature id 5 >= n_features 3"),
    ("2 3\n0:1\n1\n", "2 2\n\n\n", "X_Xf", 3, r"malformed feature:value pair '1' \(no"),
    ("2 3\n0:1\n1:1\n", "2 2\n0:x\n\n", "X_Y", 2, r"value 'x' of label 0 is not a number"),
    ("2 3\n0:1\n1:1\n", "2 2\n0:1\n-1:1\n", "X_Y", 3, r"negative label id -1"),
    ("2 3\n0:1\n1:nan\n", "2 2\n\n\n", "X_Xf", 3, r"value nan of feature 1 is not finite"),
]


@pytest.mark.parametrize(("xtext", "ytext", "where", "line", "message"), BAD_SPLIT)
def test_bad_split_files(tmp_path, xtext, ytext, where, line, message):
    fx = write(tmp_path / "trn_X_Xf.txt", xtext)
    fy = write(tmp_path / "trn_X_Y.txt", ytext)
    with pytest.raises(DataError, match=rf"trn_{where}\.txt:{line}: {message}") as err:
        read_xc_split(fx, fy)
    assert err.value.line == line


def test_split_row_count_mismatch_names_both_files(tmp_path):
    fx = write(tmp_path / "tst_X_Xf.txt", "3 4\n0:1\n\n1:1\n")
    fy = write(tmp_path / "tst_X_Y.txt", "2 5\n0:1\n1:1\n")
    pattern = r"tst_X_Y\.txt:1: header says 2 rows but the feature file .*tst_X_Xf\.txt has 3"
    with pytest.raises(DataError, match=pattern):
        read_xc_split(fx, fy)


def test_split_keeps_relevance_and_drops_zeros(tmp_path):
    fx = write(tmp_path / "x.txt", "2 3\n0:0.25 2:1\n\n")
    fy = write(tmp_path / "y.txt", "2 4\n3:0.5 1:2\n0:0\n")
    D = read_xc_split(fx, fy)
    assert D.Y.toarray().tolist() == [[0, 2, 0, 0.5], [0, 0, 0, 0]] and D.Y.nnz == 2
    assert D.X.toarray().tolist() == [[0.25, 0, 1], [0, 0, 0]]


# A token that makes any line bad, whatever the sizes (d, L) of the file.
FEATURE_GARBAGE = ["x", "5", ":1", "1:", "1:2:3", "a:1", "0:b", "0:nan", "0:-inf", "-1:1",
                   "{d}:1", "{big}:1", "0:1e39"]  # fmt: skip
LABEL_GARBAGE = ["x", "-1", "{L}", "0,,0", "1.0", "{big}"]


@HYP
@given(xy=xc_matrices(min_rows=1), data=st.data())
def test_corrupting_one_line_is_reported_at_that_line(xy, data):
    X, Y = xy
    n, d = X.shape
    L = Y.shape[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        write_xc(path, X, Y)
        lines = path.read_text().split("\n")
        k = data.draw(st.integers(2, n + 1), label="line")
        line = lines[k - 1]
        has_labels = not line.startswith(" ")
        fmt = {"d": d, "L": L, "big": 10**12}
        if data.draw(st.booleans(), label="corrupt labels"):
            bad = data.draw(st.sampled_from(LABEL_GARBAGE)).format(**fmt)
            if has_labels:
                head, _, tail = line.partition(" ")
                line = f"{bad} {tail}"
            else:
                line = bad + line
        else:
            bad = data.draw(st.sampled_from(FEATURE_GARBAGE)).format(**fmt)
            tokens = line.split(" ")
            pos = data.draw(st.integers(1, len(tokens)), label="position")
            tokens.insert(pos, bad)
            line = " ".join(tokens)
        lines[k - 1] = line
        path.write_text("\n".join(lines))
        with pytest.raises(DataError) as err:
            read_xc(path)
    assert err.value.line == k, str(err.value)
    assert re.match(rf".*train\.txt:{k}: ", str(err.value))


# ----------------------------------------------------------------------------- real data


def test_bibtex(tmp_path):
    root = shared_data() / "bibtex"
    stats = json.loads((root / "stats.json").read_text())
    t = time.perf_counter()
    train = read_xc(root / "train.txt.xz")
    elapsed = time.perf_counter() - t
    assert elapsed < 2.0, f"reading bibtex train took {elapsed:.2f} s"
    test = read_xc(root / "test.txt.xz")
    for D, split in ((train, "train"), (test, "test")):
        n = stats[f"n_{split}"]
        assert D.X.shape == (n, stats["n_features"]) and D.Y.shape == (n, stats["n_labels"])
        assert D.X.nnz / n == pytest.approx(stats[f"avg_nnz_features_per_point_{split}"], abs=1e-4)
        assert D.Y.nnz / n == pytest.approx(stats[f"avg_labels_per_point_{split}"], abs=1e-4)
        assert int((D.Y.getnnz(axis=1) == 0).sum()) == stats[f"{split}_points_with_0_labels"]
        assert set(D.X.data.tolist()) == {1.0}
        assert D.X.has_sorted_indices and D.X.has_canonical_format
    assert int((train.Y.getnnz(axis=0) > 0).sum()) == stats["labels_with_>=1_train_point"]
    # writing and reading back a real file is exact
    write_xc(tmp_path / "bibtex.txt.gz", test.X, test.Y)
    again = read_xc(tmp_path / "bibtex.txt.gz")
    assert_same(again.X, test.X)
    assert_same(again.Y, test.Y)


def test_delicious():
    root = shared_data() / "delicious"
    stats = json.loads((root / "stats.json").read_text())
    for split in ("train", "test"):
        D = read_xc(root / f"{split}.txt.xz")
        n = stats[f"n_{split}"]
        assert D.X.shape == (n, stats["n_features"]) and D.Y.shape == (n, stats["n_labels"])
        assert int((D.Y.getnnz(axis=1) == 0).sum()) == stats[f"{split}_points_with_0_labels"]
        assert D.Y.nnz / n == pytest.approx(stats[f"avg_labels_per_point_{split}"], abs=1e-4)
        assert D.X.nnz / n == pytest.approx(stats[f"avg_nnz_features_per_point_{split}"], abs=1e-4)


def test_eurlex_partial():
    root = shared_data() / "eurlex-4k-partial"
    stats = json.loads((root / "stats.json").read_text())
    path = root / "dev_subset_of_test.txt.xz"
    with lzma.open(path, "rt") as f:
        header = f.readline().split()
    assert header == [str(stats["n_points"]), str(stats["n_features"]), str(stats["n_labels"])]
    D = read_xc(path)
    assert D.X.shape == (stats["n_points"], stats["n_features"])
    assert D.Y.shape == (stats["n_points"], stats["n_labels"])
    n = D.X.shape[0]
    assert D.X.nnz / n == pytest.approx(stats["avg_nnz_features_per_point"], abs=1e-4)
    assert D.Y.nnz / n == pytest.approx(stats["avg_labels_per_point"], abs=1e-4)
    assert int((D.Y.getnnz(axis=1) == 0).sum()) == stats["points_with_0_labels"]
    assert int(D.X.indices.max()) == stats["max_feature_index"]
    assert int(D.Y.indices.max()) == stats["max_label_index"]
    assert int((D.Y.getnnz(axis=0) > 0).sum()) == stats["n_distinct_labels_present"]
    assert 0.0169 <= float(D.X.data.min()) and float(D.X.data.max()) <= 5880.18
