"""What ``jxmc train``, ``predict`` and ``evaluate`` do (the CLI parses, this runs).

Configuration is read here, at the edge, and handed to the library as plain
values: the method's typed ``Config``, the seed, arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np

from jxmc import metrics, modeldir
from jxmc.checkpoint import TrainCheckpoints
from jxmc.data.dataset import load_dataset
from jxmc.data.inputs import read_predict_inputs, read_test_split
from jxmc.errors import ConfigError, ModelError
from jxmc.fileio import atomic_write
from jxmc.models import DEFAULT_METHOD, get_method
from jxmc.models.base import (
    config_from_dict,
    config_to_dict,
    parse_overrides,
    usable_mesh,
    with_predict_fields,
)

KS = (1, 3, 5, 10)
JSON_KEYS = ("P@1", "P@3", "P@5", "nDCG@1", "nDCG@3", "nDCG@5", "PSP@1", "PSP@3", "PSP@5",
             "PSnDCG@1", "PSnDCG@3", "PSnDCG@5", "R@5", "R@10")
#: ``evaluate --json`` keys after :data:`JSON_KEYS`: label-wise metrics always,
#: ``ECE@k`` / ``Brier@k`` when the model has a calibrator (jxmc.calibration).
#: ``unseen-R@10`` for a model trained with label texts (``--set label_text=true``).
EXTRA_JSON_KEYS = tuple(f"{m}@{k}" for m in ("macro-P", "macro-R", "coverage") for k in KS) + \
    tuple(f"{m}@{k}" for m in ("ECE", "Brier") for k in KS) + (f"unseen-R@{max(KS)}",)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _ab(args, name: str | None) -> tuple[float, float]:
    A, B = metrics.propensity_ab(name)
    return (A if args.A is None else args.A), (B if args.B is None else args.B)


def _metrics(topk_ids: np.ndarray, Y, counts: np.ndarray, n_train: int, A: float, B: float) -> dict:
    inv = metrics.inv_propensity(counts, n_train, A, B)
    return metrics.evaluate(topk_ids, Y, inv, ks=KS)


def _label_counts(model, n_labels_all: int) -> np.ndarray:
    if model.label_counts is None:
        raise ModelError("the model does not record its training label counts (needed for PSP@k)")
    counts = np.zeros(n_labels_all, np.int64)
    counts[: len(model.label_counts)] = model.label_counts
    return counts


def _mesh(args):
    """The ``--mesh`` mesh, or None; multi-host start-up (``JXMC_COORDINATOR_ADDRESS``...)
    comes first, before anything else runs on JAX."""
    if getattr(args, "mesh", None) is None:
        return None
    from jxmc import sharding

    sharding.initialize_from_env()
    return sharding.mesh_from_string(args.mesh)


def _flag_overrides(args) -> list[str]:
    """``--epochs`` etc. as ``key=value`` overrides (they apply to methods that have the field)."""
    flags = {"encoder": args.encoder, "epochs": args.epochs, "max_len": args.max_len,
             "batch_size": args.batch_size,
             "clusters_per_label": getattr(args, "clusters_per_label", None)}
    return [f"{k}={v}" for k, v in flags.items() if v is not None]


def train(args) -> int:
    method = get_method(args.method or DEFAULT_METHOD)
    config = parse_overrides(method.Config, _flag_overrides(args) + args.overrides)
    mesh = usable_mesh(method, _mesh(args), "training")  # refused before the data is read
    model_dir = args.model_dir
    previous = modeldir.read_manifest(model_dir) if os.path.isdir(model_dir) else None

    t0 = time.perf_counter()
    _log(f"jxmc: loading {args.data or 'the built-in synthetic dataset'}")
    ds = load_dataset(args.data)
    t_data = time.perf_counter() - t0
    _log(f"jxmc: {ds.name}: {ds.train.X.shape[0]} train / {ds.test.X.shape[0]} test points, "
         f"d={ds.n_features} features, L={ds.n_labels} labels ({t_data:.1f} s)")
    space = _label_space(config, ds)  # label_text=true: the labels with a text added
    names = ds.label_names if space is None else space.names
    data_info = {"name": ds.name, "layout": ds.layout, "source": ds.source, "n_features": ds.n_features,
                 "n_labels": ds.n_labels if space is None else len(names),
                 "n_train": int(ds.train.X.shape[0]), "normalise": True}
    if space is not None:
        data_info["n_train_labels"] = ds.n_labels
    settings = {"method": method.name, "config": config_to_dict(config), "seed": args.seed,
                "data": data_info}

    t_train = 0.0
    if previous is not None and _same_run(method, previous, settings):
        _log(f"jxmc: {model_dir} already holds this trained model; evaluating it")
    else:
        fingerprint = {**settings, "data_digest": _digest(ds.train.X, ds.train.Y, *(
            () if space is None else (space.features,)))}
        ckpt = TrainCheckpoints(os.path.join(model_dir, "checkpoints"), fingerprint=fingerprint)
        if ckpt.latest_step() is not None:
            _log(f"jxmc: resuming from checkpoint step {ckpt.latest_step()} in {model_dir}/checkpoints")
        t1 = time.perf_counter()
        if space is None:
            params = method.fit(ds.train.X, ds.train.Y, config, seed=args.seed, ckpt=ckpt,
                                progress=not args.no_progress,
                                texts=_texts(method, ds.train.texts), mesh=mesh)
        else:
            from jxmc.models.tree_linear import label_text

            params = label_text.fit(method, ds.train.X, ds.train.Y, config, space, seed=args.seed,
                                    ckpt=ckpt, progress=not args.no_progress, mesh=mesh)
        t_train = time.perf_counter() - t1
        counts = np.zeros(data_info["n_labels"], np.int64)  # text-only labels: 0
        counts[: ds.n_labels] = ds.label_counts()[: ds.n_labels]
        modeldir.save(model_dir, params=params, label_counts=counts,
                      label_names=names, featurizer=ds.featurizer,
                      extra={"train_seconds": round(t_train, 3), "data_seconds": round(t_data, 3)},
                      **settings)
        ckpt.clear()
        _log(f"jxmc: trained {method.name} in {t_train:.1f} s; model written to {model_dir}")

    model = modeldir.load(model_dir)
    t2 = time.perf_counter()
    topk = _predict(method, model.params, ds.test.X, ds.test.texts, config, max(KS), mesh)
    t_pred = time.perf_counter() - t2
    Y = ds.test.Y
    counts = ds.label_counts()
    if space is not None:  # test truth in the extended space; unseen labels count 0
        from jxmc.models.tree_linear import label_text

        Y = label_text.test_labels(ds, names)
        counts = np.zeros(Y.shape[1], np.int64)
        counts[: ds.n_labels] = ds.label_counts()[: ds.n_labels]
    A, B = _ab(args, ds.name)
    result = _metrics(topk.ids, Y, counts, ds.train.X.shape[0], A, B)
    n_test = ds.test.X.shape[0]
    print(format_table(result, f"{ds.name} test ({n_test} points), {method.name}: metrics in %"))
    if space is not None:
        print(_unseen_line(_unseen(result, topk.ids, Y, counts)))
    print(f"times: data {t_data:.1f} s, train {t_train:.1f} s, "
          f"predict {1000 * t_pred / max(n_test, 1):.3f} ms/point (batched)")
    return 0


def _same_run(method, previous: dict, settings: dict) -> bool:
    """Whether a finished model's manifest is the run ``settings`` asks for (its
    config read as today's names, so an older directory still matches)."""
    if previous.get("method") != settings["method"] or "config" not in previous:
        return False
    try:
        config = config_to_dict(config_from_dict(method.Config, previous["config"]))
    except ConfigError:
        return False
    return all((config if k == "config" else previous.get(k)) == v for k, v in settings.items())


