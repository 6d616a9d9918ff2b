"""What ``jxmc train``, ``predict`` and ``evaluate`` do (the CLI parses, this runs).

Configuration is read here, at the edge, and handed to the library as plain
values: the method's typed ``Config``, the seed, arrays.
"""

from __future__ import annotations

import inspect
import os
import sys
import time

import numpy as np

from jxmc import metrics as M
from jxmc import modeldir
from jxmc.checkpoint import TrainCheckpoints
from jxmc.cli import DEFAULT_METHOD, KS, format_table, json_metrics
from jxmc.data.dataset import load_dataset
from jxmc.data.inputs import read_predict_inputs, read_test_split
from jxmc.errors import ConfigError, ModelError
from jxmc.fileio import atomic_write
from jxmc.models import get_method
from jxmc.models.base import config_from_dict, config_to_dict, parse_overrides


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _ab(args, name: str | None) -> tuple[float, float]:
    A, B = M.propensity_ab(name)
    return (A if args.A is None else args.A), (B if args.B is None else args.B)


def _metrics(topk_ids: np.ndarray, Y, counts: np.ndarray, n_train: int, A: float, B: float) -> dict:
    inv = M.inv_propensity(counts, n_train, A, B)
    return M.evaluate(topk_ids, Y, inv, ks=KS)


def _label_counts(model, n_labels_all: int) -> np.ndarray:
    counts = np.zeros(n_labels_all, np.int64)
    saved = np.asarray(model.params["train_label_counts"]) if "train_label_counts" in model.params else None
    if saved is None:
        raise ModelError("the model does not record its training label counts (needed for PSP@k)")
    counts[: len(saved)] = saved
    return counts


def _accepts_texts(fn) -> bool:
    return "texts" in inspect.signature(fn).parameters


def _mesh(args):
    """The ``--mesh`` mesh, or None; multi-host start-up (``JXMC_COORDINATOR_ADDRESS``...)
    comes first, before anything else runs on JAX."""
    if getattr(args, "mesh", None) is None:
        return None
    from jxmc import sharding

    sharding.initialize_from_env()
    return sharding.mesh_from_string(args.mesh)


def _mesh_kwargs(fn, mesh, who: str) -> dict:
    """``{"mesh": mesh}`` for a function that takes one; a one-device mesh is dropped
    for one that does not, a larger one refused."""
    if mesh is None:
        return {}
    if "mesh" in inspect.signature(fn).parameters:
        return {"mesh": mesh}
    if mesh.size > 1:
        raise ConfigError(f"{who} does not run on a device mesh; --mesh asks for {mesh.size} "
                          f"devices (leave --mesh out, or use data=1,model=1)")
    return {}


def _flag_overrides(args) -> list[str]:
    """``--epochs`` etc. as ``key=value`` overrides (they apply to methods that have the field)."""
    flags = {"encoder": args.encoder, "epochs": args.epochs, "max_len": args.max_len,
             "batch_size": args.batch_size,
             "clusters_per_label": getattr(args, "clusters_per_label", None)}
    return [f"{k}={v}" for k, v in flags.items() if v is not None]


