"""The command line end to end: train, predict, evaluate, and bad input."""

from __future__ import annotations

import json
import lzma
import os
import subprocess
import sys

import napkinxc.metrics as nxm
import numpy as np
import pytest
from conftest import shared_dataset
from toy_data import read_predictions

from jxmc import metrics
from jxmc.cli import main
from jxmc.commands import JSON_KEYS

SMALL = "synthetic:n_train=800,n_test=200,n_labels=64,n_features=400,branching=4/4"


def _run(*argv):
    return subprocess.run([sys.executable, "-m", "jxmc", *argv], capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _napkinxc_metrics(pred_names, truth_names, inv_ps):
    out = {}
    for key, fn in (("P", nxm.precision_at_k), ("nDCG", nxm.ndcg_at_k), ("R", nxm.recall_at_k)):
        vals = fn(truth_names, pred_names, k=10)
        out.update({f"{key}@{k}": vals[k - 1] for k in (1, 3, 5, 10)})
    for key, fn in (("PSP", nxm.psprecision_at_k), ("PSnDCG", nxm.psndcg_at_k)):
        vals = fn(truth_names, pred_names, inv_ps, k=5)
        out.update({f"{key}@{k}": vals[k - 1] for k in (1, 3, 5)})
    return out


def _check_evaluate_equals_predict_file(tmp_path, data, model_dir, truth_names, inv_ps):
    out = tmp_path / "pred.txt"
    r = _run("predict", "--data", data, "--model-dir", model_dir, "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = read_predictions(out)
    assert len(rows) == len(truth_names)
    assert all(len(row) == 10 for row in rows)
    assert all(s1 >= s2 for row in rows for (_, s1), (_, s2) in zip(row, row[1:], strict=False))
    r = _run("evaluate", "--data", data, "--model-dir", model_dir, "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert list(shown)[: len(JSON_KEYS)] == list(JSON_KEYS)  # then the EXTRA_JSON_KEYS
    expected = _napkinxc_metrics([[name for name, _ in row] for row in rows], truth_names, inv_ps)
    for key in JSON_KEYS:
        assert shown[key] == pytest.approx(expected[key], abs=1e-5), key
    return shown


def test_synthetic_end_to_end(tmp_path):
    model = str(tmp_path / "m")
    r = _run("train", "--data", SMALL, "--model-dir", model, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "P " in r.stdout and "PSnDCG" in r.stdout and "train" in r.stdout
    from jxmc.data.synthetic import generate, parse_spec
    _, Ytr, _, Yte = generate(parse_spec(SMALL))
    truth = [[str(j) for j in row.indices] for row in Yte]
    counts = np.asarray(Ytr.sum(0)).ravel()
    inv = metrics.inv_propensity(counts, Ytr.shape[0])
    inv_ps = {str(j): float(v) for j, v in enumerate(inv)}
    _check_evaluate_equals_predict_file(tmp_path, SMALL, model, truth, inv_ps)
    # a second train on the finished directory does not train again
    r = _run("train", "--data", SMALL, "--model-dir", model, "--no-progress")
    assert r.returncode == 0 and "already holds this trained model" in r.stderr


def _xc_truth(folder):
    from jxmc.data.xc import read_xc
    tr = read_xc(f"{folder}/train.txt.xz")
    te = read_xc(f"{folder}/test.txt.xz")
    counts = np.asarray((tr.Y != 0).sum(0)).ravel()
    inv = metrics.inv_propensity(counts, tr.Y.shape[0])
    return [[str(j) for j in row.indices] for row in te.Y], {str(j): float(v) for j, v in enumerate(inv)}


@pytest.mark.slow
@pytest.mark.parametrize("method,least_p1", [("ovr", 0.55), ("xr-linear", 0.62)])
def test_bibtex_train_predict_evaluate(tmp_path, method, least_p1):
    folder = str(shared_dataset("bibtex"))
    model = str(tmp_path / "m")
    r = _run("train", "--data", folder, "--model-dir", model, "--no-progress", "--method", method)
    assert r.returncode == 0, r.stderr
    truth, inv_ps = _xc_truth(folder)
    shown = _check_evaluate_equals_predict_file(tmp_path, folder, model, truth, inv_ps)
    assert shown["P@1"] > least_p1  # PECOS's XR-Linear reaches 0.6318


@pytest.mark.slow
def test_debtags_train_predict_evaluate(tmp_path):
    folder = shared_dataset("debtags")
    model = str(tmp_path / "m")
    r = _run("train", "--data", str(folder), "--model-dir", model, "--no-progress", "--method", "ovr")
    assert r.returncode == 0, r.stderr

    def labels(name):
        with lzma.open(folder / name, "rt", encoding="utf-8") as f:
            return [line.split() for line in f.read().splitlines()]
    train, test = labels("train_labels.txt.xz"), labels("test_labels.txt.xz")
    names = sorted({n for row in train for n in row})
    counts = {n: 0 for row in test for n in row}
    for row in train:
        for n in row:
            counts[n] = counts.get(n, 0) + 1
    inv = metrics.inv_propensity(np.array(list(counts.values())), len(train))
    inv_ps = dict(zip(counts, inv.tolist(), strict=True))
    assert len(names) == 595
    shown = _check_evaluate_equals_predict_file(tmp_path, str(folder), model, test, inv_ps)
    assert shown["P@1"] > 0.7
    # predict on a plain text file of new documents
    docs = tmp_path / "docs.txt"
    docs.write_text("a python library for parsing xml documents\nfree software game with 3d graphics\n")
    out = tmp_path / "docs.pred"
    r = _run("predict", "--data", str(docs), "--model-dir", model, "--out", str(out), "--top-k", "3")
    assert r.returncode == 0, r.stderr
    rows = read_predictions(out)
    assert len(rows) == 2 and all(len(row) == 3 for row in rows)
    assert all(name in names for row in rows for name, _ in row)


@pytest.mark.slow
def test_debtags_prediction_options_with_set(tmp_path):
    """``predict`` / ``evaluate --set`` change the predict fields of a saved model (a
    wider beam finds at least as many relevant labels) and refuse any other key."""
    folder = str(shared_dataset("debtags"))
    model = str(tmp_path / "m")
    r = _run("train", "--data", folder, "--model-dir", model, "--no-progress")
    assert r.returncode == 0, r.stderr
    default = json.loads(_run("evaluate", "--data", folder, "--model-dir", model, "--json").stdout)
    r = _run("evaluate", "--data", folder, "--model-dir", model, "--json", "--set", "beam_size=50")
    assert r.returncode == 0, r.stderr
    wide = json.loads(r.stdout)
    assert wide["P@5"] >= default["P@5"] and wide["R@10"] >= default["R@10"]
    # debtags' default tree is shallow (beam 10 already keeps every top cluster): the option
    # shows its effect with a narrower beam
    r = _run("evaluate", "--data", folder, "--model-dir", model, "--json", "--set", "beam_size=2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["R@10"] < default["R@10"]
    out = tmp_path / "wide.txt"
    r = _run("predict", "--data", folder, "--model-dir", model, "--out", str(out),
             "--set", "beam_size=50")
    assert r.returncode == 0, r.stderr
    with lzma.open(f"{folder}/test_labels.txt.xz", "rt", encoding="utf-8") as f:
        n_test = len(f.read().splitlines())
    rows = read_predictions(out)
    assert len(rows) == n_test and all(len(row) == 10 for row in rows)
    for command in ("predict", "evaluate"):
        extra = ["--out", str(tmp_path / "x.txt")] if command == "predict" else []
        r = _run(command, "--data", folder, "--model-dir", model, *extra, "--set", "C=2")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "beam_size" in lines[0] and "allowed" in lines[0], lines


# ------------------------------------------------------------------ bad input

GOOD_TEST = "2 4 3\n0 0:1 1:0.5\n1,2 2:1\n"


def _xc_folder(tmp_path, train_text: str | bytes):
    folder = tmp_path / "data"
    folder.mkdir()
    mode = "wb" if isinstance(train_text, bytes) else "w"
    with open(folder / "train.txt", mode) as f:
        f.write(train_text)
    (folder / "test.txt").write_text(GOOD_TEST)
    return folder


BAD_XC = [
    ("2 4\n0 0:1\n1 1:1\n", 1, "header"),
    ("3 4 3\n0 0:1\n1 1:1\n", 3, "3 points"),
    ("1 4 3\n0 0:1\n1 1:1\n", 3, "more"),
    ("2 4 3\n0 0:1\nx 1:1\n", 3, "label"),
    ("2 4 3\n0 0:1\n-1 1:1\n", 3, "label"),
    ("2 4 3\n0 0:1\n3 1:1\n", 3, "label id 3"),
    ("2 4 3\n0 0:1\n1 4:1\n", 3, "feature id 4"),
    ("2 4 3\n0 0:1\n1 -2:1\n", 3, "feature"),
    ("2 4 3\n0 0:1\n1 1-1\n", 3, ""),
    ("2 4 3\n0 0:1\n1 1:abc\n", 3, ""),
    ("2 4 3\n0 0:nan\n1 1:1\n", 2, "(?i)nan"),
    ("2 4 3\n0 0:1\n1 1:inf\n", 3, "(?i)inf"),
    ("", None, "empty"),
    (b"2 4 3\n0 0:1\n1 1:1 \xff\n", 3, "UTF-8"),
]


@pytest.mark.parametrize("content,line,what", BAD_XC)
def test_bad_xc_input_is_one_line_with_file_and_line(tmp_path, capsys, content, line, what):
    folder = _xc_folder(tmp_path, content)
    code = main(["train", "--data", str(folder), "--model-dir", str(tmp_path / "m"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    where = f"{folder}/train.txt" + (f":{line}:" if line else ":")
    assert err.startswith(f"jxmc: error: {where}"), err
    import re
    assert re.search(what, err), err


def test_missing_file_and_mismatched_text_files(tmp_path, capsys):
    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "train_texts.txt").write_text("a b\nc d\ne f\n")
    (folder / "train_labels.txt").write_text("x\ny\n")
    (folder / "test_texts.txt").write_text("a\n")
    (folder / "test_labels.txt").write_text("x\n")
    assert main(["train", "--data", str(folder), "--model-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "train_texts.txt" in err and "train_labels.txt" in err and "3" in err and "2" in err
    assert main(["evaluate", "--data", str(folder), "--model-dir", str(tmp_path / "none")]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_cli_process_exits_2_without_traceback(tmp_path):
    folder = _xc_folder(tmp_path, "2 4 3\n0 0:1\n1 9:1\n")
    r = _run("train", "--data", str(folder), "--model-dir", str(tmp_path / "m"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"{folder}/train.txt:3:" in r.stderr


@pytest.mark.parametrize("argv,what", [
    (["--data", "synthetic:bogus=1"], "unknown option 'bogus=1'"),
    (["--data", "synthetic:n_labels=10"], "n_labels=10"),
    (["--data", "synthetic:n_train=many"], "cannot read n_train"),
    (["--set", "solver=sgd"], "solver"),
])
def test_bad_options_are_one_line_exit_2(tmp_path, argv, what):
    r = _run("train", "--model-dir", str(tmp_path / "m"), "--no-progress", *argv)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert what in lines[-1] and lines[-1].startswith("jxmc: error:"), lines


def test_missing_optional_package_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['tokenizers'] = None; from jxmc.cli import main; "
            f"sys.exit(main(['train', '--method', 'cascadexml', '--model-dir', {str(tmp_path / 'm')!r}, "
            "'--data', 'synthetic:n_train=50,n_test=10,n_labels=16,n_features=50,branching=4']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "pip install 'jxmc[text]'" in r.stderr.strip().splitlines()[-1]