def _digest(*matrices) -> str:
    """SHA-256 of sparse matrices' shapes and stored entries (what a checkpoint trains on)."""
    h = hashlib.sha256()
    for A in matrices:
        A = A.tocsr()
        h.update(repr(A.shape).encode())
        for part in (A.indptr, A.indices, A.data):
            h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def _label_space(config, ds):
    """``ds``'s extended label space (:func:`jxmc.models.tree_linear.label_text.for_dataset`)
    when ``config`` asks for label texts, else None.

    Raises:
      ConfigError: ``label_text=true`` on a dataset without label texts (the folder named).
    """
    if not getattr(config, "label_text", False):
        return None
    from jxmc.models.tree_linear import label_text

    space = label_text.for_dataset(ds)
    _log(f"jxmc: label texts: {len(space.names) - space.n_train_labels} labels with a text and "
         f"no training point added, {len(space.names)} labels in all")
    return space


def _unseen(result: dict, ids, Y, counts) -> dict:
    """Adds ``unseen-R@10`` (recall@10 on the test labels unseen in training,
    :func:`jxmc.models.tree_linear.label_text.unseen_recall`) to ``result``; returns the
    counts behind it."""
    from jxmc.models.tree_linear import label_text

    stats = label_text.unseen_recall(ids, Y, counts, k=max(KS))
    result[f"unseen-R@{max(KS)}"] = stats[f"R@{max(KS)}"]
    return stats


