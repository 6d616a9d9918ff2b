"""Re-runs every experiment whose figures the README quotes, then regenerates its tables.

Usage (from the repository root, at a commit with no uncommitted changes)::

    python experiments/reproduce.py --list              # what it runs, and the time each takes here
    python experiments/reproduce.py                     # every step run by default, in order
    python experiments/reproduce.py --only bench seeds  # some steps
    python experiments/reproduce.py --include transformers-cpu   # also the long ones

Each step is one committed script writing into ``experiments/results/`` with its
machine, date and commit; the last step is ``experiments/readme_tables.py``, which
rewrites the README's generated blocks from those files.  Steps marked *long* are
left out unless named by ``--include`` or ``--only``, and the README marks their
figures with the commit and date they were made at (so a reader sees which are
older than HEAD).  A failing step stops the run (exit status 1); the results files
of the steps before it are kept.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "harness"))

import provenance  # noqa: E402

DATA = "../shared/data"
FOUR = [f"{DATA}/{d}" for d in ("bibtex", "delicious", "debtags", "debian-deps")]

# name -> (argv after `python`, minutes on the 2-core CPU machine, long?, what it makes)
STEPS: dict[str, tuple[list[str], float, bool, str]] = {
    "bench": (["experiments/bench_xr_linear.py", "--data", *FOUR, "--compile-cache", "cold+warm"],
              15, False, "side-by-side table (jxmc, PECOS, napkinXC), cold and warm cache"),
    "bench-ovr": (["experiments/bench_xr_linear.py", "--data", *FOUR[:3], "--method", "ovr",
                   "--systems", "jxmc"], 3, False, "the ovr rows of the side-by-side table"),
    "seeds": (["experiments/seeds.py", "--seeds", "0", "1", "2"], 25, False,
              "seeds table (seeds 1 and 2; seed 0 is the bench step's)"),
    "label-embedding": (["experiments/label_embedding.py"], 3, False, "plst, cplst, leml rows"),
    "disentanglement": (["experiments/disentanglement.py", "--no-merge"], 25, False,
                        "parabel, bonsai and xr-linear λ rows"),
    "mesh": (["experiments/mesh_debian_deps.py", "--fresh"], 15, False, "the mesh sentence"),
    "scale": (["experiments/bench_scale.py"], 6, False, "the 1 M / 3 M label table"),
    "cs": (["experiments/cs.py"], 4, False, "the cs rows of the other-methods table"),
    "calibration": (["experiments/calibration.py"], 15, False,
                    "calibration table (debtags, debian-deps) and the reliability diagram"),
    "first-answer": (["experiments/bench_first_answer.py"], 4, False,
                     "jxmc predict's time to answer 10 debian-deps queries, cold and warm cache"),
    "serve": (["experiments/bench_serve.py", "--model-dir", "/tmp/jxmc-reproduce-serve"], 6, False,
              "the prediction service's load test (trains a debtags model first)"),
    "heads-scale": (["experiments/bench_heads_scale.py"], 30, True,
                    "the flat and tree heads at Amazon-3M's label count (needs ~7 GiB RAM free)"),
    "sparse-heads": (["experiments/sparse_heads.py", "--methods", "cascadexml,lightxml",
                      "--variants", "adam,rowwise-adagrad:bfloat16:0.03"], 5, False,
                     "sparse bf16 tree heads against f32/AdamW on a debtags subset"),
    "profile-xr-linear": (["experiments/profile_xr_linear.py", "--data", *FOUR[:3]], 4, False,
                          "where XR-Linear's training time goes, stage by stage"),
    "label-text": (["experiments/label_text.py"], 25, False,
                   "xr-linear with and without label texts on debian-deps"),
    "simd": (["experiments/simd.py"], 10, False,
             "the reproducibility table: debian-deps with numpy's / XLA's SIMD kernels limited"),
    "transformers-cpu": (["experiments/transformers_cpu.py"], 180, True,
                         "transformer rows at smoke scale (hours on 2 cores)"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="print the steps and exit")
    p.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps")
    p.add_argument("--include", nargs="+", choices=list(STEPS), default=[],
                   help="add these long steps")
    p.add_argument("--skip", nargs="+", choices=list(STEPS), default=[], help="leave these out")
    args = p.parse_args(argv)
    chosen = args.only or [n for n, s in STEPS.items() if not s[2] or n in args.include]
    chosen = [n for n in chosen if n not in args.skip]
    if args.list:
        for name, (cmd, minutes, long, what) in STEPS.items():
            flag = "long, off by default" if long else ("on" if name in chosen else "off")
            print(f"{name:18s} ~{minutes:>4.0f} min  [{flag}]  python {' '.join(cmd)}\n"
                  f"{'':18s} {what}")
        return 0
    provenance.require_clean(False, "reproduce.py")
    t0 = time.perf_counter()
    for name in chosen:
        cmd = [sys.executable, *STEPS[name][0]]
        print(f"reproduce.py: [{name}] {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=REPO, env=provenance.cold_env())
        print(f"reproduce.py: [{name}] exit {r.returncode} after {time.perf_counter() - t:.0f} s",
              flush=True)
        if r.returncode != 0:
            return 1
    r = subprocess.run([sys.executable, "experiments/readme_tables.py"], cwd=REPO)
    print(f"reproduce.py: done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
