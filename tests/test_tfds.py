"""jxmc.data.tfds: TFDS builders written as array_record and read back without TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import shared_dataset

from jxmc.data import catalog, tfds_build, tfds_spec, xc
from jxmc.data import tfds as jt
from jxmc.data.dataset import load_dataset
from jxmc.data.text import write_text_labels, write_texts
from jxmc.errors import ConfigError, DataError
from jxmc.ops.ids import csr_to_padded
from jxmc.ops.sparse import csr_to_ell, max_row_nnz


def assert_same_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    """Bit-identical CSR matrices (shape, dtype, structure, values)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def assert_same_dataset(got, ref) -> None:
    for split in ("train", "test"):
        g, r = getattr(got, split), getattr(ref, split)
        assert_same_csr(g.X, r.X)
        assert_same_csr(g.Y, r.Y)
        assert g.texts == r.texts
    assert got.label_names == ref.label_names
    assert got.extra_label_names == ref.extra_label_names


# ------------------------------------------------------------------ bibtex from ../shared/data

# Runs in a fresh interpreter in which TensorFlow cannot be found, installed or not: every
# meta-path finder is wrapped so that ``tensorflow`` and its submodules are not found (a
# ``sys.modules["tensorflow"] = None`` block would not do: TFDS reads that entry as "TF loaded").
BUILD_WITHOUT_TF = textwrap.dedent("""
    import importlib.util, json, sys

    class HideTensorFlow:
        def __init__(self, finder):
            self.finder = finder
        def __getattr__(self, name):
            return getattr(self.finder, name)
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                return None
            return self.finder.find_spec(name, path, target)

    sys.meta_path[:] = [HideTensorFlow(f) for f in sys.meta_path]
    assert importlib.util.find_spec("tensorflow") is None
    from jxmc.data import tfds as jt
    from jxmc.data.tfds_build import build
    spec = build("bibtex", source_dir=sys.argv[1], data_dir=sys.argv[2])
    ds = jt.load_tfds(spec)
    import tensorflow_datasets as tfds
    plain = tfds.data_source("xc_repository/bibtex", data_dir=sys.argv[2])
    print(json.dumps({"spec": spec, "n": [ds.train.X.shape[0], ds.test.X.shape[0]],
                      "tf_modules": [m for m in sys.modules
                                     if m == "tensorflow" or m.startswith("tensorflow.")],
                      "plain": [len(plain["train"]), len(plain["test"])]}))
""")


