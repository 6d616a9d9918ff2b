"""The model directory: everything needed to predict, written atomically.

Layout of ``<model-dir>``::

    jxmc_model.json      manifest: jxmc version, model format, method, resolved
                         config, seed, dataset description, the size of each file
                         under params/ (checked on reading) (written last)
    params/              the method's parameters (orbax, see jxmc.checkpoint), and
                         ``train_label_counts`` (i64[L], for PSP@k) beside them
    label_names.txt      raw-text data: the L label names, one per line
    tfidf_vocab.txt.gz, tfidf.npz, tfidf.json   raw-text data: the featuriser
    checkpoints/         training state while training (removed when done)

Every file is moved into place when complete, and the manifest is written last,
so a directory without ``jxmc_model.json`` is an unfinished training run and is
never read as a model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from jxmc import checkpoint
from jxmc.data.tfidf import Featurizer
from jxmc.errors import ModelError
from jxmc.fileio import atomic_write, read_json_object
from jxmc.version import MODEL_FORMAT, __version__

MANIFEST = "jxmc_model.json"


@dataclass
class SavedModel:
    """A model read back from its directory."""

    manifest: dict[str, Any]
    params: Any  # what the method's fit returned
    label_names: list[str] | None
    featurizer: Featurizer | None
    label_counts: np.ndarray | None = None  # i64[L]: training positives of each label

    @property
    def method(self) -> str:
        return self.manifest["method"]


def read_manifest(model_dir: str) -> dict[str, Any] | None:
    """The manifest, or None if the directory holds no finished model.

    Raises:
      ModelError: the manifest is unreadable, or from an incompatible format.
    """
    path = os.path.join(model_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    manifest = read_json_object(path, ModelError, "model manifest")
    fmt = manifest.get("model_format")
    if fmt != MODEL_FORMAT:
        raise ModelError(f"{path}: written by jxmc {manifest.get('jxmc_version', '?')} in model format "
                         f"{fmt}, but this jxmc {__version__} reads format {MODEL_FORMAT}; "
                         f"retrain the model with this version")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ModelError(f"{path}: corrupted model manifest: no {', '.join(map(repr, missing))}; "
                         f"retrain the model")
    return manifest


_REQUIRED = ("method", "config", "seed", "data")  # what every format-1 manifest holds


LABEL_COUNTS = "train_label_counts"  # stored beside the method's params (as every version has)
PARAMS_FILES = "params_files"  # manifest key: {path under params/: size in bytes}


def _file_sizes(folder: str) -> dict[str, int]:
    """``{relative path: bytes}`` of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder).replace(os.sep, "/")] = os.path.getsize(path)
    return dict(sorted(out.items()))


def _check_file_sizes(model_dir: str, manifest: dict) -> None:
    """Refuses params files that are missing or of another size than the manifest records
    (a truncated or damaged directory), before orbax reads them; older manifests without
    the record are not checked."""
    expected = manifest.get(PARAMS_FILES)
    if not isinstance(expected, dict):
        return
    folder = os.path.join(model_dir, "params")
    for rel, size in expected.items():
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            raise ModelError(f"{path}: missing; the model directory is damaged, retrain it")
        got = os.path.getsize(path)
        if got != size:
            raise ModelError(f"{path}: {got} bytes where the manifest records {size} (truncated "
                             f"or damaged); retrain the model")


def save(model_dir: str, *, method: str, config: dict, seed: int, data: dict, params: Any,
         label_names: list[str] | None, featurizer: Featurizer | None,
         label_counts: np.ndarray | None = None, extra: dict | None = None) -> None:
    """Writes a finished model; the manifest goes last.

    ``params`` is the method's fitted pytree, saved as given; ``label_counts``
    (``i64[L]``, the training positives of each label, for PSP@k) is stored
    beside it and comes back as :attr:`SavedModel.label_counts`.
    """
    if label_counts is not None:
        params = {**params, LABEL_COUNTS: np.asarray(label_counts, np.int64)}
    os.makedirs(model_dir, exist_ok=True)
    manifest_path = os.path.join(model_dir, MANIFEST)
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # the directory is unfinished until the new manifest lands
    tmp_params = os.path.join(model_dir, ".params.tmp")
    checkpoint.save_params(tmp_params, params)
    final_params = os.path.join(model_dir, "params")
    if os.path.exists(final_params):
        shutil.rmtree(final_params)
    os.replace(tmp_params, final_params)
    if label_names is not None:
        with atomic_write(os.path.join(model_dir, "label_names.txt")) as f:
            f.write("".join(name + "\n" for name in label_names))
    if featurizer is not None:
        featurizer.save(model_dir)
    manifest = {"jxmc_version": __version__, "model_format": MODEL_FORMAT, "method": method,
                "config": config, "seed": seed, "data": data, **(extra or {}),
                PARAMS_FILES: _file_sizes(final_params)}
    with atomic_write(manifest_path) as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


def load(model_dir: str) -> SavedModel:
    """Reads a model directory.

    Raises:
      ModelError: no finished model there, an incompatible version, a corrupted
        manifest, or missing, truncated or unreadable files.
    """
    if not os.path.isdir(model_dir):
        raise ModelError(f"{model_dir}: model directory not found")
    manifest = read_manifest(model_dir)
    if manifest is None:
        raise ModelError(f"{model_dir}: no finished jxmc model here (no {MANIFEST}); train one with "
                         f"'jxmc train --model-dir {model_dir}'")
    _check_file_sizes(model_dir, manifest)
    try:
        params = checkpoint.load_params(os.path.join(model_dir, "params"))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        why = " ".join(str(e).split())  # one line: tensorstore's messages may span several
        raise ModelError(f"{model_dir}/params: cannot read parameters ({type(e).__name__}: {why}); "
                         f"the model directory is damaged, retrain it") from None
    label_names = None
    path = os.path.join(model_dir, "label_names.txt")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                label_names = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ModelError(f"{path}: cannot read the label names: {e}") from None
    featurizer = Featurizer.load(model_dir) if os.path.exists(os.path.join(model_dir, "tfidf.json")) else None
    counts = None
    if isinstance(params, dict) and LABEL_COUNTS in params:
        params = dict(params)
        counts = np.asarray(params.pop(LABEL_COUNTS))
    return SavedModel(manifest, params, label_names, featurizer, counts)
