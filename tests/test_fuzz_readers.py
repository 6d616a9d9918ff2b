"""The dataset readers fuzzed with hypothesis over corruptions of the real files.

Small heads of ``../shared/data/bibtex/{train,test}.txt.xz`` (XC single-file layout,
also re-written in the XC split layout) and of ``../shared/data/debtags``'s
``{train,test}_{texts,labels}.txt.xz`` (raw-text layout) are written into a fresh
folder in their dataset layout; one or more of the folder's files is then corrupted
(truncated lines or files, ids out of range, bad ``f:v`` pairs, wrong header counts,
bad UTF-8, mixed separators, empty files, texts and labels of different lengths,
truncated compressed streams, stray bytes) and the folder is read with the public
loader :func:`jxmc.load_dataset`.  The contract: the load either succeeds (the
corruption happened to be valid input) or raises :class:`jxmc.errors.DataError`
naming the file (``"<path>[:<line>]: ..."``) in one line; no other exception ever
escapes, and the folder is left exactly as it was (nothing written, nothing removed).

Under ``CI=true`` a missing ``../shared/data`` fails these tests instead of skipping.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import tempfile
from pathlib import Path

import pytest
from conftest import shared_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jxmc
from jxmc.errors import DataError

N_TRAIN, N_TEST = 24, 8  # points kept of each split
TEXT_CHARS = 400  # characters kept of each document


def _real(name: str) -> Path:
    """``../shared/data/<name>``; a missing folder skips, but fails under ``CI=true``
    (:func:`conftest.shared_dataset`)."""
    return shared_dataset(name)


def _head(path: Path, n: int) -> list[str]:
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def _xc_head(path: Path, n: int) -> list[str]:
    """The first ``n`` points of an XC file, with a header that says ``n``."""
    lines = _head(path, n + 1)
    _, d, L = lines[0].split()
    return [f"{n} {d} {L}", *lines[1:]]


def _split_files(lines: list[str]) -> tuple[list[str], list[str]]:
    """The same points in the XC split layout: ``(X file lines, Y file lines)``."""
    n, d, L = lines[0].split()
    xs, ys = [f"{n} {d}"], [f"{n} {L}"]
    for line in lines[1:]:
        labels, _, feats = line.partition(" ")
        xs.append(feats)
        ys.append(" ".join(f"{j}:1" for j in labels.split(",") if j))
    return xs, ys


class _Files(dict):
    """``{file name: bytes}``, with a short repr for hypothesis's failure reports."""

    def __repr__(self) -> str:
        return f"<files {sorted(self)}>"


@pytest.fixture(scope="module")
def layouts() -> dict[str, dict[str, bytes]]:
    """``{layout: {file name: valid contents}}`` built from the real files' heads."""
    bib, deb = _real("bibtex"), _real("debtags")
    tr, te = _xc_head(bib / "train.txt.xz", N_TRAIN), _xc_head(bib / "test.txt.xz", N_TEST)
    (trx, try_), (tex, tey) = _split_files(tr), _split_files(te)
    text = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        text[f"{split}_texts.txt"] = [t[:TEXT_CHARS] for t in _head(deb / f"{split}_texts.txt.xz", n)]
        text[f"{split}_labels.txt"] = _head(deb / f"{split}_labels.txt.xz", n)

    def enc(files):
        return _Files({name: ("\n".join(lines) + "\n").encode() for name, lines in files.items()})

    return _Files({
        "xc": enc({"train.txt": tr, "test.txt": te}),
        "xc-split": enc({"trn_X_Xf.txt": trx, "trn_X_Y.txt": try_, "tst_X_Xf.txt": tex,
                         "tst_X_Y.txt": tey}),
        "text": enc(text),
    })


def test_the_uncorrupted_heads_load(layouts, tmp_path):
    """The base of every fuzzed folder is valid: the corruptions are what fails."""
    for layout, files in layouts.items():
        folder = tmp_path / layout
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        ds = jxmc.load_dataset(str(folder))
        assert ds.layout == layout
        assert ds.train.X.shape[0] == N_TRAIN and ds.test.X.shape[0] == N_TEST


# ----------------------------------------------------------------------------- corruptions