def test_bibtex_through_tfds_without_tensorflow(tmp_path):
    """Builds bibtex from ../shared/data in a fresh interpreter where TensorFlow cannot be
    imported (hidden even if installed) and reads it back with jxmc and with plain TFDS; then
    checks, here, that it is exactly what the XC loader reads, as padded rows."""
    folder = shared_dataset("bibtex")
    data_dir = tmp_path / "tfds"
    r = subprocess.run([sys.executable, "-c", BUILD_WITHOUT_TF, str(folder), str(data_dir)],
                       capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["tf_modules"] == []
    assert out["n"] == [4880, 2515] and out["plain"] == [4880, 2515]
    assert out["spec"] == f"tfds:xc_repository/bibtex@{data_dir}"
    files = sorted(os.listdir(data_dir / "xc_repository" / "bibtex" / "1.0.0"))
    assert any(f.startswith("xc_repository-train.array_record") for f in files)
    assert not any("tfrecord" in f for f in files)

    # what load_dataset reads from the folder, bit for bit
    ref = load_dataset(str(folder))
    for spec in (f"tfds:bibtex@{data_dir}", f"tfds:xc_repository/bibtex:1.0.0@{data_dir}"):
        got = jt.load_tfds(spec)
        assert_same_dataset(got, ref)
        assert (got.name, got.layout, got.source) == ("bibtex", "xc", spec)
    spec = f"tfds:bibtex@{data_dir}"
    raw_tr = xc.read_xc(str(folder / "train.txt.xz"))
    raw_te = xc.read_xc(str(folder / "test.txt.xz"))
    X, Y = jt.read_tfds_split(spec, "train")
    assert_same_csr(X, raw_tr.X)  # stored values are the file's, not normalised
    assert_same_csr(Y, sp.csr_matrix((raw_tr.Y != 0).astype(np.float32)))

    # records: padded rows in file order, widths of the widest row of both splits
    src = jt.data_source(spec)["test"]
    meta = jt.describe(spec)["metadata"]
    z, m = meta["max_nnz"], meta["max_labels"]
    assert meta["n_features"] == 1836 and meta["n_labels"] == 159
    assert z == max(max_row_nnz(raw_te.X), max_row_nnz(raw_tr.X))
    assert m == max(max_row_nnz(raw_te.Y), max_row_nnz(raw_tr.Y))
    ell, lab = csr_to_ell(raw_te.X, z), csr_to_padded(raw_te.Y, m)
    for i in (0, 1, 1000, len(src) - 1):
        rec = src[i]
        assert rec["indices"].dtype == np.int32 and rec["indices"].shape == (z,)
        assert rec["values"].dtype == np.float32 and rec["labels"].shape == (m,)
        np.testing.assert_array_equal(rec["indices"], ell.indices[i])
        np.testing.assert_array_equal(rec["values"], ell.values[i])
        np.testing.assert_array_equal(rec["labels"], lab[i])

    # fixed-shape jxmc batches straight from the records
    batches = list(jt.iterate_tfds_batches(spec, "test", batch_size=1000))
    assert len(batches) == 3
    assert {b.x.indices.shape for b in batches} == {(1000, z)}
    assert batches[-1].valid.sum() == 515 and (batches[-1].labels[515:] == -1).all()
    ind = np.concatenate([b.x.indices for b in batches])[:2515]
    val = np.concatenate([b.x.values for b in batches])[:2515]
    lab = np.concatenate([b.labels for b in batches])[:2515]
    ref_ell = csr_to_ell(ref.test.X.sorted_indices(), z)  # records are sorted by feature id
    np.testing.assert_array_equal(ind, ref_ell.indices)
    np.testing.assert_allclose(val, ref_ell.values, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(lab, csr_to_padded(ref.test.Y, m))
    shuffled = next(jt.iterate_tfds_batches(spec, "test", batch_size=8,
                                            rng=np.random.default_rng(0)))
    order = np.random.default_rng(0).permutation(2515)[:8]
    np.testing.assert_array_equal(shuffled.x.indices, ref_ell.indices[order])


# ------------------------------------------------------------------ layouts, on small files


def _small_xc(seed: int = 0, n: int = 30, d: int = 12, L: int = 7):
    """Small XC data with a point without features (row 3) and one without labels (row 5)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.5, 3.0, (n, d)).astype(np.float32) * (rng.random((n, d)) < 0.3)
    X[3] = 0.0
    Y = (rng.random((n, L)) < 0.3).astype(np.float32)
    Y[5] = 0.0
    return sp.csr_matrix(X), sp.csr_matrix(Y)


def test_every_xc_layout_reads_back_as_the_xc_reader_reads(tmp_path):
    X, Y = _small_xc()
    tr, te = slice(0, 20), slice(20, 30)
    layouts = {
        "single": [("train.txt.gz", tr), ("test.txt", te)],
        "prefix": [("eurlex_train.txt.bz2", tr), ("eurlex_test.txt", te)],
    }
    for name, files in layouts.items():
        (tmp_path / name).mkdir()
        for fname, rows in files:
            xc.write_xc(tmp_path / name / fname, X[rows], Y[rows])
    (tmp_path / "split").mkdir()
    xc.write_xc_split(tmp_path / "split/trn_X_Xf.txt", tmp_path / "split/trn_X_Y.txt", X[tr], Y[tr])
    xc.write_xc_split(tmp_path / "split/tst_X_Xf.txt.xz", tmp_path / "split/tst_X_Y.txt", X[te],
                      Y[te])
    data_dir = tmp_path / "tfds"
    for name in ("single", "prefix", "split"):
        spec = tfds_build.build(f"my-{name}", source_dir=tmp_path / name, data_dir=data_dir)
        assert spec == f"tfds:xc_repository/my_{name}@{data_dir}"
        got = jt.load_tfds(f"tfds:my_{name}@{data_dir}", normalise=False)
        assert_same_csr(got.train.X, X[tr])
        assert_same_csr(got.test.X, X[te])
        assert_same_csr(got.train.Y, Y[tr])
        assert_same_csr(got.test.Y, Y[te])
        if name != "prefix":  # load_dataset knows train.txt/test.txt and the split files
            assert_same_dataset(jt.load_tfds(spec), load_dataset(str(tmp_path / name)))


def test_small_set_layout_with_split_files(tmp_path):
    X, Y = _small_xc(seed=1)
    folder = tmp_path / "Toy"
    folder.mkdir()
    xc.write_xc(folder / "Toy_data.txt", X, Y)
    rng = np.random.default_rng(0)
    perms = [rng.permutation(30) for _ in range(3)]  # 3 random splits, 1-based rows
    (folder / "toy_trSplit.txt").write_text(
        "".join(" ".join(str(p[i] + 1) for p in perms) + "\n" for i in range(18)))
    (folder / "toy_tstSplit.txt").write_text(
        "".join(" ".join(str(p[i] + 1) for p in perms) + "\n" for i in range(18, 30)))
    data_dir = tmp_path / "tfds"
    for k in (0, 2):
        spec = tfds_build.build("toy", source_dir=folder, data_dir=data_dir, split_index=k)
        assert spec.endswith(f"/toy{'_split2' if k else ''}@{data_dir}")
        got = jt.load_tfds(spec, normalise=False)
        assert_same_csr(got.train.X, X[perms[k][:18]])
        assert_same_csr(got.train.Y, Y[perms[k][:18]])
        assert_same_csr(got.test.X, X[perms[k][18:]])
        assert_same_csr(got.test.Y, Y[perms[k][18:]])
        assert jt.describe(spec)["metadata"]["source_layout"] == "xc-data+splits"
    with pytest.raises(DataError, match="split_index 3 but the line has 3 columns"):
        tfds_build.build("toy", source_dir=folder, data_dir=data_dir, split_index=3)


def test_max_nnz_caps_rows_keeping_the_largest_values(tmp_path):
    X, Y = _small_xc(seed=2)
    (tmp_path / "src").mkdir()
    xc.write_xc(tmp_path / "src/train.txt", X[:20], Y[:20])
    xc.write_xc(tmp_path / "src/test.txt", X[20:], Y[20:])
    spec = tfds_build.build("capped", source_dir=tmp_path / "src", data_dir=tmp_path / "d", max_nnz=2)
    assert "/capped_z2@" in spec
    meta = jt.describe(spec)["metadata"]
    assert meta["max_nnz"] == 2 and meta["truncated_rows"] == int((np.diff(X.indptr) > 2).sum())
    Xtr, Ytr = jt.read_tfds_split(spec, "train")
    ell = csr_to_ell(X[:20], 2)  # the 2 entries of largest magnitude of each row
    rows = np.repeat(np.arange(20), 2)
    keep = ell.values.ravel() != 0
    expected = sp.csr_matrix((ell.values.ravel()[keep], (rows[keep], ell.indices.ravel()[keep])),
                             shape=(20, 12), dtype=np.float32)
    expected.sort_indices()
    assert_same_csr(Xtr, expected)
    assert_same_csr(Ytr, Y[:20])  # labels are never capped


ISSUE_SETS = ("EURLex-4K", "Wiki10-31K", "AmazonCat-13K", "Wiki-500K", "Amazon-670K", "Amazon-3M",
              "Bibtex", "Delicious", "Mediamill")


def test_every_xc_set_has_a_config_whose_documented_files_are_recognised(tmp_path):
    """Each set gets a predefined config, and a folder holding small files under the names
    its download uses (``XC_DATASETS[...].files``) reads back as the XC reader reads them."""
    from jxmc.data.sources import read_xc_source
    from jxmc.data.tfds_builders import XcRepository

    keys = [catalog.config_name(name) for name in ISSUE_SETS]
    assert sorted(keys) == sorted(catalog.XC_DATASETS)
    assert sorted(c.name for c in XcRepository.BUILDER_CONFIGS) == sorted(keys)
    X, Y = _small_xc(seed=6)
    for key in keys:
        info = catalog.XC_DATASETS[key]
        files = [f.strip() for f in info.files.split(",")]
        assert all(f in catalog.download_hint(key) for f in files) and info.title in catalog.download_hint(key)
        folder = tmp_path / key
        folder.mkdir()
        if len(files) == 3:  # NAME_data.txt + NAME_trSplit.txt + NAME_tstSplit.txt
            xc.write_xc(folder / files[0], X, Y)
            (folder / files[1]).write_text("".join(f"{i + 1} {30 - i}\n" for i in range(20)))
            (folder / files[2]).write_text("".join(f"{i + 1} {30 - i}\n" for i in range(20, 30)))
        else:  # PREFIX_train.txt + PREFIX_test.txt
            xc.write_xc(folder / files[0], X[:20], Y[:20])
            xc.write_xc(folder / files[1], X[20:], Y[20:])
        src = read_xc_source(folder)
        assert sorted(src.files) == sorted(files)
        assert_same_csr(src.train.X, X[:20])
        assert_same_csr(src.test.Y, Y[20:])
    with pytest.raises(DataError, match="source folder not found; .*amazon-3M_train.txt"):
        tfds_build.build("Amazon-3M", source_dir=tmp_path / "missing", data_dir=tmp_path / "d")


def test_sources_command_lists_every_set(capsys):
    assert jt.main(["sources"]) == 0
    out = capsys.readouterr().out
    assert catalog.XC_URL in out and catalog.TEXT_URL in out
    for info in catalog.XC_DATASETS.values():
        assert f" {info.title} " in out and info.files in out


def test_published_sizes_are_checked_for_known_sets(tmp_path):
    X, Y = _small_xc(seed=3)
    (tmp_path / "src").mkdir()
    xc.write_xc(tmp_path / "src/eurlex_train.txt", X[:20], Y[:20])
    xc.write_xc(tmp_path / "src/eurlex_test.txt", X[20:], Y[20:])
    with pytest.warns(UserWarning, match="EURLex-4K"):
        spec = tfds_build.build("EURLex-4K", source_dir=tmp_path / "src", data_dir=tmp_path / "d")
    assert spec == f"tfds:xc_repository/eurlex_4k@{tmp_path / 'd'}"
    assert jt.load_tfds(f"tfds:eurlex-4k@{tmp_path / 'd'}").name == "eurlex_4k"


# ------------------------------------------------------------------ raw text


def test_raw_text_folder_reads_back_as_load_dataset_reads_it(tmp_path):
    src = tmp_path / "text"
    src.mkdir()
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(words, 6)) + (" café ☕" if i % 7 == 0 else "") for i in range(40)]
    labels = [sorted(set(rng.choice(["a", "b:c", "d", "e", "f"], rng.integers(0, 3))))
              for _ in range(40)]
    labels[35] = ["only-in-test", "a"]
    write_texts(src / "train_texts.txt", docs[:30])
    write_text_labels(src / "train_labels.txt.gz", labels[:30])
    write_texts(src / "test_texts.txt.xz", docs[30:])
    write_text_labels(src / "test_labels.txt", labels[30:])
    spec = tfds_build.build("Tiny Text", kind="text", source_dir=src, data_dir=tmp_path / "d")
    assert spec == f"tfds:xmc_text/tiny_text@{tmp_path / 'd'}"
    got, ref = jt.load_tfds(spec), load_dataset(str(src))
    assert_same_dataset(got, ref)
    assert got.layout == "text" and "only-in-test" in got.extra_label_names
    texts, label_lists = jt.read_tfds_split(f"tfds:tiny_text@{tmp_path / 'd'}", "test")
    assert texts == docs[30:] and label_lists == labels[30:]
    with pytest.raises(ConfigError, match="raw-text"):
        next(jt.iterate_tfds_batches(spec, "train", batch_size=4))


# ------------------------------------------------------------------ specs and errors


def test_specs_and_names(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert tfds_spec.parse_spec("tfds:bibtex") == tfds_spec.TfdsSpec(None, "bibtex", None, str(tmp_path))
    assert tfds_spec.parse_spec("tfds:xmc_text/My-Set:1.0.0@/x/y") == tfds_spec.TfdsSpec(
        "xmc_text", "my_set", "1.0.0", "/x/y")
    assert catalog.config_name("WikipediaLarge-500K") == "wiki_500k"
    assert catalog.config_name("Amazon-670K") == "amazon_670k"
    for bad in ("bibtex", "tfds:", "tfds:nope/bibtex", "tfds:bibtex:1.0", "tfds:bad$name"):
        with pytest.raises(ConfigError):
            tfds_spec.parse_spec(bad)
    with pytest.raises(DataError, match="python -m jxmc.data.tfds build bibtex"):
        jt.load_tfds("tfds:bibtex")
    with pytest.raises(DataError, match="no XC data set layout recognised"):
        tfds_build.build("bibtex", source_dir=tmp_path, data_dir=tmp_path / "d")
    with pytest.raises(ConfigError, match="kind"):
        tfds_build.build("x", source_dir=tmp_path, kind="csv")


def test_the_same_name_under_both_builders_must_be_qualified(tmp_path):
    X, Y = _small_xc(seed=4)
    (tmp_path / "xc").mkdir()
    xc.write_xc(tmp_path / "xc/train.txt", X[:20], Y[:20])
    xc.write_xc(tmp_path / "xc/test.txt", X[20:], Y[20:])
    (tmp_path / "text").mkdir()
    write_texts(tmp_path / "text/train_texts.txt", ["a b", "b c"])
    write_text_labels(tmp_path / "text/train_labels.txt", [["x"], ["y"]])
    write_texts(tmp_path / "text/test_texts.txt", ["a c"])
    write_text_labels(tmp_path / "text/test_labels.txt", [["x"]])
    d = tmp_path / "d"
    tfds_build.build("same", source_dir=tmp_path / "xc", data_dir=d)
    tfds_build.build("same", kind="text", source_dir=tmp_path / "text", data_dir=d)
    with pytest.raises(DataError, match="tfds:BUILDER/NAME"):
        jt.load_tfds(f"tfds:same@{d}")
    assert jt.load_tfds(f"tfds:xc_repository/same@{d}").layout == "xc"
    assert jt.read_tfds_split(f"tfds:xmc_text/same@{d}", "test") == (["a c"], [["x"]])


# ------------------------------------------------------------------ the command line


def test_module_cli_builds_and_describes(tmp_path):
    X, Y = _small_xc(seed=5)
    (tmp_path / "src").mkdir()
    xc.write_xc(tmp_path / "src/train.txt", X[:20], Y[:20])
    xc.write_xc(tmp_path / "src/test.txt", X[20:], Y[20:])
    assert jt.main(["build", "cli-set", "--source-dir", str(tmp_path / "src"),
                    "--data-dir", str(tmp_path / "d")]) == 0
    assert jt.main(["info", f"tfds:cli_set@{tmp_path / 'd'}"]) == 0
    assert jt.main(["info", f"tfds:missing@{tmp_path / 'd'}"]) == 2


def test_jxmc_train_reads_a_prepared_tfds_dataset(tmp_path, capsys):
    from jxmc import modeldir
    from jxmc.cli import main
    from jxmc.data.inputs import read_test_split
    from jxmc.data.synthetic import SyntheticConfig, generate

    Xtr, Ytr, Xte, Yte = generate(SyntheticConfig(n_train=600, n_test=150, n_labels=48,
                                                  n_features=300, branching=(4, 4)))
    src = tmp_path / "src"
    src.mkdir()
    xc.write_xc(src / "train.txt", Xtr, Ytr)
    xc.write_xc(src / "test.txt", Xte, Yte)
    spec = tfds_build.build("synth", source_dir=src, data_dir=tmp_path / "d")
    capsys.readouterr()
    tables = []
    for data in (spec, str(src)):
        model = tmp_path / ("m_tfds" if data == spec else "m_dir")
        assert main(["train", "--data", data, "--model-dir", str(model), "--no-progress",
                     "--method", "ovr"]) == 0
        tables.append(capsys.readouterr().out.splitlines()[1:7])  # the metrics rows
    assert tables[0] == tables[1]  # same data, same model, same metrics
    saved = modeldir.load(str(tmp_path / "m_tfds"))
    X, Y, names, texts = jt.read_tfds_test_split(spec, saved)
    Xr, Yr, _, _ = read_test_split(str(src), saved)
    assert_same_csr(X, Xr)
    assert_same_csr(Y, Yr)
    assert names is None and texts is None
