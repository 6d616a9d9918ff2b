"""Heads at Amazon-3M scale (issue 16's rehearsal): ELMO's flat head
(:mod:`jxmc.nn.flat_head`) over L = 2,812,281 labels, h = 768, 128 documents a step.

Command (from the repository root; a few minutes on 2 CPU cores, ~6 GiB of RAM):

    nice -n 19 .venv/bin/python experiments/bench_heads_scale.py [--labels 2812281]
        [--hidden 768] [--batch 128] [--chunk 2048] [--positives 36] [--steps 3]
        [--table-dtype bfloat16] [--train-points 1717899] [--out experiments/results]
        [--allow-dirty]

What runs, in this process: the head's train step alone
(:func:`jxmc.nn.flat_head.head_step_jit`: chunked logits, BCE, input gradient,
SGD with stochastic rounding, Kahan rows for the most frequent 20 %), its inputs
random 768-wide unit embeddings standing for the encoder's output (no encoder is
run: ``encoder_gib`` is 0 here) and ``--positives`` random positive labels per
point (Amazon-3M has ~36.0 per point).  The table ``bf16[Lp, h]`` (held as its bit
patterns, the Kahan rows apart, as the method holds it) and the compensation
rows ``bf16[Kc, h]`` start at zero (they are donated, updated in place).

Reported per head:

* XLA's compiled memory analysis of one step: arguments, outputs, aliased
  (donated) bytes, temporaries; ``step_peak_head_gib`` = arguments + outputs -
  aliased + temporaries (what the step holds at once);
* the process's peak resident set (``ru_maxrss``) after ``--steps`` steps;
* FLOPs and bytes: XLA's ``cost_analysis`` of the whole step (XLA counts a loop
  body once, so it is reported but not used), of one chunk's body (a plain and a
  Kahan chunk compiled alone) times the number of chunks, and the formula
  ``6 n L h`` (three ``n x chunk x h`` matmuls per chunk);
* projected H200 step time ``max(FLOPs / 788e12, bytes / 4.3e12)`` from the
  per-chunk counts, and the projected Amazon-3M epoch (``--train-points`` / batch
  steps).  CPU step times are listed too, but the machine is shared: not a timing.

The tree heads (cascadexml, lightxml, xr-transformer) are not included (left
undone).  Writes ``experiments/results/heads_scale.json`` and ``.md`` (machine,
date, commit) and prints one JSON line per head.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "harness"))
sys.path.insert(0, str(REPO))
import provenance  # noqa: E402

H200_FLOPS = 788e12  # dense bf16 FLOP/s assumed for the projection
H200_BYTES = 4.3e12  # HBM bytes/s
GIB = 2 ** 30


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=2_812_281)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--positives", type=int, default=36)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--kahan-fraction", type=float, default=0.2)
    p.add_argument("--table-dtype", default="bfloat16", choices=["bfloat16", "float8_e4m3fn"])
    p.add_argument("--train-points", type=int, default=1_717_899)  # Amazon-3M train set
    p.add_argument("--out", default=str(REPO / "experiments" / "results"))
    provenance.add_arguments(p)
    return p.parse_args(argv)


def _mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def _cost(compiled) -> dict:
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, (list, tuple)) else c
    return {"flops": float(c.get("flops", 0.0)), "bytes": float(c.get("bytes accessed", 0.0))}


def run(args) -> dict:
    import jax
    import jax.numpy as jnp

    from jxmc.nn import flat_head

    L, h, n, chunk = args.labels, args.hidden, args.batch, min(args.chunk, args.labels)
    Lp = -(-L // chunk) * chunk
    kc = min(-(-math.ceil(args.kahan_fraction * L) // chunk) * chunk, Lp)
    dtype = jnp.dtype(args.table_dtype)
    table_b = Lp * h * dtype.itemsize + kc * h * 2
    need = table_b / GIB + 1.5
    avail = _mem_available_gib()
    if not avail >= need:
        raise SystemExit(f"bench_heads_scale: needs ~{need:.1f} GiB free, {avail:.1f} GiB available")
    k_e, k_p, k_r = jax.random.split(jax.random.PRNGKey(0), 3)
    e = jax.random.normal(k_e, (n, h), jnp.float32)
    e = e / jnp.linalg.norm(e, axis=1, keepdims=True)
    pos = jax.random.randint(k_p, (n, args.positives), 0, L, jnp.int32)
    valid = jnp.ones(n, bool)
    lr = jnp.float32(0.05)
    static = dict(n_rows=L, chunk=chunk, rounding="stochastic", compute_dtype=jnp.float32,
                  dtype=dtype)
    if jax.default_backend() != "cpu":
        static["compute_dtype"] = jnp.bfloat16
    bits = flat_head.to_bits(jnp.zeros((1, h), dtype)).dtype
    # the table as the method's train state holds it: bit patterns, Kahan rows apart
    w = (jnp.zeros((kc, h), bits), jnp.zeros((Lp - kc, h), bits))
    comp = jnp.zeros((kc, h), jnp.uint16) if kc else None
    t0 = time.perf_counter()
    compiled = flat_head.head_step_jit.lower(w, comp, e, pos, valid, lr, k_r, **static).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    memd = {k: int(getattr(mem, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                              "alias_size_in_bytes", "temp_size_in_bytes")}
    peak_b = (memd["argument_size_in_bytes"] + memd["output_size_in_bytes"]
              - memd["alias_size_in_bytes"] + memd["temp_size_in_bytes"])
    whole = _cost(compiled)
    # one chunk alone: a plain chunk (Lp = chunk, no Kahan rows) and a Kahan chunk
    one = dict(static, n_rows=chunk)
    wc, w0 = jnp.zeros((chunk, h), bits), jnp.zeros((0, h), bits)
    plain = _cost(jax.jit(lambda w_, e_, p_, v_, r_, k_: flat_head.head_step(
        w_, None, e_, p_, v_, r_, k_, **one)).lower((w0, wc), e, pos, valid, lr, k_r).compile())
    kahan = _cost(jax.jit(lambda w_, c_, e_, p_, v_, r_, k_: flat_head.head_step(
        w_, c_, e_, p_, v_, r_, k_, **one)).lower((wc, w0), jnp.zeros((chunk, h), jnp.uint16), e,
                                                  pos, valid, lr, k_r).compile())
    n_k, n_p = kc // chunk, (Lp - kc) // chunk
    flops = n_k * kahan["flops"] + n_p * plain["flops"]
    bytes_ = n_k * kahan["bytes"] + n_p * plain["bytes"]
    step_s = max(flops / H200_FLOPS, bytes_ / H200_BYTES)
    times = []
    for i in range(args.steps):
        t = time.perf_counter()
        loss, g_e, w, comp = flat_head.head_step_jit(w, comp, e, pos, valid, lr,
                                                     jax.random.fold_in(k_r, i), **static)
        jax.block_until_ready((loss, w))
        times.append(round(time.perf_counter() - t, 2))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    steps_epoch = -(-args.train_points // n)
    return {
        "head": "elmo-flat", "labels": L, "hidden": h, "batch": n, "chunk": chunk,
        "table_rows": Lp, "kahan_rows": kc, "table_dtype": args.table_dtype,
        "input": "random unit f32[n, h] embeddings (no encoder)",
        "positives_per_point": args.positives,
        "table_gib": round(table_b / GIB, 3),
        "memory_analysis": memd,
        "step_peak_head_gib": round(peak_b / GIB, 3),
        "temp_gib": round(memd["temp_size_in_bytes"] / GIB, 4),
        "encoder_gib": 0.0,
        "peak_rss_gib": round(rss / GIB, 3),
        "cost_whole_step_xla": whole,
        "cost_per_chunk_xla": {"plain": plain, "kahan": kahan},
        "flops": flops, "bytes": bytes_, "flops_formula_6nLh": 6.0 * n * Lp * h,
        "projected_h200_step_ms": round(step_s * 1e3, 3),
        "projected_h200_epoch_s": round(step_s * steps_epoch, 1),
        "steps_per_epoch": steps_epoch, "train_points": args.train_points,
        "cpu_compile_s": round(compile_s, 1), "cpu_step_s": times,
        "final_loss": float(loss),
    }


def write(res: dict, out: str) -> None:
    from jxmc.fileio import atomic_write

    os.makedirs(out, exist_ok=True)
    with atomic_write(os.path.join(out, "heads_scale.json")) as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    lines = ["# Heads at Amazon-3M scale (`experiments/bench_heads_scale.py`)", "",
             f"{res['record']['date']}, commit {res['record']['git'].get('commit', '?')[:12]}"
             f"{' (dirty)' if res['record']['git'].get('dirty') else ''}, "
             f"{res['record']['machine'].get('cpu', res['record']['machine'])}", "",
             "| head | labels | hidden | batch | table | step peak (GiB) | temp (GiB) | peak RSS "
             "(GiB) | FLOPs/step | bytes/step | H200 step (ms, projected) | Amazon-3M epoch "
             "(s, projected) |", "|" + "---|" * 12]
    for r in res["heads"]:
        lines.append(f"| {r['head']} | {r['labels']:,} | {r['hidden']} | {r['batch']} | "
                     f"{r['table_dtype']} | {r['step_peak_head_gib']} | {r['temp_gib']} | "
                     f"{r['peak_rss_gib']} | {r['flops']:.3g} | {r['bytes']:.3g} | "
                     f"{r['projected_h200_step_ms']} | {r['projected_h200_epoch_s']} |")
    lines += ["", "Input: random 768-wide unit embeddings (no encoder; encoder_gib 0). Projection: "
              "max(FLOPs / 788e12, bytes / 4.3e12) from XLA's cost analysis of one chunk times "
              "the chunks (XLA counts a loop body once in the whole step's analysis). "
              "CPU step times (shared machine, not a timing): "
              + "; ".join(f"{r['head']} {r['cpu_step_s']} s" for r in res["heads"]) + ".",
              "Tree heads (cascadexml, lightxml, xr-transformer): not measured here."]
    with atomic_write(os.path.join(out, "heads_scale.md")) as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = _args(argv)
    provenance.require_clean(args.allow_dirty, "bench_heads_scale.py")
    record = provenance.record("python experiments/bench_heads_scale.py " + " ".join(
        sys.argv[1:] if argv is None else argv))
    r = run(args)
    print(json.dumps({k: r[k] for k in ("head", "labels", "hidden", "step_peak_head_gib",
                                        "encoder_gib", "peak_rss_gib",
                                        "projected_h200_step_ms")}), flush=True)
    write({"record": record, "heads": [r], "not_included": ["cascadexml", "lightxml",
                                                            "xr-transformer"]}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
