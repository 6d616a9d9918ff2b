"""The ``jxmc`` command line: ``jxmc train | predict | evaluate | calibrate | serve | convert``.

Errors in the input or the options are reported in one line (``jxmc: error:
<file>:<line>: <what is wrong>``) and the command exits with status 2, without a
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

# Quiet XLA/absl start-up chatter before jax is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from jxmc.devices import limit_heap_growth, use_host_cores  # noqa: E402
from jxmc.errors import JxmcError  # noqa: E402
from jxmc.models import DEFAULT_METHOD  # noqa: E402  (imports no JAX)
from jxmc.version import __version__  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jxmc", description="Extreme multi-label classification in JAX.")
    p.add_argument("--version", action="version", version=f"jxmc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,predict,evaluate,calibrate,serve,convert}")

    t = sub.add_parser("train", help="train a model, then print the test metrics")
    t.add_argument("--data", default=None,
                   help="dataset folder (XC or raw-text layout), or 'synthetic[:key=value,...]'; "
                        "default: the built-in synthetic dataset")
    t.add_argument("--model-dir", required=True, help="where the model is written (and resumed from)")
    t.add_argument("--method", default=None, help=f"the method (default {DEFAULT_METHOD})")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. --set beam_size=20 (repeatable)")
    t.add_argument("--encoder", default=None, help="transformer methods: a local Hugging Face model "
                   "folder (default: the all-MiniLM-L6-v2 package when installed)")
    t.add_argument("--epochs", type=int, default=None, help="passes over the training set")
    t.add_argument("--max-len", type=int, default=None, help="transformer methods: tokens per text")
    t.add_argument("--batch-size", type=int, default=None, help="points per training step")
    t.add_argument("--clusters-per-label", type=int, default=None, metavar="LAMBDA",
                   help="tree methods (xr-linear, parabel, bonsai): label disentanglement, "
                        "each label in LAMBDA leaf clusters (default 1: off)")
    _add_ab(t)
    _add_mesh(t)
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    pr = sub.add_parser("predict", help="write the top-k labels of each input point")
    pr.add_argument("--data", required=True,
                    help="a dataset folder (its test split), a text file (one document per line), "
                         "or an XC features file")
    pr.add_argument("--model-dir", required=True)
    pr.add_argument("--top-k", type=int, default=10)
    pr.add_argument("--out", required=True, help="output file: one line per point, 'label:score' pairs "
                    "(calibrated model: 'label:probability')")
    pr.add_argument("--threshold", type=float, default=None, metavar="P",
                    help="keep only labels whose calibrated probability is >= P (needs 'jxmc calibrate')")
    _add_predict_set(pr)
    _add_mesh(pr)

    e = sub.add_parser("evaluate", help="metrics of a model on a dataset's test split")
    e.add_argument("--data", default=None, help="dataset folder, or 'synthetic[...]' (default)")
    e.add_argument("--model-dir", required=True)
    e.add_argument("--json", action="store_true", help="one JSON object, values as fractions")
    _add_predict_set(e)
    _add_ab(e)

    c = sub.add_parser("calibrate", help="fit score -> probability calibration on held-out "
                                         "training folds; saved in the model directory")
    c.add_argument("--data", default=None, help="the dataset folder the model was trained on "
                                                "(default: the built-in synthetic dataset)")
    c.add_argument("--model-dir", required=True)
    c.add_argument("--method", default="isotonic", choices=("isotonic", "platt"),
                   help="isotonic regression (default) or Platt scaling")
    c.add_argument("--folds", type=int, default=3, metavar="F",
                   help="train on F-1 folds, score the held-out one, F times (default 3)")
    _add_predict_set(c)

    s = sub.add_parser("serve", help="an HTTP JSON prediction service (POST /predict, GET /health)")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    s.add_argument("--max-batch", type=int, default=32, metavar="B",
                   help="most points gathered into one jitted call, a power of two (default 32)")
    s.add_argument("--max-wait-ms", type=float, default=2.0, metavar="W",
                   help="how long a request waits for others to batch with (default 2 ms)")
    s.add_argument("--max-k", type=int, default=100, help="largest 'k' a request may ask (default 100)")
    s.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES",
                   help="largest request body; larger ones get 413 (default 1 MiB)")
    s.add_argument("--warm-nnz", type=int, default=64, metavar="Z",
                   help="warm-up compiles sparse rows of up to Z non-zeros (default 64)")
    _add_predict_set(s)
    _add_mesh(s)

    v = sub.add_parser("convert", help="read another toolkit's model into a model directory "
                                       "(--from pecos), or write one in its format (--to pecos)")
    way = v.add_mutually_exclusive_group(required=True)
    way.add_argument("--from", dest="from_format", choices=("pecos",),
                     help="FOLDER is a PECOS XLinearModel folder (XLinearModel.save); written "
                          "to --model-dir as an xr-linear model")
    way.add_argument("--to", dest="to_format", choices=("pecos",),
                     help="the xr-linear model in --model-dir is written to FOLDER in the format "
                          "of PECOS's XLinearModel.load")
    v.add_argument("folder", metavar="FOLDER", help="the PECOS model folder (read or written)")
    v.add_argument("--model-dir", required=True, help="the jxmc model directory (written with "
                   "--from, which needs a new or empty one; read with --to)")
    v.add_argument("--data", default=None, help="--from: the dataset the PECOS model was trained "
                   "on, as jxmc featurises it (its featuriser, label names and label counts are "
                   "kept; default: sparse features as given, label ids)")
    return p


def _add_ab(p: argparse.ArgumentParser) -> None:
    p.add_argument("--A", type=float, default=None, help="propensity A (default: by dataset, 0.55)")
    p.add_argument("--B", type=float, default=None, help="propensity B (default: by dataset, 1.5)")


# optional dependencies -> the extra that installs them (pyproject.toml)
_EXTRAS = {"tokenizers": "text", "safetensors": "text", "tensorflow_datasets": "tfds",
           "array_record": "tfds"}


def _add_predict_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a prediction option of the model's method, e.g. --set beam_size=50 "
                        "(repeatable; the others are fixed at training)")


def _add_mesh(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mesh", default=None, metavar="data=D,model=M",
                   help="run on a device mesh: the batch split D ways, label tables M ways "
                        "(D*M = the devices; see README 'Scale-out')")


def _compile_cache() -> None:
    """JAX's persistent compilation cache (:func:`jxmc.devices.use_compile_cache`)."""
    from jxmc.devices import use_compile_cache

    use_compile_cache()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    use_host_cores()
    limit_heap_growth()
    _compile_cache()
    try:
        from jxmc import commands
        if args.command == "train":
            return commands.train(args)
        if args.command == "predict":
            return commands.predict(args)
        if args.command == "calibrate":
            return commands.calibrate(args)
        if args.command == "serve":
            from jxmc import serve
            return serve.serve(args)
        if args.command == "convert":
            return commands.convert(args)
        return commands.evaluate(args)
    except JxmcError as e:
        print(f"jxmc: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        extra = _EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"jxmc: error: this needs the Python package {e.name!r}; install it with "
              f"pip install 'jxmc[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jxmc: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
