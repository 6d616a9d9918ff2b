"""Label texts: the ``label_texts.txt`` reader, pifa_lf_concat, and xr-linear's
``label_text`` option (an unseen label ranked by its text; off changes nothing)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from jxmc.data import text
from jxmc.data.dataset import load_dataset
from jxmc.data.tfidf import TfidfConfig, fit_tfidf
from jxmc.errors import ConfigError, DataError
from jxmc.models.tree_linear import label_text as lt
from jxmc.models.tree_linear import xr_linear as xr


def test_read_label_texts(tmp_path):
    p = tmp_path / "label_texts.txt"
    p.write_text("a\tfirst label\nb\t\nc\ttext\twith a tab \n")
    assert text.read_label_texts(p) == {"a": "first label", "b": "", "c": "text\twith a tab"}


@pytest.mark.parametrize("body, line, what", [
    ("a\tok\nb no tab\n", 2, "no tab"),
    ("\tno name\n", 1, "empty label name"),
    ("a b\tname with space\n", 1, "whitespace"),
    ("a\tx\nb\ty\na\tz\n", 3, "given twice"),
])
def test_read_label_texts_malformed(tmp_path, body, line, what):
    p = tmp_path / "label_texts.txt"
    p.write_text(body)
    with pytest.raises(DataError) as e:
        text.read_label_texts(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}: ") and what in msg and "\n" not in msg


def test_read_label_texts_empty(tmp_path):
    p = tmp_path / "label_texts.txt"
    p.write_text("")
    with pytest.raises(DataError, match="empty file"):
        text.read_label_texts(p)


def _write_folder(folder, with_texts: bool):
    (folder / "train_texts.txt").write_text("red apple fruit\ngreen apple\nblue sky\nsky cloud\n")
    (folder / "train_labels.txt").write_text("fruit\nfruit\nweather\nweather\n")
    (folder / "test_texts.txt").write_text("apple\nsky rain\n")
    (folder / "test_labels.txt").write_text("fruit\nweather rain\n")
    if with_texts:
        (folder / "label_texts.txt").write_text("fruit\tapple and more\nrain\tsky water\n")


def test_folder_carries_label_texts(tmp_path):
    _write_folder(tmp_path, True)
    ds = load_dataset(str(tmp_path))
    assert ds.label_texts == {"fruit": "apple and more", "rain": "sky water"}
    assert ds.label_names == ["fruit", "weather"] and ds.extra_label_names == ["rain"]
    names = lt.label_space(ds.label_names, ds.label_texts)
    assert names == ["fruit", "weather", "rain"]
    Y = lt.test_labels(ds, names)  # the test truth keeps every label
    assert Y.toarray().tolist() == [[1, 0, 0], [0, 1, 1]]
    (tmp_path / "label_texts.txt").write_text("fruit apple\n")
    with pytest.raises(DataError, match="label_texts.txt:1: .*no tab"):
        load_dataset(str(tmp_path))
    (tmp_path / "label_texts.txt").unlink()
    assert load_dataset(str(tmp_path)).label_texts is None


def test_pifa_lf_concat_shapes_and_norms():
    rng = np.random.default_rng(0)
    X = sp.random(30, 12, density=0.3, format="csr", random_state=1, dtype=np.float32)
    Yd = (rng.random((30, 5)) < 0.3).astype(np.float32)
    Yd[:, 4] = 0  # a training label without positives
    Y = sp.csr_matrix(Yd)
    Td = sp.random(7, 12, density=0.4, random_state=2, dtype=np.float32).toarray() * 3.0
    Td[6] = 0  # a text-only label whose text has no term
    T = sp.csr_matrix(Td)
    Z = lt.pifa_lf_concat(Y, X, T)
    assert Z.shape == (7, 24) and Z.dtype == np.float32
    left = np.linalg.norm(Z[:, :12].toarray(), axis=1)
    right = np.linalg.norm(Z[:, 12:].toarray(), axis=1)
    has_pos = np.diff(sp.csc_matrix(Y).indptr) > 0
    np.testing.assert_allclose(left, np.r_[has_pos.astype(float), 0, 0], atol=1e-5)
    np.testing.assert_allclose(right, (np.diff(T.indptr) > 0).astype(float), atol=1e-5)
    np.testing.assert_allclose(Z[:, 12:].toarray(), lt.normalise_rows(T).toarray(), atol=1e-6)
    with pytest.raises(ValueError):
        lt.pifa_lf_concat(Y, X, T[:3])


TOPICS = ["apple banana cherry", "river lake ocean", "guitar piano violin", "python java rust",
          "tiger lion zebra", "rose tulip daisy", "snow rain wind", "gold silver copper"]


def _toy():
    """8 topics, one training label per topic with documents, plus one text-only label
    per topic (no training point); each label's text names its topic's words."""
    rng = np.random.default_rng(0)
    docs, labels = [], []
    for t, words in enumerate(TOPICS):
        w = words.split()
        for _ in range(12):
            docs.append(" ".join(rng.choice(w, 4)) + f" filler{rng.integers(30)}")
            labels.append([f"seen{t}"])
    label_texts = {f"seen{t}": w for t, w in enumerate(TOPICS)}
    label_texts.update({f"new{t}": w.split()[0] + " " + w.split()[1] for t, w in enumerate(TOPICS)})
    featurizer, X = fit_tfidf(docs, TfidfConfig(min_df=1))
    vocab = text.label_vocabulary(labels)
    Y, _ = text.encode_labels(labels, vocab, extend_unseen=False)
    return featurizer, X, Y, vocab, label_texts


CFG = xr.Config(nr_splits=2, max_leaf_size=2, beam_size=4, solver="newton", newton_iters=3,
                cg_iters=5)


def test_unseen_label_is_ranked_by_its_text():
    featurizer, X, Y, vocab, label_texts = _toy()
    names = lt.label_space(vocab, label_texts)
    assert len(names) == 16 and names[8:] == sorted(f"new{t}" for t in range(8))
    T = lt.label_features(featurizer, names, label_texts)
    config = xr.Config(**{**CFG.__dict__, "label_text": True})
    params = xr.fit(X, Y, config, progress=False, label_features=T)
    assert len(params["perm"]) == 16  # the tree holds the text-only labels too
    Xq = featurizer.transform(["river lake", "guitar piano"])
    top = xr.predict(params, Xq, config, k=3)
    got = [[names[i] for i in row] for row in top.ids]
    assert "new1" in got[0] and "new2" in got[1]
    assert np.all(np.diff(top.scores, axis=1) <= 0)
    # without label texts the text-only labels do not exist
    plain = xr.predict(xr.fit(X, Y, CFG, progress=False), Xq, CFG, k=3)
    assert plain.ids.max() < 8


def test_option_off_leaves_predictions_unchanged():
    featurizer, X, Y, vocab, label_texts = _toy()
    params = xr.fit(X, Y, CFG, progress=False)
    T = lt.label_features(featurizer, vocab, label_texts)
    again = xr.fit(X, Y, CFG, progress=False, label_features=T)  # ignored when off
    assert "label_text" not in again
    a = xr.predict(params, X, CFG, k=10)
    b = xr.predict(again, X, CFG, k=10)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_label_text_needs_features():
    featurizer, X, Y, vocab, label_texts = _toy()
    config = xr.Config(**{**CFG.__dict__, "label_text": True})
    with pytest.raises(ConfigError, match="label_features"):
        xr.fit(X, Y, config, progress=False)
    with pytest.raises(ConfigError, match="label_features has shape"):
        xr.fit(X, Y, config, progress=False, label_features=sp.csr_matrix((3, X.shape[1])))
    with pytest.raises(ConfigError, match="label_text_weight"):
        xr.fit(X, Y, xr.Config(**{**CFG.__dict__, "label_text_weight": 1.5}), progress=False)
