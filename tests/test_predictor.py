"""jxmc.predictor.Predictor: one model directory loaded once, answers as `jxmc predict`'s."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from toy_data import read_predictions, rows_as_text, trained_synthetic

from jxmc.cli import main
from jxmc.errors import ConfigError, DataError
from jxmc.predictor import Predictor, parse_feature_rows

# short rows (<= 6 non-zeros + the bias feature): one padded row length, few compiles
SPEC = "synthetic:n_train=300,n_test=12,n_labels=32,n_features=200,words_per_point=6,branching=4/4"


@pytest.fixture(scope="module")
def sparse_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("pred")
    model = str(d / "m")
    Xte = trained_synthetic(model, SPEC)
    return model, Xte, d


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A raw-text model (TF-IDF featuriser saved with it) on a small planted corpus."""
    d = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    words = {f"tag{j}": [f"w{j}x{i}" for i in range(6)] for j in range(6)}
    noise = [f"n{i}" for i in range(30)]

    def split(n):
        texts, labels = [], []
        for _ in range(n):
            tags = sorted(rng.choice(list(words), size=int(rng.integers(1, 3)), replace=False))
            toks = [str(rng.choice(words[t])) for t in tags for _ in range(4)]
            toks += [str(t) for t in rng.choice(noise, 4)]
            rng.shuffle(toks)
            texts.append(" ".join(toks))
            labels.append(" ".join(tags))
        return texts, labels

    folder = d / "data"
    folder.mkdir()
    for name, n in (("train", 160), ("test", 10)):
        texts, labels = split(n)
        (folder / f"{name}_texts.txt").write_text("\n".join(texts) + "\n")
        (folder / f"{name}_labels.txt").write_text("\n".join(labels) + "\n")
    model = str(d / "m")
    assert main(["train", "--data", str(folder), "--model-dir", model, "--no-progress"]) == 0
    return model, texts, d


def test_one_at_a_time_equals_batched_and_the_csr_input(sparse_model):
    model, Xte, _ = sparse_model
    p = Predictor(model)
    rows = rows_as_text(Xte)
    batched = p.predict(features=rows, k=5)
    assert batched.ids.shape == (len(rows), 5) and batched.scores.dtype == np.float32
    assert np.all(np.diff(batched.scores, axis=1) <= 0)
    from_csr = p.predict(features=Xte, k=5)
    np.testing.assert_array_equal(from_csr.ids, batched.ids)
    np.testing.assert_allclose(from_csr.scores, batched.scores, rtol=0, atol=1e-6)
    for i, row in enumerate(rows):
        one = p.predict_one(features=row, k=5)
        assert one.ids.shape == (1, 5)
        np.testing.assert_array_equal(one.ids[0], batched.ids[i])
        np.testing.assert_allclose(one.scores[0], batched.scores[i], rtol=0, atol=1e-5)
        assert one.labels[0] == batched.labels[i]
    # id-labelled data: a label is named by its id, as jxmc predict writes it
    assert batched.labels[0] == [str(i) for i in batched.ids[0] if i >= 0]
    assert batched.probabilities is None and p.calibrator is None
    first = batched.rows()[0][0]
    assert set(first) == {"label", "id", "score"} and first["id"] == int(batched.ids[0, 0])


def test_answers_equal_jxmc_predict_on_a_features_file(sparse_model):
    model, Xte, d = sparse_model
    path, out = d / "feats.txt", d / "pred.txt"
    rows = rows_as_text(Xte)
    path.write_text(f"{len(rows)} {Xte.shape[1]}\n" + "\n".join(rows) + "\n")
    assert main(["predict", "--data", str(path), "--model-dir", model, "--top-k", "4",
                 "--out", str(out)]) == 0
    want = read_predictions(out)
    got = Predictor(model).predict(features=rows, k=4)
    for w, labels, scores in zip(want, got.labels, got.scores, strict=True):
        assert [name for name, _ in w] == labels
        np.testing.assert_allclose([s for _, s in w], scores[: len(w)], rtol=0, atol=1e-5)


def test_bad_inputs_name_the_row(sparse_model):
    model, Xte, _ = sparse_model
    p = Predictor(model)
    with pytest.raises(DataError, match=r"features\[1\].*feature id 200 >= n_features 200"):
        p.predict(features=["1:1", "200:1"])
    with pytest.raises(DataError, match=r"features\[0\].*duplicate feature id 3"):
        p.predict(features=["3:1 3:2"])
    with pytest.raises(DataError, match=r"features\[0\].*no colon"):
        p.predict(features=["3"])
    with pytest.raises(DataError, match="trained on sparse features"):
        p.predict(texts=["some words"])
    with pytest.raises(DataError, match="features"):
        p.predict(features=sp.csr_matrix((1, 199), dtype=np.float32))
    with pytest.raises(ConfigError, match="exactly one"):
        p.predict()
    with pytest.raises(ConfigError, match="k must be >= 1"):
        p.predict(features=["1:1"], k=0)
    with pytest.raises(ConfigError, match="beam_size|not a prediction option"):
        Predictor(model, overrides=["nr_splits=4"])


def test_parse_feature_rows_reads_as_an_xc_file(tmp_path):
    from jxmc.data.xc import read_sparse_matrix

    rows = ["0:0.5 7:1.25", "", "3:0 2:2e-3"]
    path = tmp_path / "f.txt"
    path.write_text("3 8\n" + "\n".join(rows) + "\n")
    want = read_sparse_matrix(path)
    got = parse_feature_rows(rows, 8)
    assert got.shape == want.shape and (got != want).nnz == 0
    np.testing.assert_array_equal(got.indptr, want.indptr)  # the stored zero dropped, as there


def test_texts_through_the_saved_featuriser(text_model):
    model, texts, d = text_model
    p = Predictor(model)
    assert p.reads_texts and not p.needs_texts and p.label_names is not None
    batched = p.predict(texts=texts, k=3)
    for i, t in enumerate(texts):
        one = p.predict_one(text=t, k=3)
        assert one.labels[0] == batched.labels[i]
        np.testing.assert_allclose(one.scores[0], batched.scores[i], rtol=0, atol=1e-5)
    assert all(name.startswith("tag") for row in batched.labels for name in row)
    path, out = d / "docs.txt", d / "pred.txt"
    path.write_text("\n".join(texts) + "\n")
    assert main(["predict", "--data", str(path), "--model-dir", model, "--top-k", "3",
                 "--out", str(out)]) == 0
    want = read_predictions(out)
    assert [[n for n, _ in w] for w in want] == batched.labels


def test_a_calibrated_model_answers_probabilities_too(sparse_model, tmp_path):
    import shutil

    calibration = pytest.importorskip("jxmc.calibration")
    model, Xte, _ = sparse_model
    copy = str(tmp_path / "calibrated")
    shutil.copytree(model, copy)
    cal = calibration.Calibrator("platt", a=3.0, b=-1.0)
    calibration.save(copy, cal)
    p = Predictor(copy)
    assert p.calibrator == cal
    rows = rows_as_text(Xte[:3])
    out = p.predict(features=rows, k=4)
    np.testing.assert_allclose(out.probabilities, 1 / (1 + np.exp(-(3.0 * out.scores - 1.0))),
                               rtol=1e-5)
    raw = Predictor(model).predict(features=rows, k=4)
    np.testing.assert_array_equal(out.ids, raw.ids)  # calibration keeps the ranking and raw scores
    np.testing.assert_allclose(out.scores, raw.scores, rtol=0, atol=1e-6)
    item = out.rows()[0][0]
    assert item["probability"] == pytest.approx(float(out.probabilities[0, 0]))
