"""jxmc.data.text: the AttentionXML / LightXML raw-text layout."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jxmc.data.text import (
    encode_labels,
    label_vocabulary,
    read_text_labels,
    read_text_split,
    read_texts,
    write_text_labels,
    write_texts,
)
from jxmc.errors import DataError

SUFFIXES = ["", ".gz", ".xz", ".bz2"]
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def shared_data() -> Path:
    from conftest import shared_root

    return shared_root()


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# Any text without a line break (surrogates cannot be UTF-8 encoded).
texts_st = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n\r"))
label_st = st.text(
    st.characters(exclude_categories=("Cs",)).filter(lambda c: not c.isspace()), min_size=1
)


@HYP
@given(
    texts=st.lists(texts_st, min_size=1, max_size=8),
    labels=st.lists(st.lists(label_st, max_size=4, unique=True), min_size=1, max_size=8),
    suffix=st.sampled_from(SUFFIXES),
)
def test_round_trip(texts, labels, suffix):
    labels = (labels * len(texts))[: len(texts)]
    with tempfile.TemporaryDirectory() as tmp:
        tp, lp = Path(tmp) / f"train_texts.txt{suffix}", Path(tmp) / f"train_labels.txt{suffix}"
        write_texts(tp, texts)
        write_text_labels(lp, labels)
        assert read_texts(tp) == texts
        assert read_text_labels(lp) == labels
        assert read_text_split(tp, lp) == (texts, labels)


def test_crlf_and_extra_whitespace(tmp_path):
    tp = write(tmp_path / "t.txt", "first doc  \r\nsecond\r\n\r\n")
    lp = write(tmp_path / "l.txt", "a  b\t\r\n\r\n c \r\n")
    assert read_texts(tp) == ["first doc  ", "second", ""]
    assert read_text_labels(lp) == [["a", "b"], [], ["c"]]


def test_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"t\.txt: empty file: expected one document per line"):
        read_texts(write(tmp_path / "t.txt", ""))
    with pytest.raises(DataError, match=r"l\.txt: empty file"):
        read_text_labels(write(tmp_path / "l.txt", ""))


def test_duplicate_label_in_a_line(tmp_path):
    path = write(tmp_path / "train_labels.txt", "a b\n\nc d c\n")
    with pytest.raises(DataError, match=r"train_labels\.txt:3: duplicate label 'c'") as err:
        read_text_labels(path)
    assert err.value.line == 3


def test_line_counts_differ(tmp_path):
    tp = write(tmp_path / "test_texts.txt", "x\ny\nz\n")
    lp = write(tmp_path / "test_labels.txt", "a\nb\n")
    pattern = r"test_texts\.txt: has 3 lines but the labels file .*test_labels\.txt has 2 lines"
    with pytest.raises(DataError, match=pattern):
        read_text_split(tp, lp)


def test_bad_bytes_and_missing_file(tmp_path):
    path = write(tmp_path / "t.txt", b"ok\nalso ok\nbad \xc3\x28 here\n")
    with pytest.raises(DataError, match=r"t\.txt:3: bytes that are not UTF-8"):
        read_texts(path)
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        read_text_labels(tmp_path / "nope.txt")


def test_writers_reject_what_cannot_round_trip(tmp_path):
    for bad in ("two\nlines", "cr\r"):
        with pytest.raises(ValueError, match="text 1 holds a line break"):
            write_texts(tmp_path / "t.txt", ["fine", bad])
    for bad in ("", "a b", "tab\t", "nl\n"):
        with pytest.raises(ValueError, match="empty or holds whitespace"):
            write_text_labels(tmp_path / "l.txt", [["x"], ["y", bad]])
    with pytest.raises(ValueError, match="point 0 lists a label twice"):
        write_text_labels(tmp_path / "l.txt", [["x", "x"]])
    assert not list(tmp_path.iterdir())


def test_vocabulary_and_encoding():
    train = [["b", "a"], [], ["c", "a"]]
    vocab = label_vocabulary(train)
    assert vocab == ["a", "b", "c"]
    Y, extra = encode_labels(train, vocab, extend_unseen=False)
    assert extra == [] and Y.dtype == np.float32 and Y.has_sorted_indices
    assert Y.toarray().tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 1]]

    test = [["z", "a"], ["y"], []]
    Y, extra = encode_labels(test, vocab, extend_unseen=True)
    assert extra == ["y", "z"]  # unseen names: new columns after L, sorted
    assert Y.shape == (3, 5)
    assert Y.toarray().tolist() == [[1, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]]

    with pytest.raises(ValueError, match=r"label 'z' of point 0 is not in the vocabulary"):
        encode_labels(test, vocab, extend_unseen=False)
    with pytest.raises(ValueError, match="point 0 lists a label twice"):
        encode_labels([["a", "a"]], vocab, extend_unseen=True)
    with pytest.raises(ValueError, match="label 'a' appears twice in the vocabulary"):
        encode_labels([["a"]], ["a", "b", "a"], extend_unseen=True)
    Y, extra = encode_labels([], vocab, extend_unseen=True)
    assert Y.shape == (0, 3) and extra == []


@settings(max_examples=60, deadline=None)
@given(
    train=st.lists(st.lists(st.sampled_from("abcdefg"), unique=True), max_size=6),
    test=st.lists(st.lists(st.sampled_from("abcdefghij"), unique=True), max_size=6),
)
def test_encoding_matches_names(train, test):
    vocab = label_vocabulary(train)
    Y, extra = encode_labels(test, vocab, extend_unseen=True)
    names = vocab + extra
    assert extra == sorted(set(extra)) and not set(extra) & set(vocab)
    assert Y.shape == (len(test), len(names))
    for i, row in enumerate(test):
        assert sorted(names[j] for j in Y[i].indices) == sorted(row)
        assert set(Y[i].data.tolist()) <= {1.0}


def test_debtags():
    root = shared_data() / "debtags"
    stats = json.loads((root / "stats.json").read_text())
    tr_texts, tr_labels = read_text_split(root / "train_texts.txt.xz", root / "train_labels.txt.xz")
    te_texts, te_labels = read_text_split(root / "test_texts.txt.xz", root / "test_labels.txt.xz")
    assert len(tr_texts) == stats["n_train"] and len(te_texts) == stats["n_test"]
    vocab = label_vocabulary(tr_labels)
    assert len(vocab) == stats["n_labels_train"]
    Ytr, extra = encode_labels(tr_labels, vocab, extend_unseen=False)
    assert extra == [] and Ytr.shape == (stats["n_train"], stats["n_labels_train"])
    assert Ytr.nnz / Ytr.shape[0] == pytest.approx(stats["avg_labels_per_point_train"])
    Yte, extra = encode_labels(te_labels, vocab, extend_unseen=True)
    assert len(extra) == stats["test_labels_unseen_in_train"]
    assert len(vocab) + len(extra) == stats["n_labels_all"] == Yte.shape[1]
    assert Yte.nnz == sum(len(names) for names in te_labels)
    words = sum(len(t.split()) for t in tr_texts)
    assert words / len(tr_texts) == pytest.approx(stats["avg_words_per_doc_train"], rel=1e-3)