BAD_PAIRS = ["3:", ":1", "3:x", "3::1", "3", "a:1", "3:1e999", "3:nan", "3:-inf", "1.5:1",
             "0x1:1", "3:1:2", ":", "-0:1", "3:1,5", "٣:1", "3:0", "3.0:1", "9" * 30 + ":1"]
BAD_IDS = ["-1", "159", "1836", "160", "100000", str(2**63), "9" * 30, "", "x", "1.0", "+2"]
BAD_BYTES = [b"\xff", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82",
             b"\x00", b"\xef\xbb\xbf"]
BAD_HEADER_FIELDS = ["-1", "0", "1", "x", "99999999999999999999999", str(2**63), "1e3", "24.0",
                     "", "7", "10000"]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines)


@st.composite
def corrupt(draw, data: bytes) -> bytes:
    """One corruption of a file's bytes, drawn from the classes of the module docstring."""
    kind = draw(st.sampled_from(["truncate_line", "truncate_file", "bad_id", "bad_pair", "header",
                                 "bad_utf8", "separators", "empty", "lines", "bytes"]))
    lines = _lines(data)
    i = draw(st.integers(0, max(len(lines) - 2, 0)))  # a line (not the final empty one)
    if kind == "truncate_line":
        lines[i] = lines[i][: draw(st.integers(0, max(len(lines[i]) - 1, 0)))]
        return _join(lines)
    if kind == "truncate_file":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind in ("bad_id", "bad_pair"):
        tokens = lines[i].split(b" ")
        j = draw(st.integers(0, max(len(tokens) - 1, 0)))
        tok = tokens[j].decode("utf-8", "replace")
        if kind == "bad_pair":
            tok = draw(st.sampled_from(BAD_PAIRS))
        elif ":" in tok:  # a feature (or label) id
            tok = draw(st.sampled_from(BAD_IDS)) + ":" + tok.split(":", 1)[1]
        else:  # a label list, a header field or a word
            parts = tok.split(",")
            parts[draw(st.integers(0, len(parts) - 1))] = draw(st.sampled_from(BAD_IDS))
            tok = ",".join(parts)
        tokens[j] = tok.encode()
        lines[i] = b" ".join(tokens)
        return _join(lines)
    if kind == "header":
        fields = lines[0].split(b" ")
        how = draw(st.sampled_from(["change", "drop", "add"]))
        if how == "change" and fields:
            fields[draw(st.integers(0, len(fields) - 1))] = draw(st.sampled_from(BAD_HEADER_FIELDS)).encode()
        elif how == "drop" and fields:
            del fields[draw(st.integers(0, len(fields) - 1))]
        else:
            fields.append(draw(st.sampled_from(BAD_HEADER_FIELDS)).encode())
        lines[0] = b" ".join(fields)
        return _join(lines)
    if kind == "bad_utf8":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from(BAD_BYTES)) + data[at:]
    if kind == "separators":
        old, new = draw(st.sampled_from([(b" ", b"\t"), (b",", b";"), (b",", b" "), (b"\n", b"\r\n"),
                                         (b"\n", b"\r"), (b":", b"="), (b" ", b"  "), (b" ", b",")]))
        if draw(st.booleans()):
            return data.replace(old, new)
        lines[i] = lines[i].replace(old, new)
        return _join(lines)
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b" ", b"\n\n\n"]))
    if kind == "lines":  # a line dropped, repeated, or added: counts and alignment break
        how = draw(st.sampled_from(["drop", "repeat", "add", "blank"]))
        if how == "drop":
            del lines[i]
        elif how == "repeat":
            lines.insert(i, lines[i])
        elif how == "add":
            lines.insert(i, draw(st.sampled_from([b"x", b"0:1", b"1 0:1", b"", b" ", b"a b"])))
        else:
            lines[i] = b""
        return _join(lines)
    # stray bytes anywhere
    at = draw(st.integers(0, len(data)))
    cut = draw(st.integers(0, 8))
    return data[:at] + draw(st.binary(max_size=8)) + data[at + cut:]


def _compress(name: str, data: bytes, how: str) -> tuple[str, bytes]:
    if how == "gz":
        return name + ".gz", gzip.compress(data, mtime=0)
    if how == "xz":
        return name + ".xz", lzma.compress(data)
    return name, data


