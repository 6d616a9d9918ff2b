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
from jxmc.types import TopK


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


def test_label_weights_decay_with_the_training_count():
    counts = np.array([0, 1, 4, 100])
    np.testing.assert_allclose(lt.label_weights(counts, 0.4), [0.4] * 4)  # decay 0: alike
    lam = lt.label_weights(counts, 0.4, decay=1.0)
    np.testing.assert_allclose(lam, [0.4, 0.2, 0.08, 0.4 / 101], rtol=1e-6)
    assert lam.dtype == np.float32 and np.all(np.diff(lam) < 0)
    np.testing.assert_allclose(lt.label_weights([4], 0.5, decay=0.25), [0.25])  # half at 1/decay
    with pytest.raises(ConfigError, match="label_text_decay"):
        lt.label_weights(counts, 0.4, decay=-1.0)
    with pytest.raises(ConfigError, match="label_text_decay"):
        xr.fit(sp.eye(4, 3, format="csr"), sp.eye(4, 2, format="csr"),
               xr.Config(label_text_decay=-0.5), progress=False)


def test_decay_keeps_head_labels_on_their_tree_scores():
    """With a large decay the labels seen in training keep their tree order (the text
    only adds the unseen ones), where decay 0 lets a text reorder them."""
    T = sp.csr_matrix(np.array([[1, 0], [0, 1], [0, 1]], np.float32))  # 3 labels, 2 features
    params = {"label_text": lt.stored(T, [50, 50, 0])}
    X = sp.csr_matrix(np.array([[0, 1]], np.float32))  # the text of labels 1 and 2
    tree = TopK(np.array([[0, 1]], np.int32), np.array([[0.6, 0.5]], np.float32))
    alike = lt.rescore(params, X, tree, 0.5, 3)
    assert alike.ids[0].tolist() == [1, 2, 0]  # the texts reorder the seen labels
    head = lt.rescore(params, X, tree, 0.5, 3, decay=10.0)
    assert head.ids[0].tolist() == [0, 1, 2]  # seen labels by their tree scores, then the new one
    lam = 0.5 / (1 + 10.0 * 50)
    np.testing.assert_allclose(head.scores[0], [(1 - lam) * 0.6, (1 - lam) * 0.5 + lam, 0.5],
                               rtol=1e-6)
    grid = lt.rescore_grid(params, X, tree, [(0.5, 0.0), (0.5, 10.0)], 3)
    for a, b in zip(grid, (alike, head), strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_unseen_recall():
    Y = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 0]], np.float32))
    ids = np.array([[2, 0], [0, 1], [0, -1]])
    got = lt.unseen_recall(ids, Y, counts=[5, 3], k=2)  # labels 2, 3 unseen
    assert got == {"points": 2, "positives": 2, "labels": 2, "R@2": 0.5}


def _topic_folder(folder, with_texts: bool = True):
    """The toy topics as a raw-text dataset folder; the test points carry the
    text-only labels ``new<t>`` beside their topic's label."""
    rng = np.random.default_rng(0)
    docs, labels = [], []
    for t, words in enumerate(TOPICS):
        for _ in range(12):
            docs.append(" ".join(rng.choice(words.split(), 4)) + f" filler{rng.integers(30)}")
            labels.append(f"seen{t}")
    folder.mkdir(exist_ok=True)
    (folder / "train_texts.txt").write_text("\n".join(docs) + "\n")
    (folder / "train_labels.txt").write_text("\n".join(labels) + "\n")
    test = [(" ".join(w.split()[:2]), f"seen{t} new{t}") for t, w in enumerate(TOPICS)]
    (folder / "test_texts.txt").write_text("".join(q + "\n" for q, _ in test))
    (folder / "test_labels.txt").write_text("".join(y + "\n" for _, y in test))
    if with_texts:
        lines = [f"seen{t}\t{w}" for t, w in enumerate(TOPICS)]
        lines += [f"new{t}\t{' '.join(w.split()[:2])}" for t, w in enumerate(TOPICS)]
        lines.append("virtual\t")  # no text: stays outside the label space
        (folder / "label_texts.txt").write_text("\n".join(lines) + "\n")
    return folder


SMALL = ["--set", "nr_splits=2", "--set", "max_leaf_size=2", "--set", "beam_size=4",
         "--set", "solver=newton", "--set", "newton_iters=3", "--set", "cg_iters=5",
         "--set", "label_text_weight=0.5", "--set", "label_text_decay=1.0"]


