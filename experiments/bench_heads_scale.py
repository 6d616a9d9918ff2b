"""Heads at Amazon-3M scale (issue 16's rehearsal): ELMO's flat head
(:mod:`jxmc.nn.flat_head`) over L = 2,812,281 labels, h = 768, 128 documents a step,
and the tree heads of cascadexml, lightxml and xr-transformer over the same labels,
with bf16 tables and with fp8 (``float8_e4m3fn``) ones.

Command (from the repository root; a few minutes per run on 2 CPU cores, ~6 GiB of
RAM for the bf16 table):

    nice -n 19 .venv/bin/python experiments/bench_heads_scale.py [--labels 2812281]
        [--hidden 768] [--batch 128] [--chunk 2048] [--positives 36] [--steps 3]
        [--heads elmo-flat cascadexml lightxml xr-transformer] [--table-dtype bfloat16 float8_e4m3fn]
        [--train-points 1717899] [--out experiments/results] [--allow-dirty]

Each head rehearsal (an entry of :data:`HEADS`, once per ``--table-dtype`` where it
has a table dtype) runs in a process of its own, so that its peak resident set is
its own; each returns the same JSON keys (:data:`KEYS` first).  Another head is one
more entry of :data:`HEADS`: a function ``(args, table_dtype) -> dict`` with those keys.

``elmo-flat``: the head's train step alone
(:func:`jxmc.nn.flat_head.head_step_jit`: chunked logits, BCE, input gradient,
SGD with stochastic rounding, Kahan rows for the most frequent 20 %), its inputs
random 768-wide unit embeddings standing for the encoder's output (no encoder is
run: ``encoder_gib`` is 0 here) and ``--positives`` random positive labels per
point (Amazon-3M has ~36.0 per point).  The table is held as the method holds it
(:func:`jxmc.nn.flat_head.init_table`): the Kahan block ``u[P, Kc, h]`` (the Kahan
rows' bits and their bf16 compensation's, one array so that the scan updates both
in place) and the other rows' bits, all donated and updated in place.

Reported per run:

* XLA's compiled memory analysis of one step: arguments, outputs, aliased
  (donated) bytes, temporaries; ``step_peak_head_gib`` = arguments + outputs -
  aliased + temporaries (what the step holds at once), against issue 16's goal
  (``goal_gib``: 5 GiB in bf16, 3 GiB in fp8);
* the process's peak resident set (``ru_maxrss``) after ``--steps`` steps;
* FLOPs and bytes: XLA's ``cost_analysis`` of the whole step (XLA counts a loop
  body once, so it is reported but not used), of one chunk's body (a plain and a
  Kahan chunk compiled alone) times the number of chunks, and the formula
  ``6 n L h`` (three ``n x chunk x h`` matmuls per chunk);
* projected H200 step time ``max(FLOPs / 788e12, bytes / 4.3e12)`` from the
  per-chunk counts, and the projected Amazon-3M epoch (``--train-points`` / batch
  steps).  CPU step times are listed too, but the machine is shared: not a timing.

``cascadexml``, ``lightxml``, ``xr-transformer`` (:func:`tree_head`): the method's
whole train step (its last phase: every level; xr-transformer's leaf level alone, the
others frozen) over the same labels in leaves of 16, with a one-layer BERT encoder
(random token ids, 32 tokens: the head is what scales), the shortlist tables in the
table dtype with row-wise Adagrad row updates (:mod:`jxmc.nn.sparse_rows`), level 1 and
the encoder on AdamW; ``encoder_gib`` is the encoder's parameters and moments, and
``step_peak_head_gib`` XLA's step peak less that; FLOPs and bytes are XLA's cost
analysis of the whole step (no loop in it).  Writes
``heads_scale.json`` and ``.md`` under ``--out`` (machine, date, commit) and prints
one JSON line per run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
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
GOAL_GIB = {"bfloat16": 5.0, "float8_e4m3fn": 3.0}  # issue 16's step peak of the head
KEYS = ("head", "labels", "hidden", "table_dtype", "step_peak_head_gib", "goal_gib",
        "encoder_gib", "peak_rss_gib", "projected_h200_step_ms")
"""The keys every head rehearsal returns first (the printed JSON line)."""
MARK = "HEAD_RESULT "


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=2_812_281)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--positives", type=int, default=36)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--kahan-fraction", type=float, default=0.2)
    p.add_argument("--table-dtype", nargs="+", default=["bfloat16", "float8_e4m3fn"],
                   choices=["bfloat16", "float8_e4m3fn"])
    p.add_argument("--heads", nargs="+", default=None, help="default: every entry of HEADS")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # HEAD:DTYPE, one run
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


def _memory(compiled) -> tuple[dict, int]:
    """XLA's memory analysis of a compiled step: the four sizes (bytes) and the step
    peak, arguments + outputs - aliased (donated) + temporaries."""
    mem = compiled.memory_analysis()
    memd = {k: int(getattr(mem, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                              "alias_size_in_bytes", "temp_size_in_bytes")}
    return memd, (memd["argument_size_in_bytes"] + memd["output_size_in_bytes"]
                  - memd["alias_size_in_bytes"] + memd["temp_size_in_bytes"])


def elmo_flat(args, table_dtype: str) -> dict:
    """The ``elmo-flat`` rehearsal (module docstring)."""
    import jax
    import jax.numpy as jnp

    from jxmc.models.transformer import elmo
    from jxmc.nn import flat_head

    L, h, n = args.labels, args.hidden, args.batch
    # the method's layout of the table: the first ceil(20 % of L) rows (rounded up to
    # whole chunks) Kahan-updated
    L_, Lp, chunk, kc = elmo.layout(L, elmo.Config(chunk=args.chunk, table_dtype=table_dtype,
                                                   kahan_fraction=args.kahan_fraction))
    dtype = jnp.dtype(table_dtype)
    table_b = Lp * h * dtype.itemsize + kc * h * flat_head.comp_dtype(dtype).itemsize
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
    # the table as the method's train state holds it: the Kahan block and the other rows
    w = flat_head.init_table(kc, Lp, h, dtype)
    t0 = time.perf_counter()
    compiled = flat_head.head_step_jit.lower(w, None, e, pos, valid, lr, k_r, **static).compile()
    compile_s = time.perf_counter() - t0
    memd, peak_b = _memory(compiled)
    whole = _cost(compiled)
    # one chunk alone: a plain chunk (Lp = chunk, no Kahan rows) and a Kahan chunk
    one = dict(static, n_rows=chunk)

    def chunk_cost(table):
        return _cost(jax.jit(lambda w_, e_, p_, v_, r_, k_: flat_head.head_step(
            w_, None, e_, p_, v_, r_, k_, **one)).lower(table, e, pos, valid, lr, k_r).compile())

    plain = chunk_cost(flat_head.init_table(0, chunk, h, dtype))
    kahan = chunk_cost(flat_head.init_table(chunk, chunk, h, dtype))
    n_k, n_p = kc // chunk, (Lp - kc) // chunk
    flops = n_k * kahan["flops"] + n_p * plain["flops"]
    bytes_ = n_k * kahan["bytes"] + n_p * plain["bytes"]
    step_s = max(flops / H200_FLOPS, bytes_ / H200_BYTES)
    times = []
    for i in range(args.steps):
        t = time.perf_counter()
        loss, g_e, w, _ = flat_head.head_step_jit(w, None, e, pos, valid, lr,
                                                  jax.random.fold_in(k_r, i), **static)
        jax.block_until_ready((loss, w))
        times.append(round(time.perf_counter() - t, 2))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    steps_epoch = -(-args.train_points // n)
    return {
        "head": "elmo-flat", "labels": L, "hidden": h, "batch": n, "chunk": chunk,
        "table_dtype": table_dtype,
        "step_peak_head_gib": round(peak_b / GIB, 3), "goal_gib": GOAL_GIB[table_dtype],
        "encoder_gib": 0.0, "peak_rss_gib": round(rss / GIB, 3),
        "projected_h200_step_ms": round(step_s * 1e3, 3),
        "meets_goal": peak_b / GIB <= GOAL_GIB[table_dtype], "table_rows": Lp, "kahan_rows": kc,
        "comp_dtype": flat_head.comp_dtype(dtype).name,
        "input": "random unit f32[n, h] embeddings (no encoder)",
        "positives_per_point": args.positives,
        "table_gib": round(table_b / GIB, 3),
        "memory_analysis": memd,
        "temp_gib": round(memd["temp_size_in_bytes"] / GIB, 4),
        "cost_whole_step_xla": whole,
        "cost_per_chunk_xla": {"plain": plain, "kahan": kahan},
        "flops": flops, "bytes": bytes_, "flops_formula_6nLh": 6.0 * n * Lp * h,
        "projected_h200_epoch_s": round(step_s * steps_epoch, 1),
        "steps_per_epoch": steps_epoch, "train_points": args.train_points,
        "cpu_compile_s": round(compile_s, 1), "cpu_step_s": times,
        "final_loss": float(loss),
    }


# the tree heads at full label scale: leaves of 16 labels; cascadexml / xr-transformer
# three levels (16384 dense nodes, then the shortlist levels), lightxml two (32768
# dense clusters, then the labels)
TREE_LEAF = 16
TREE_BRANCHING = {"cascadexml": lambda leaves: (16384, -(-leaves // 16384), TREE_LEAF),
                  "lightxml": lambda leaves: (32768, -(-leaves // 32768) * TREE_LEAF),
                  "xr-transformer": lambda leaves: (16384, -(-leaves // 16384), TREE_LEAF)}


def tree_head(args, table_dtype: str, method: str) -> dict:
    """A tree head's rehearsal (module docstring): ``method``'s network over ``--labels``
    labels with a one-layer ``--hidden``-wide BERT encoder (vocabulary 1024, 32 tokens),
    its shortlist tables (every level but the first) in ``table_dtype`` with row-wise
    Adagrad updates (:mod:`jxmc.nn.sparse_rows`), level 1 and the encoder on AdamW."""
    import math

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jxmc.models.transformer import cascadexml, lightxml, plan, xr_transformer
    from jxmc.nn import sparse_rows
    from jxmc.nn.encoder import BertConfig, init_params

    module = {"cascadexml": cascadexml, "lightxml": lightxml,
              "xr-transformer": xr_transformer}[method]
    L, h, n, seq = args.labels, args.hidden, args.batch, 32
    branching = TREE_BRANCHING[method](math.ceil(L / TREE_LEAF))
    depth = len(branching)
    sizes = [math.prod(branching[:t]) for t in range(1, depth + 1)]
    bert = BertConfig(vocab_size=1024, hidden_size=h, num_hidden_layers=1,
                      num_attention_heads=12, intermediate_size=h, max_position_embeddings=seq)
    config = module.Config(max_len=seq, head_update="rowwise-adagrad", head_dtype=table_dtype)
    spec = module.make_spec(config, bert, branching)
    # the last phase: every level (cascadexml, lightxml), the leaf level alone with the
    # others frozen (xr-transformer's last phase, where the table is largest)
    phases = module.RECIPE.phases(depth)
    phase = len(phases) - 1
    f32, low = jnp.float32, jnp.dtype(table_dtype)
    width = h * len(spec.layers[0]) or h  # xr-transformer: the pooled output (no layers)

    def table(K, w, dtype):
        return {"w": jax.ShapeDtypeStruct((K, w), dtype), "b": jax.ShapeDtypeStruct((K,), f32)}

    heads = {"level_1": table(sizes[0], width, f32)}
    if method == "lightxml":
        d = config.hidden_dim
        heads["level_2"] = {**table(sizes[1], d, low), "proj_w": jax.ShapeDtypeStruct((width, d), f32),
                            "proj_b": jax.ShapeDtypeStruct((d,), f32)}
    else:
        heads.update({f"level_{t}": table(K, h, low) for t, K in enumerate(sizes[1:], 2)})
    enc = jax.eval_shape(lambda: init_params(bert, jax.random.PRNGKey(0)))
    shapes = {"encoder": enc, "heads": heads}
    names = tuple(heads)
    plan_ = plan.phase_plan(config, spec, np.zeros(sizes[-1], np.int32), names, phases, 1)
    state_shape = jax.eval_shape(lambda prm: plan_.start(prm, phase, 0), shapes)
    i32 = jnp.int32
    batch_shape = {"ids": jax.ShapeDtypeStruct((n, seq), i32),
                   "mask": jax.ShapeDtypeStruct((n, seq), i32),
                   "valid": jax.ShapeDtypeStruct((n,), jnp.bool_),
                   "pos": tuple(jax.ShapeDtypeStruct((n, args.positives), i32)
                                for _ in range(depth))}
    step = plan_.step(phase, state_shape)
    jitted = getattr(step, "jitted", step)
    t0 = time.perf_counter()
    compiled = jitted.lower(state_shape, batch_shape).compile()
    compile_s = time.perf_counter() - t0
    memd, peak_b = _memory(compiled)
    cost = _cost(compiled)
    # the encoder's share: its parameters and AdamW's two moments (its activations are
    # counted in the head's temporaries)
    enc_b = 3 * sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(enc))
    table_b = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(
        sparse_rows.split_tables(shapes, sparse_rows.shortlist_levels(heads))[1]))
    need = peak_b / GIB + 1.0
    avail = _mem_available_gib()
    if not avail >= need:
        raise SystemExit(f"bench_heads_scale: needs ~{need:.1f} GiB free, {avail:.1f} GiB available")

    def make_state(key):  # inside jit: only the state itself is allocated
        leaves, tree = jax.tree_util.tree_flatten(shapes)
        keys = jax.random.split(key, len(leaves))
        vals = [jnp.zeros(s.shape, s.dtype) if s.dtype != f32  # no f32 copy of a big table
                else 0.02 * jax.random.normal(k, s.shape, f32) for k, s in zip(keys, leaves,
                                                                                strict=True)]
        return plan_.start(jax.tree_util.tree_unflatten(tree, vals), phase, 0)

    state = jax.jit(make_state)(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    leaf = rng.integers(0, sizes[-1], (n, args.positives))
    pos = []
    for t in range(1, depth + 1):  # each point's positive nodes at level t, -1 padded
        per = math.prod(branching[t:])
        level = np.full((n, args.positives), -1, np.int32)
        for i in range(n):
            u = np.unique(leaf[i] // per)
            level[i, :u.size] = u
        pos.append(jnp.asarray(level))
    batch = {"ids": jnp.asarray(rng.integers(0, 1024, (n, seq)), i32),
             "mask": jnp.ones((n, seq), i32), "valid": jnp.ones(n, bool), "pos": tuple(pos)}
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(state)
        times.append(round(time.perf_counter() - t, 2))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step_s = max(cost["flops"] / H200_FLOPS, cost["bytes"] / H200_BYTES)
    steps_epoch = -(-args.train_points // n)
    head_b = peak_b - enc_b
    return {
        "head": method, "labels": L, "hidden": h, "batch": n, "table_dtype": table_dtype,
        "step_peak_head_gib": round(head_b / GIB, 3), "goal_gib": GOAL_GIB[table_dtype],
        "encoder_gib": round(enc_b / GIB, 3), "peak_rss_gib": round(rss / GIB, 3),
        "projected_h200_step_ms": round(step_s * 1e3, 3),
        "meets_goal": head_b / GIB <= GOAL_GIB[table_dtype],
        "branching": list(branching), "level_sizes": sizes, "head_update": "rowwise-adagrad",
        "phase": f"{phase + 1} of {len(phases)} (levels {list(phases[phase])} trained)",
        "encoder": f"BERT, 1 layer, {h} wide, vocabulary 1024, {seq} tokens (random)",
        "input": "random token ids", "positives_per_point": args.positives,
        "table_gib": round(table_b / GIB, 3), "memory_analysis": memd,
        "step_peak_gib": round(peak_b / GIB, 3),
        "temp_gib": round(memd["temp_size_in_bytes"] / GIB, 4),
        "cost_whole_step_xla": cost, "flops": cost["flops"], "bytes": cost["bytes"],
        "projected_h200_epoch_s": round(step_s * steps_epoch, 1),
        "steps_per_epoch": steps_epoch, "train_points": args.train_points,
        "cpu_compile_s": round(compile_s, 1), "cpu_step_s": times,
        "final_loss": float(metrics["loss"]),
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
             "| head | labels | hidden | batch | table | step peak (GiB) | goal (GiB) | temp (GiB) "
             "| peak RSS (GiB) | FLOPs/step | bytes/step | H200 step (ms, projected) | Amazon-3M "
             "epoch (s, projected) |", "|" + "---|" * 13]
    for r in res["heads"]:
        lines.append(f"| {r['head']} | {r['labels']:,} | {r['hidden']} | {r['batch']} | "
                     f"{r['table_dtype']} | {r['step_peak_head_gib']} | {r['goal_gib']} | "
                     f"{r['temp_gib']} | "
                     f"{r['peak_rss_gib']} | {r['flops']:.3g} | {r['bytes']:.3g} | "
                     f"{r['projected_h200_step_ms']} | {r['projected_h200_epoch_s']} |")
    flat = [r for r in res["heads"] if r["head"] == "elmo-flat"]
    tree = [r for r in res["heads"] if r["head"] != "elmo-flat"]
    lines.append("")
    if flat:
        lines.append("elmo-flat: the head's step alone, its input random 768-wide unit embeddings "
                     "(no encoder; encoder_gib 0); FLOPs and bytes from XLA's cost analysis of one "
                     "chunk times the chunks (XLA counts a loop body once in the whole step's "
                     "analysis).")
    if tree:
        lines.append("Tree heads: the method's whole train step (its last phase) with a one-layer "
                     "BERT encoder (random token ids, 32 tokens), shortlist tables in the table "
                     "dtype with row-wise Adagrad row updates, level 1 and the encoder on AdamW; "
                     "step peak of the head = XLA's step peak less the encoder's parameters and "
                     "AdamW moments (" + ", ".join(f"{r['head']} {r['encoder_gib']} GiB"
                                                   for r in tree[:1]) + "); FLOPs and bytes "
                     "from XLA's cost analysis of the whole step; branching "
                     + "; ".join(sorted({f"{r['head']} {tuple(r['branching'])}" for r in tree}))
                     + ".")
    lines += ["", "Projection: max(FLOPs / 788e12, bytes / 4.3e12). CPU step times (shared "
              "machine, not a timing): "
              + "; ".join(f"{r['head']} ({r['table_dtype']}) {r['cpu_step_s']} s"
                          for r in res["heads"]) + "."]
    if res.get("not_included"):
        lines.append("Not run here: " + ", ".join(res["not_included"]) + ".")
    with atomic_write(os.path.join(out, "heads_scale.md")) as f:
        f.write("\n".join(lines) + "\n")


HEADS = {"elmo-flat": elmo_flat,
         **{m: functools.partial(tree_head, method=m) for m in TREE_BRANCHING}}
"""Head rehearsals: ``name -> fn(args, table_dtype) -> dict`` (:data:`KEYS` first)."""


def _child(args) -> int:
    head, dtype = args.child.split(":")
    r = HEADS[head](args, dtype)
    print(MARK + json.dumps(r), flush=True)
    return 0


def main(argv=None) -> int:
    args = _args(argv)
    if args.child:
        return _child(args)
    provenance.require_clean(args.allow_dirty, "bench_heads_scale.py")
    given = sys.argv[1:] if argv is None else list(argv)
    record = provenance.record("python experiments/bench_heads_scale.py " + " ".join(given))
    heads = args.heads or list(HEADS)
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise SystemExit(f"bench_heads_scale: unknown heads {unknown}; known: {list(HEADS)}")
    results = []
    for head in heads:
        for dtype in args.table_dtype:
            # a process per run: its own peak RSS, no table left over from the last one
            proc = subprocess.run([sys.executable, __file__, *given, "--child", f"{head}:{dtype}"],
                                  capture_output=True, text=True, cwd=REPO)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
            if proc.returncode or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                raise SystemExit(f"bench_heads_scale: {head} ({dtype}) failed: {tail[0]}")
            r = json.loads(lines[-1][len(MARK):])
            print(json.dumps({k: r[k] for k in KEYS}), flush=True)
            results.append(r)
    write({"record": record, "heads": results,
           "not_included": [h for h in HEADS if h not in heads]}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