def _snapshot(folder: str) -> dict[str, str]:
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if os.path.isdir(path):
                out[rel] = "dir"
            else:
                st_ = os.stat(path)
                with open(path, "rb") as f:
                    out[rel] = f"{st_.st_size}:{st_.st_mtime_ns}:{hashlib.sha256(f.read()).hexdigest()}"
    return out


def _load_corrupted(files: dict[str, bytes], data: st.DataObject) -> None:
    """Corrupts 1-2 of ``files`` (optionally compressed, the stream maybe truncated),
    writes the folder and loads it: success or DataError, and nothing written."""
    names = sorted(files)
    targets = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "ds")
        os.mkdir(folder)
        for name in names:
            content = files[name]
            if name in targets:
                for _ in range(data.draw(st.integers(1, 2))):
                    content = data.draw(corrupt(content))
            how = data.draw(st.sampled_from(["plain", "plain", "gz", "xz"]))
            fname, blob = _compress(name, content, how)
            if how != "plain" and name in targets and data.draw(st.booleans()):
                blob = blob[: data.draw(st.integers(0, max(len(blob) - 1, 0)))]  # a cut stream
            with open(os.path.join(folder, fname), "wb") as f:
                f.write(blob)
        before = _snapshot(folder)
        try:
            jxmc.load_dataset(folder)
        except DataError as e:
            msg = str(e)
            assert "\n" not in msg, msg
            assert e.path is not None and e.path.startswith(folder), msg
        assert _snapshot(folder) == before, "the loader wrote into the data folder"
        assert sorted(os.listdir(tmp)) == ["ds"], "the loader wrote beside the data folder"


# JXMC_FUZZ_EXAMPLES=2000 JXMC_FUZZ_RANDOM=1 searches longer, with fresh random draws
FUZZ = settings(max_examples=int(os.environ.get("JXMC_FUZZ_EXAMPLES", "120")), deadline=None,
                derandomize=not os.environ.get("JXMC_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_xc_layout_corruptions_give_data_error_or_load(layouts, data):
    _load_corrupted(layouts["xc"], data)


@FUZZ
@given(data=st.data())
def test_xc_split_layout_corruptions_give_data_error_or_load(layouts, data):
    _load_corrupted(layouts["xc-split"], data)


@FUZZ
@given(data=st.data())
def test_text_layout_corruptions_give_data_error_or_load(layouts, data):
    _load_corrupted(layouts["text"], data)


@pytest.mark.parametrize("case", ["empty", "bad_utf8", "out_of_range", "bad_pair", "header",
                                  "short", "misaligned", "no_terms"])
def test_each_corruption_class_names_file_and_line(layouts, tmp_path, case):
    """One fixed instance of each class: a DataError naming the file (and the line)."""
    xc = dict(layouts["xc"])
    text = dict(layouts["text"])
    train = _lines(xc["train.txt"])
    files, bad, line, what = xc, "train.txt", None, ""
    if case == "empty":
        xc["train.txt"], line, what = b"", 1, "empty file"
    elif case == "bad_utf8":
        train[3] = train[3] + b" \xff"
        xc["train.txt"], line, what = _join(train), 4, "not UTF-8"
    elif case == "out_of_range":
        train[2] = b"159" + train[2][train[2].index(b" "):]
        xc["train.txt"], line, what = _join(train), 3, "label id 159 >= n_labels 159"
    elif case == "bad_pair":
        train[5] = train[5] + b" 7:x"
        xc["train.txt"], line, what = _join(train), 6, "is not a number"
    elif case == "header":
        train[0] = b"24 1836"
        xc["train.txt"], line, what = _join(train), 1, "bad header"
    elif case == "short":
        xc["train.txt"], line, what = _join(train[:-3]), None, f"header says {N_TRAIN} points"
    elif case == "no_terms":  # aligned, but TF-IDF keeps no term: named by the folder
        text["train_texts.txt"] = b"a\n" * N_TRAIN
        files, bad, what = text, "", "no TF-IDF term"
    else:
        labels = _lines(text["train_labels.txt"])
        text["train_labels.txt"] = _join(labels[:-2])
        files, bad, what = text, "train_texts.txt", "must be aligned"
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    with pytest.raises(DataError) as err:
        jxmc.load_dataset(str(tmp_path))
    assert err.value.path == str(tmp_path / bad), str(err.value)
    if line is not None:
        assert err.value.line == line, str(err.value)
    assert what in str(err.value) and "\n" not in str(err.value)