def test_cli_train_predict_evaluate_rank_unseen_labels(tmp_path, capsys):
    from jxmc.cli import main

    data = str(_topic_folder(tmp_path / "topics"))
    model = str(tmp_path / "m")
    assert main(["train", "--data", data, "--model-dir", model, "--no-progress",
                 "--set", "label_text=true", *SMALL]) == 0
    out = capsys.readouterr()
    assert "8 labels with a text and no training point added, 16 labels in all" in out.err
    line = [s for s in out.out.splitlines() if s.startswith("unseen in training")]
    assert line and "8 test labels, 8 positives on 8 points" in line[0]
    assert (tmp_path / "m" / "label_names.txt").read_text().split() == \
        [f"seen{t}" for t in range(8)] + [f"new{t}" for t in range(8)]
    pred = tmp_path / "pred.txt"
    assert main(["predict", "--data", data, "--model-dir", model, "--out", str(pred),
                 "--top-k", "3"]) == 0
    rows = [[p.rsplit(":", 1)[0] for p in r.split()] for r in pred.read_text().splitlines()]
    assert sum(f"new{t}" in r for t, r in enumerate(rows)) >= 6  # unseen labels ranked by text
    capsys.readouterr()
    assert main(["evaluate", "--data", data, "--model-dir", model, "--json"]) == 0
    shown = __import__("json").loads(capsys.readouterr().out)
    assert shown["unseen-R@10"] >= 0.75 and shown["R@10"] >= 0.75
    assert main(["calibrate", "--data", data, "--model-dir", model]) == 2
    assert "label_text=true" in capsys.readouterr().err


def test_cli_label_text_without_a_label_text_file_is_one_line(tmp_path):
    import subprocess
    import sys

    data = _topic_folder(tmp_path / "plain", with_texts=False)
    r = subprocess.run([sys.executable, "-m", "jxmc", "train", "--data", str(data),
                        "--model-dir", str(tmp_path / "m"), "--no-progress",
                        "--set", "label_text=true"], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith("jxmc: error: label_text=true") and str(data) in lines[-1]
    assert "label_texts.txt" in lines[-1]


@pytest.mark.parametrize("name", ["parabel", "bonsai"])
def test_parabel_and_bonsai_take_label_texts(name, tmp_path):
    from jxmc.models import get_method

    ds = load_dataset(str(_topic_folder(tmp_path / "topics")))
    space = lt.for_dataset(ds)
    method = get_method(name)
    config = method.Config(**{**method.Config().__dict__, "max_leaf_size": 4, "n_trees": 2,
                              "solver": "newton", "newton_iters": 3, "cg_iters": 5,
                              "label_text": True, "label_text_weight": 0.5})
    params = lt.fit(method, ds.train.X, ds.train.Y, config, space, progress=False)
    assert "label_text" in params and all("label_text" not in t for t in params["trees"].values())
    assert all(len(t["perm"]) >= 16 for t in params["trees"].values())
    top = method.predict(params, ds.test.X, config, k=3)
    got = [[space.names[i] for i in row if i >= 0] for row in top.ids]
    assert sum(f"new{t}" in r for t, r in enumerate(got)) >= 6
    assert np.all(np.diff(top.scores, axis=1) <= 0)
    with pytest.raises(ConfigError, match="label_features"):
        method.fit(ds.train.X, ds.train.Y, config, progress=False)  # the contract's fit: no T


def test_pifa_or_text_keeps_pifa_for_labels_with_points():
    X = sp.random(30, 12, density=0.3, format="csr", random_state=1, dtype=np.float32)
    Yd = (np.random.default_rng(0).random((30, 4)) < 0.3).astype(np.float32)
    Yd[:, 3] = 0  # a training label without positives
    Y = sp.csr_matrix(Yd)
    T = sp.csr_matrix(sp.random(6, 12, density=0.4, random_state=2, dtype=np.float32).toarray() + 0.01)
    Z = lt.label_embedding("pifa_or_text", Y, X, T)
    P = lt.pifa(lt.pad_labels(Y, 6), X).toarray()
    assert Z.shape == (6, 12)
    np.testing.assert_allclose(Z.toarray()[:3], P[:3], atol=1e-6)  # labels with points: PIFA
    np.testing.assert_allclose(Z.toarray()[3:], lt.normalise_rows(T).toarray()[3:], atol=1e-6)
    with pytest.raises(ConfigError, match="label_text_tree"):
        lt.label_embedding("bogus", Y, X, T)
    with pytest.raises(ConfigError, match="label_text_tree"):
        xr.check_config(xr.Config(label_text_tree="bogus"))
    featurizer, X, Y, vocab, label_texts = _toy()
    names = lt.label_space(vocab, label_texts)
    config = xr.Config(**{**CFG.__dict__, "label_text": True, "label_text_tree": "pifa_or_text"})
    params = xr.fit(X, Y, config, progress=False,
                    label_features=lt.label_features(featurizer, names, label_texts))
    top = xr.predict(params, featurizer.transform(["river lake"]), config, k=3)
    assert "new1" in [names[i] for i in top.ids[0]]
