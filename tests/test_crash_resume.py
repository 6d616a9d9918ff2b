"""Crash safety of ``jxmc train``: SIGKILLed at points the test chooses, then run again.

For each family — XR-Linear (tree + linear rankers), LEML (a label embedding) and
CascadeXML (a transformer head, on a tiny random BERT) — one ``jxmc train`` runs
uninterrupted into a reference model directory; then a second model directory goes
through a chain of crashes, each a real ``SIGKILL`` (no handler, no ``finally``):

* killed by the test right after the first training checkpoint
  (``<model-dir>/checkpoints/1``) appears on disk (polled every few milliseconds from
  outside the process); for XR-Linear, killed once more after the next checkpoint of
  the resumed run;
* killed while the final model directory is being written: a wrapper around the CLI
  (test code, not a library hook) sends itself SIGKILL right after the parameters
  are written but before they are moved into place, or inside the manifest's atomic
  write, before it lands.  The half-written directory is read as no model at all
  (:func:`jxmc.modeldir.load` raises ModelError; for XR-Linear ``jxmc predict`` on it
  exits 2 with one line);
* then the same command runs to the end.

The result must be the reference model: bit-identical saved arrays for XR-Linear and
LEML, the same ``jxmc evaluate --json`` metrics for CascadeXML.  A last group checks
that a corrupted model directory (missing manifest, truncated arrays, a manifest of
another format, a manifest that is not an object, undecodable label names) is
refused by ``jxmc predict`` in one line with exit status 2, no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds for one jxmc command (CI's 2 cores, shared)

# Sends itself SIGKILL at a point of the final model-directory write (CRASH_AT).
_WRAPPER = r'''
import contextlib, os, signal, sys
point = os.environ.pop("CRASH_AT")
from jxmc import checkpoint, cli, modeldir

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "params":  # the arrays written to the temporary folder, not yet moved into place
    save_params = checkpoint.save_params

    def crashing_save_params(directory, params):
        save_params(directory, params)
        if ".params.tmp" in os.fspath(directory):
            die()

    checkpoint.save_params = crashing_save_params
elif point == "manifest":  # the manifest's temporary file written, not yet renamed
    atomic_write = modeldir.atomic_write

    @contextlib.contextmanager
    def crashing_atomic_write(path, *args, **kwargs):
        with atomic_write(path, *args, **kwargs) as f:
            yield f
            if os.path.basename(os.fspath(path)) == modeldir.MANIFEST:
                f.flush()
                die()

    modeldir.atomic_write = crashing_atomic_write
else:
    raise SystemExit(f"unknown CRASH_AT {point!r}")
sys.argv[0] = "jxmc"
sys.exit(cli.main())
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The subprocesses' environment: a fixed host device count (so that every run,
    wrapped or not, splits the host alike) and a compile cache of this module's own."""
    e = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CRASH_AT")}
    e.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", TF_CPP_MIN_LOG_LEVEL="2",
             JXMC_COMPILE_CACHE=str(tmp_path_factory.mktemp("xla_cache")),
             PYTHONPATH=os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return e


def _jxmc(args, env, log: Path, wrapper: Path | None = None, crash_at: str | None = None):
    cmd = [sys.executable, "-m", "jxmc", *args] if wrapper is None else \
        [sys.executable, str(wrapper), *args]
    run_env = env if crash_at is None else {**env, "CRASH_AT": crash_at}
    out = open(log, "w")
    return subprocess.Popen(cmd, cwd=REPO, env=run_env, stdout=out, stderr=subprocess.STDOUT), out


def _finish(proc, out, log: Path, what: str) -> str:
    try:
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        out.close()
    text = log.read_text()
    assert rc == 0, f"{what} failed (exit {rc}):\n{text[-3000:]}"
    return text


def _run(args, env, log: Path) -> str:
    proc, out = _jxmc(args, env, log)
    return _finish(proc, out, log, " ".join(args[:1]))


def _steps(model_dir: Path) -> list[int]:
    """The completed checkpoint steps (orbax renames ``<step>.orbax-checkpoint-tmp-*``
    to ``<step>`` when a step is complete)."""
    folder = model_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def _kill_after_next_checkpoint(args, env, model_dir: Path, log: Path) -> int:
    """Runs ``jxmc train``; SIGKILLs it as soon as a checkpoint newer than the ones
    present at its start is complete; returns that step."""
    before = max(_steps(model_dir), default=0)
    proc, out = _jxmc(args, env, log)
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            newer = [s for s in _steps(model_dir) if s > before]
            if newer:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                assert proc.returncode == -signal.SIGKILL
                return newer[0]
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit {proc.returncode}) before checkpoint "
                            f"{before + 1}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("no new checkpoint in time")
            time.sleep(0.002)
    finally:
        out.close()