def _unseen_line(stats: dict) -> str:
    k = max(KS)
    return (f"unseen in training: {stats['labels']} test labels, {stats['positives']} positives "
            f"on {stats['points']} points; R@{k} on them {100 * stats[f'R@{k}']:.2f}")


def _texts(method, texts):
    """The texts for a method that reads them; None for one that reads the features only."""
    return texts if method.needs_texts else None


def _predict(method, params, X, texts, config, k, mesh=None):
    return method.predict(params, X, config, k=k, texts=_texts(method, texts), mesh=mesh)


def _load_model(args):
    """The saved model, its method, and its training config with ``--set`` applied
    to the method's predict fields."""
    model = modeldir.load(args.model_dir)
    method = get_method(model.method)
    config = config_from_dict(method.Config, model.manifest["config"])
    config = with_predict_fields(method.Config, config, args.overrides, method.predict_fields,
                                 method.name)
    return model, method, config


def predict(args) -> int:
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    from jxmc.predictor import Predictor  # the service and the notebooks predict through it too

    predictor = Predictor(args.model_dir, overrides=args.overrides, mesh=_mesh(args))
    model = predictor.model
    from jxmc import calibration

    cal = predictor.calibrator  # jxmc.calibration.load(model_dir): None when not calibrated
    threshold = getattr(args, "threshold", None)
    if threshold is not None and cal is None:
        raise ConfigError(f"--threshold needs a calibrated model; {args.model_dir} has no "
                          f"{calibration.CALIBRATION_FILE} (run 'jxmc calibrate' first)")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be a probability in [0, 1], got {threshold}")
    X, texts = read_predict_inputs(args.data, model)
    topk = predictor.topk(X, texts, k=args.top_k)
    names = model.label_names
    values = topk.scores if cal is None else cal(topk.scores)  # calibrated: probabilities
    keep = (topk.ids >= 0) if threshold is None else (topk.ids >= 0) & (values >= threshold)
    with atomic_write(args.out) as f:
        for ids, scores, row_keep in zip(topk.ids, values, keep, strict=True):
            pairs = [f"{names[i] if names is not None else i}:{s:.6g}"
                     for i, s, ok in zip(ids.tolist(), scores.tolist(), row_keep.tolist(),
                                         strict=True) if ok]
            f.write(" ".join(pairs) + "\n")
    _log(f"jxmc: wrote the top {args.top_k} labels of {X.shape[0]} points to {args.out}")
    return 0