def train(args) -> int:
    method = get_method(args.method or DEFAULT_METHOD)
    config = parse_overrides(method.Config, _flag_overrides(args) + args.overrides)
    mesh = _mesh(args)
    fit_mesh = _mesh_kwargs(method.fit, mesh, f"--method {method.name} training")
    predict_mesh = _mesh_kwargs(method.predict, mesh, f"--method {method.name} prediction")
    model_dir = args.model_dir
    previous = modeldir.read_manifest(model_dir) if os.path.isdir(model_dir) else None

    t0 = time.perf_counter()
    _log(f"jxmc: loading {args.data or 'the built-in synthetic dataset'}")
    ds = load_dataset(args.data)
    t_data = time.perf_counter() - t0
    _log(f"jxmc: {ds.name}: {ds.train.X.shape[0]} train / {ds.test.X.shape[0]} test points, "
         f"d={ds.n_features} features, L={ds.n_labels} labels ({t_data:.1f} s)")
    data_info = {"name": ds.name, "layout": ds.layout, "source": ds.source, "n_features": ds.n_features,
                 "n_labels": ds.n_labels, "n_train": int(ds.train.X.shape[0]), "normalise": True}
    settings = {"method": method.name, "config": config_to_dict(config), "seed": args.seed,
                "data": data_info}

    t_train = 0.0
    if previous is not None and all(previous.get(k) == v for k, v in settings.items()):
        _log(f"jxmc: {model_dir} already holds this trained model; evaluating it")
    else:
        ckpt = TrainCheckpoints(os.path.join(model_dir, "checkpoints"))
        if ckpt.latest_step() is not None:
            _log(f"jxmc: resuming from checkpoint step {ckpt.latest_step()} in {model_dir}/checkpoints")
        t1 = time.perf_counter()
        extra_args = {"texts": ds.train.texts} if _accepts_texts(method.fit) else {}
        params = method.fit(ds.train.X, ds.train.Y, config, seed=args.seed, ckpt=ckpt,
                            progress=not args.no_progress, **extra_args, **fit_mesh)
        t_train = time.perf_counter() - t1
        params = dict(params)
        params["train_label_counts"] = ds.label_counts()[: ds.n_labels]
        modeldir.save(model_dir, params=params, label_names=ds.label_names, featurizer=ds.featurizer,
                      extra={"train_seconds": round(t_train, 3), "data_seconds": round(t_data, 3)},
                      **settings)
        ckpt.clear()
        _log(f"jxmc: trained {method.name} in {t_train:.1f} s; model written to {model_dir}")

    model = modeldir.load(model_dir)
    t2 = time.perf_counter()
    topk = _predict(method, model.params, ds.test.X, ds.test.texts, config, max(KS),
                    **predict_mesh)
    t_pred = time.perf_counter() - t2
    counts = ds.label_counts()
    A, B = _ab(args, ds.name)
    result = _metrics(topk.ids, ds.test.Y, counts, ds.train.X.shape[0], A, B)
    n_test = ds.test.X.shape[0]
    print(format_table(result, f"{ds.name} test ({n_test} points), {method.name}: metrics in %"))
    print(f"times: data {t_data:.1f} s, train {t_train:.1f} s, "
          f"predict {1000 * t_pred / max(n_test, 1):.3f} ms/point (batched)")
    return 0


def _predict(method, params, X, texts, config, k, **mesh):
    if _accepts_texts(method.predict):
        return method.predict(params, X, config, k=k, texts=texts, **mesh)
    return method.predict(params, X, config, k=k, **mesh)


def _load_model(model_dir: str):
    model = modeldir.load(model_dir)
    method = get_method(model.method)
    config = config_from_dict(method.Config, model.manifest["config"])
    return model, method, config


def predict(args) -> int:
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    mesh = _mesh(args)
    model, method, config = _load_model(args.model_dir)
    predict_mesh = _mesh_kwargs(method.predict, mesh, f"--method {method.name} prediction")
    X, texts = read_predict_inputs(args.data, model)
    topk = _predict(method, model.params, X, texts, config, args.top_k, **predict_mesh)
    names = model.label_names
    with atomic_write(args.out) as f:
        for ids, scores in zip(topk.ids, topk.scores, strict=True):
            pairs = [f"{names[i] if names is not None else i}:{s:.6g}"
                     for i, s in zip(ids.tolist(), scores.tolist(), strict=True) if i >= 0]
            f.write(" ".join(pairs) + "\n")
    _log(f"jxmc: wrote the top {args.top_k} labels of {X.shape[0]} points to {args.out}")
    return 0


def evaluate(args) -> int:
    model, method, config = _load_model(args.model_dir)
    X, Y, _, texts = read_test_split(args.data, model)
    topk = _predict(method, model.params, X, texts, config, max(KS))
    counts = _label_counts(model, Y.shape[1])
    named_by_folder = args.data is not None and os.path.isdir(args.data)
    A, B = _ab(args, os.path.basename(os.path.normpath(args.data)) if named_by_folder
               else model.manifest["data"]["name"])
    result = _metrics(topk.ids, Y, counts, model.manifest["data"]["n_train"], A, B)
    if args.json:
        print(json_metrics(result))
    else:
        print(format_table(result, f"{model.manifest['data']['name']} test ({X.shape[0]} points), "
                                   f"{method.name}: metrics in %"))
    return 0