def _crash_in_model_write(args, env, model_dir: Path, log: Path, wrapper: Path, point: str):
    proc, out = _jxmc(args, env, log, wrapper=wrapper, crash_at=point)
    try:
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        out.close()
    assert rc == -signal.SIGKILL, f"wrapper did not crash at {point} (exit {rc}):\n" \
                                  f"{log.read_text()[-3000:]}"
    assert not (model_dir / "jxmc_model.json").exists(), "a manifest landed before the crash"
    assert _steps(model_dir), "the checkpoints were removed before the model was complete"
    from jxmc import modeldir
    from jxmc.errors import ModelError

    with pytest.raises(ModelError, match="no finished jxmc model"):  # read as no model at all
        modeldir.load(str(model_dir))


def _arrays(model_dir: Path):
    import jax

    from jxmc import modeldir

    saved = modeldir.load(str(model_dir))
    leaves, tree = jax.tree_util.tree_flatten_with_path(saved.params)
    return saved, {jax.tree_util.keystr(p): np.asarray(a) for p, a in leaves}, tree


def _assert_bit_identical(ref: Path, got: Path) -> None:
    a, la, ta = _arrays(ref)
    b, lb, tb = _arrays(got)
    assert ta == tb, "the resumed model's parameter tree differs"
    for key in la:
        x, y = la[key], lb[key]
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert x.tobytes() == y.tobytes(), f"{key} differs after the crashes"
    assert a.label_counts.tobytes() == b.label_counts.tobytes()
    for k in ("method", "config", "seed", "data"):
        assert a.manifest[k] == b.manifest[k], k


def _crash_chain(args, env, ref: Path, cut: Path, tmp: Path, *, kills: int, point: str,
                 on_crash=None) -> None:
    """The reference run, then ``kills`` checkpoint kills, a crash at ``point`` of the
    model write, and the final run, on ``cut`` (the reference first: its compiles fill
    the module's compile cache, which the later runs read)."""
    _run([*args, "--model-dir", str(ref)], env, tmp / "ref.log")
    a = [*args, "--model-dir", str(cut)]
    seen = []
    for i in range(kills):
        seen.append(_kill_after_next_checkpoint(a, env, cut, tmp / f"kill{i}.log"))
        assert not (cut / "jxmc_model.json").exists()
    assert seen == sorted(set(seen)), f"each resumed run went further: {seen}"
    if kills > 1:
        assert "resuming from checkpoint" in (tmp / f"kill{kills - 1}.log").read_text()
    wrapper = tmp / "crash_wrapper.py"
    wrapper.write_text(_WRAPPER)
    _crash_in_model_write(a, env, cut, tmp / "crash.log", wrapper, point)
    if on_crash is not None:
        on_crash(cut)
    final = _run(a, env, tmp / "final.log")
    assert "resuming from checkpoint" in final
    assert not (cut / "checkpoints").exists(), "checkpoints left after the model was written"


# ----------------------------------------------------------------------------- families

SYNTH = "synthetic:n_train=200,n_test=40,n_labels=16,n_features=120,branching=4/4"


