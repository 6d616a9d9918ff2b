"""Why a figure moves between machines: one ``jxmc train``, with this CPU's SIMD kernels limited.

Usage (from the repository root; 4 trainings of the dataset, ~8 minutes for debian-deps)::

    python experiments/simd.py [--data ../shared/data/debian-deps]

The same command, the same versions, the same seed, run four times on this machine:

* ``default``: as installed;
* ``xla-avx2``: XLA's CPU code generator limited to AVX2 (``XLA_FLAGS=--xla_cpu_max_isa=AVX2``);
* ``numpy-avx2``: numpy's runtime-dispatched kernels limited to AVX2
  (``NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL"``: no AVX-512 kernels);
* ``both``: the two limits together, i.e. what a CPU without AVX-512 runs.

Writes ``experiments/results/simd.json`` / ``.md``: P@1/3/5, PSP@5 and the number
of ranker weights of each tree level (a different tree shows there first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "harness"))

import provenance  # noqa: E402

from jxmc.fileio import atomic_write  # noqa: E402

VARIANTS = {
    "default": {},
    "xla-avx2": {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"},
    "numpy-avx2": {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL"},
    "both": {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL"},
}
LEVEL = re.compile(r"level (\d+)/\d+ trained, (\d+) slots, (\d+) weights")


def run(data: str, variant: str, work: str) -> dict:
    env = {**provenance.cold_env(), **VARIANTS[variant]}
    model = os.path.join(work, variant)
    train = subprocess.run([sys.executable, "-m", "jxmc", "train", "--data", data, "--model-dir", model],
                           capture_output=True, text=True, env=env, cwd=REPO)  # the level lines
    if train.returncode != 0:
        raise SystemExit(f"simd.py: {variant}: jxmc train failed:\n{train.stderr[-2000:]}")
    ev = subprocess.run([sys.executable, "-m", "jxmc", "evaluate", "--data", data, "--model-dir", model,
                         "--json"], capture_output=True, text=True, env=env, cwd=REPO)
    if ev.returncode != 0:
        raise SystemExit(f"simd.py: {variant}: jxmc evaluate failed:\n{ev.stderr[-2000:]}")
    m = json.loads(ev.stdout)
    levels = [{"level": int(a), "slots": int(b), "weights": int(c)}
              for a, b, c in LEVEL.findall(train.stdout + train.stderr)]
    return {"variant": variant, "env": VARIANTS[variant],
            **{k: round(100 * m[k], 2) for k in ("P@1", "P@3", "P@5", "PSP@5")}, "levels": levels}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/debian-deps")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    provenance.add_arguments(p)
    args = p.parse_args(argv)
    provenance.require_clean(args.allow_dirty, "simd.py")
    rec = provenance.record("python experiments/simd.py " + " ".join(sys.argv[1:] if argv is None else argv))
    import numpy as np

    rec["numpy_simd"] = {k: v for k, v in np.__config__.CONFIG.get("SIMD Extensions", {}).items()}
    with tempfile.TemporaryDirectory(prefix="jxmc-simd-") as work:
        runs = []
        for v in args.variants:
            runs.append(run(args.data, v, work))
            print("simd.py: " + json.dumps(runs[-1]), flush=True)
    out = {**rec, "dataset": os.path.basename(os.path.normpath(args.data)), "runs": runs}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "simd.json")
    with atomic_write(path) as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    lines = [f"# {out['dataset']}: the same run with this CPU's SIMD kernels limited", "",
             f"Command: `{out['command']}`; {out['date']}; commit `{out['git']['commit'][:12]}`"
             + (" (uncommitted changes)" if out["git"]["dirty"] else "")
             + f"; {out['machine']['cpu']} ({out['machine']['simd']}).", "",
             "| variant | environment | P@1 | P@3 | P@5 | PSP@5 | weights per level |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        env = " ".join(f"`{k}={v}`" for k, v in r["env"].items()) or "as installed"
        lines.append(f"| {r['variant']} | {env} | {r['P@1']:.2f} | {r['P@3']:.2f} | {r['P@5']:.2f} | "
                     f"{r['PSP@5']:.2f} | {', '.join(str(x['weights']) for x in r['levels'])} |")
    with atomic_write(path[:-5] + ".md") as f:
        f.write("\n".join(lines) + "\n")
    print(f"simd.py: wrote {os.path.relpath(path, REPO)} and .md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