def calibrate(args) -> int:
    """``jxmc calibrate``: cross-fits a calibrator on the training split (jxmc.calibration)
    and saves it in the model directory."""
    from jxmc import calibration

    model, method, config = _load_model(args)
    if getattr(config, "label_text", False):
        raise ConfigError(f"{args.model_dir}: a model trained with label_text=true; jxmc calibrate "
                          f"does not cross-fit label texts yet")
    ds = load_dataset(args.data)
    n_features, n_labels = model.manifest["data"]["n_features"], model.manifest["data"]["n_labels"]
    if ds.n_features != n_features or ds.n_labels != n_labels or \
            (model.label_names is not None and list(ds.label_names or []) != list(model.label_names)):
        raise ConfigError(f"--data {args.data}: {ds.n_features} features / {ds.n_labels} labels, but "
                          f"the model in {args.model_dir} was trained on {n_features} / {n_labels} "
                          f"(calibrate on the data it was trained on)")
    _log(f"jxmc: cross-fitting {args.method} calibration of {method.name} over {args.folds} folds "
         f"of {ds.train.X.shape[0]} training points")
    t0 = time.perf_counter()
    scores, relevant = calibration.cross_fit_pairs(
        method, ds.train.X, ds.train.Y, config, folds=args.folds, k=max(KS),
        seed=model.manifest.get("seed", 0), texts=_texts(method, ds.train.texts), log=_log)
    cal = calibration.fit(scores, relevant, args.method, k=max(KS), folds=args.folds)
    path = calibration.save(args.model_dir, cal)
    held = metrics.calibration_metrics(cal(scores), relevant, ks=KS)
    _log(f"jxmc: {args.method} calibrator on {cal.n_pairs} held-out (score, relevant) pairs "
         f"({time.perf_counter() - t0:.1f} s), written to {path}; in-sample ECE@{max(KS)} "
         f"{100 * held[f'ECE@{max(KS)}']:.2f}%")
    return 0


def convert(args) -> int:
    """``jxmc convert --from pecos FOLDER --model-dir M`` / ``--to pecos --model-dir M FOLDER``
    (:mod:`jxmc.interop.pecos`)."""
    from jxmc.interop import pecos

    if args.from_format is not None:
        pecos.import_model(args.folder, args.model_dir, data=args.data, log=_log)
    else:
        if args.data is not None:
            raise ConfigError("--data goes with --from (the dataset a PECOS model was trained on)")
        pecos.export_model(args.model_dir, args.folder, log=_log)
    return 0


def evaluate(args) -> int:
    model, method, config = _load_model(args)
    X, Y, _, texts = read_test_split(args.data, model)
    topk = _predict(method, model.params, X, texts, config, max(KS))
    counts = _label_counts(model, Y.shape[1])
    named_by_folder = args.data is not None and os.path.isdir(args.data)
    A, B = _ab(args, os.path.basename(os.path.normpath(args.data)) if named_by_folder
               else model.manifest["data"]["name"])
    result = _metrics(topk.ids, Y, counts, model.manifest["data"]["n_train"], A, B)
    result.update(metrics.macro_metrics(topk.ids, Y, ks=KS))
    unseen = _unseen(result, topk.ids, Y, counts) if getattr(config, "label_text", False) else None
    from jxmc import calibration

    cal = calibration.load(args.model_dir)
    if cal is not None:
        result.update(metrics.calibration_metrics(cal(topk.scores), metrics.topk_relevance(topk.ids, Y),
                                                  ks=KS))
    if args.json:
        print(json_metrics(result))
    else:
        print(format_table(result, f"{model.manifest['data']['name']} test ({X.shape[0]} points), "
                                   f"{method.name}: metrics in %"))
        if unseen is not None:
            print(_unseen_line(unseen))
    return 0



def format_table(result: dict[str, float], title: str = "") -> str:
    """The metrics table, in percent."""
    lines = [title] if title else []
    lines.append(f"{'':8}{'@1':>8}{'@3':>8}{'@5':>8}")
    for name in ("P", "nDCG", "PSP", "PSnDCG"):
        lines.append(f"{name:8}" + "".join(f"{100 * result[f'{name}@{k}']:8.2f}" for k in (1, 3, 5)))
    lines.append(f"{'R':8}{'':8}{'':8}{100 * result['R@5']:8.2f}   R@10 {100 * result['R@10']:.2f}")
    for name in ("macro-P", "macro-R", "coverage", "ECE", "Brier"):
        if all(f"{name}@{k}" in result for k in (1, 3, 5)):
            lines.append(f"{name:8}" + "".join(f"{100 * result[f'{name}@{k}']:8.2f}" for k in (1, 3, 5)))
    return "\n".join(lines)


def json_metrics(result: dict[str, float]) -> str:
    """The ``evaluate --json`` line: :data:`JSON_KEYS`, then those of
    :data:`EXTRA_JSON_KEYS` that ``result`` has; values as fractions."""
    keys = JSON_KEYS + tuple(k for k in EXTRA_JSON_KEYS if k in result)
    return json.dumps({k: float(result[k]) for k in keys})