def test_xr_linear_killed_and_resumed_is_bit_identical(env, tmp_path):
    args = ["train", "--data", SYNTH, "--method", "xr-linear", "--no-progress",
            "--set", "nr_splits=2", "--set", "max_leaf_size=4", "--set", "negatives=tfn+man"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _crash_chain(args, env, ref, cut, tmp_path, kills=2, point="params",
                 on_crash=lambda d: _predict_refuses(d, env, tmp_path, "no finished jxmc model"))
    _assert_bit_identical(ref, cut)


def test_leml_killed_and_resumed_is_bit_identical(env, tmp_path):
    args = ["train", "--data", SYNTH, "--method", "leml", "--no-progress",
            "--set", "rank=4", "--set", "iters=3"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _crash_chain(args, env, ref, cut, tmp_path, kills=1, point="manifest")
    _assert_bit_identical(ref, cut)


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    """A tiny raw-text data set (toy texts, label names ``l<j>``) and a tiny random BERT."""
    pytest.importorskip("tokenizers")
    from jxmc.data.text import write_text_labels, write_texts
    from jxmc.nn.testing import tiny_encoder_dir, toy_texts

    root = tmp_path_factory.mktemp("text")
    encoder = tiny_encoder_dir(str(root / "encoder"), words=32, layers=1, hidden=16, max_len=16)
    texts, _, Y = toy_texts(80, 12, words=32, seed=0)
    labels = [[f"l{j}" for j in Y.indices[Y.indptr[i]:Y.indptr[i + 1]]] for i in range(80)]
    data = root / "data"
    for split, rows in (("train", slice(0, 64)), ("test", slice(64, 80))):
        write_texts(data / f"{split}_texts.txt", texts[rows])
        write_text_labels(data / f"{split}_labels.txt", labels[rows])
    return str(data), encoder


def test_cascadexml_killed_and_resumed_gives_the_same_metrics(env, tmp_path, text_data):
    data, encoder = text_data
    args = ["train", "--data", data, "--method", "cascadexml", "--no-progress",
            "--encoder", encoder, "--epochs", "2", "--max-len", "12", "--batch-size", "16",
            *[x for kv in ["pretrained=false", "max_leaf_size=4", "nr_splits=2",
                           "lr_encoder=1e-3", "predict_batch_size=32", "beam_size=2"]
              for x in ("--set", kv)]]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _crash_chain(args, env, ref, cut, tmp_path, kills=1, point="manifest")
    got = [json.loads(_run(["evaluate", "--model-dir", str(d), "--data", data, "--json"], env,
                           tmp_path / f"eval_{d.name}.log").strip().splitlines()[-1])
           for d in (ref, cut)]
    assert got[0] == got[1]
    assert {"P@1", "P@5", "nDCG@5", "PSP@5"} <= set(got[0]) and all(
        0 <= v <= 1 for v in got[0].values())
    # the parameters, too, end where the uninterrupted run's do
    _, la, ta = _arrays(ref)
    _, lb, tb = _arrays(cut)
    assert ta == tb
    for key in la:
        np.testing.assert_allclose(la[key], lb[key], rtol=1e-5, atol=1e-6, err_msg=key)


# ----------------------------------------------------------------------------- damaged model dirs


def _predict_refuses(model_dir: Path, env, tmp: Path, expect: str) -> None:
    feats = tmp / "feats.txt"
    feats.write_text("1 120\n0:1 5:1\n")
    proc = subprocess.run([sys.executable, "-m", "jxmc", "predict", "--model-dir", str(model_dir),
                           "--data", str(feats), "--out", str(tmp / "out.txt")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("jxmc: error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert expect in lines[0], lines[0]
    assert not (tmp / "out.txt").exists()


@pytest.fixture(scope="module")
def finished(env, tmp_path_factory):
    """A finished small LEML model directory (the quickest to train)."""
    tmp = tmp_path_factory.mktemp("finished")
    _run(["train", "--data", SYNTH, "--method", "leml", "--no-progress", "--set", "rank=4",
          "--set", "iters=1", "--model-dir", str(tmp / "model")], env, tmp / "train.log")
    return tmp / "model"


def _damaged(finished: Path, tmp: Path, how: str) -> Path:
    import shutil

    bad = tmp / f"bad_{how}"
    shutil.copytree(finished, bad)
    manifest = bad / "jxmc_model.json"
    if how == "no_manifest":
        manifest.unlink()
    elif how == "truncated_arrays":
        biggest = max((p for p in (bad / "params").rglob("*") if p.is_file()),
                      key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])
    elif how == "truncated_arrays_unrecorded":  # a manifest without the files' sizes
        m = json.loads(manifest.read_text())
        del m["params_files"]
        manifest.write_text(json.dumps(m))
        biggest = max((p for p in (bad / "params").rglob("*") if p.is_file()),
                      key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 3])
    elif how == "other_version":
        m = json.loads(manifest.read_text())
        m["model_format"], m["jxmc_version"] = 999, "9.9.9"
        manifest.write_text(json.dumps(m))
    elif how == "truncated_manifest":
        manifest.write_bytes(manifest.read_bytes()[:40])
    elif how == "manifest_not_object":
        manifest.write_text("[1, 2]")
    elif how == "manifest_without_method":
        m = json.loads(manifest.read_text())
        del m["method"]
        manifest.write_text(json.dumps(m))
    elif how == "bad_label_names":
        (bad / "label_names.txt").write_bytes(b"a\n\xff\xfe\n")
    elif how == "no_params":
        shutil.rmtree(bad / "params")
    return bad


DAMAGE = {"no_manifest": "no finished jxmc model",
          "truncated_arrays": "bytes where the manifest records",
          "truncated_arrays_unrecorded": "cannot read parameters",
          "other_version": "model format 999", "truncated_manifest": "unreadable model manifest",
          "manifest_not_object": "not a model manifest",
          "manifest_without_method": "no 'method'", "bad_label_names": "label names",
          "no_params": "missing; the model directory is damaged"}


@pytest.mark.parametrize("how", ["no_manifest", "truncated_arrays", "other_version"])
def test_predict_refuses_a_damaged_model_dir_in_one_line(finished, env, tmp_path, how):
    _predict_refuses(_damaged(finished, tmp_path, how), env, tmp_path, DAMAGE[how])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's
def test_every_damage_is_a_model_error(finished, tmp_path):  # threads, after a failed read
    """The same reader in-process, over every kind of damage (no JAX start per case)."""
    from jxmc import modeldir
    from jxmc.errors import ModelError

    for how, expect in DAMAGE.items():
        with pytest.raises(ModelError, match=expect) as err:
            modeldir.load(str(_damaged(finished, tmp_path, how)))
        assert "\n" not in str(err.value), how
