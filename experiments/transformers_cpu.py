"""The neural methods on a CPU: one epoch (``--epochs N``) at 64 tokens (issues 4, 15, 16, 18).

Command (from the repository root; hours on 2 CPU cores):

    nice -n 19 python experiments/transformers_cpu.py [--data ../shared/data/debtags]
        [--methods cascadexml lightxml xr-transformer x-transformer elmo attentionxml]
        [--epochs 1] [--set KEY=VALUE ...] [--work /tmp/jxmc-transformers-cpu] [--note TEXT]

Each method is one ``jxmc train --data DIR --method M --epochs N --max-len 64
--model-dir WORK/M`` process (``attentionxml``: N epochs per tree level, 64 words),
its output kept in ``WORK/M.log``, then ``jxmc evaluate --json`` (or the metrics table
that ``jxmc train`` printed on the test split, from the log).  A model directory that
already holds a finished model is only evaluated, and an interrupted one resumes from
its last checkpoint (``jxmc train``'s own resume), so the script can be run again until
every method is done; ``train_seconds`` is then that of the process that finished the training
(the epochs it resumed after are in the log).  Writes
``experiments/results/transformers_cpu.json`` and ``.md`` with the machine, the
date, the commit, the commands, the epoch lines (seconds, sequences per second)
and P@1/3/5 next to XR-Linear's on the same features.  The results file of a
dataset (``transformers_cpu.*`` for debtags, ``transformers_cpu_<dataset>.*``
otherwise) keeps the rows of the methods not run this time, each row with the
commit, the dirty flag and the date of the invocation that made it, so one
method can be re-run without losing the others.

A few epochs at 64 tokens on a CPU is a smoke-scale setting: the configurations meant
for a GPU are in ``experiments/configs/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "harness"))
import provenance  # noqa: E402
from disentanglement import git_state, machine, provenance_lines, write_atomic  # noqa: E402

METHODS = ("cascadexml", "lightxml", "xr-transformer", "x-transformer", "elmo", "attentionxml")
KEYS = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5")
# XR-Linear (PECOS) on the same TF-IDF features, P@1/3/5 (../shared/PEERS.md)
PECOS = {"debtags": (87.12, 62.61, 47.77), "debian-deps": (69.78, 49.60, 38.96)}
EPOCH_LINE = re.compile(r"^\S+( (phase|level) \d+/\d+)?: epoch \d+/\d+ .*seq/s.*$", re.M)


def _jxmc(argv: list[str], log: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jxmc", *argv]
    env = provenance.cold_env()  # cold: no persistent compile cache
    if log is None:
        return subprocess.run(cmd, capture_output=True, text=True, env=env)
    with open(log, "a") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, env=env)


def _table(text: str) -> dict | None:
    """The last metrics table that ``jxmc train`` printed (fractions, like ``--json``)."""
    rows = {}
    for name in ("P", "nDCG", "PSP"):
        found = re.findall(rf"^{name}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", text, re.M)
        if not found:
            return None
        for k, v in zip((1, 3, 5), found[-1], strict=True):
            rows[f"{name}@{k}"] = float(v) / 100
    return rows


def _key(r: dict) -> tuple:
    """A row's identity: its method and its ``--set`` overrides."""
    return r["method"], tuple(r.get("set", ()))


def label(r: dict) -> str:
    """The method and its overrides, as the tables name a row."""
    return " ".join([r["method"], *(f"--set {o}" for o in r.get("set", ()))])


def run_one(data: str, work: Path, method: str, epochs: int = 1, sets: tuple = ()) -> dict:
    name = "_".join([method, *(re.sub(r"\W+", "-", o) for o in sets)])
    model_dir = work / name
    log = work / f"{name}.log"
    train = ["train", "--data", data, "--method", method, "--epochs", str(epochs),
             "--max-len", "64", "--model-dir", str(model_dir), "--no-progress",
             *(a for o in sets for a in ("--set", o))]
    if not (model_dir / "jxmc_model.json").exists():
        r = _jxmc(train, log)
        if r.returncode != 0:
            raise SystemExit(f"jxmc {shlex.join(train)} failed; see {log}")
    metrics = _table(log.read_text()) if log.exists() else None
    if metrics is None:  # no table printed by jxmc train: evaluate the model directory
        ev = _jxmc(["evaluate", "--data", data, "--model-dir", str(model_dir), "--json"])
        if ev.returncode != 0:
            raise SystemExit(f"evaluate {model_dir} failed:\n{ev.stderr[-2000:]}")
        metrics = json.loads(ev.stdout)
    manifest = json.loads((model_dir / "jxmc_model.json").read_text())
    lines = [m.group(0) for m in EPOCH_LINE.finditer(log.read_text())] if log.exists() else []
    row = {"method": method, "set": list(sets), "epochs": epochs,
           "command": "jxmc " + shlex.join(train),
           **{k: round(100 * metrics[k], 2) for k in KEYS},
           "train_s": manifest["train_seconds"], "epoch_lines": lines,
           "config": manifest["config"]}
    print(json.dumps({k: row[k] for k in ("method", "epochs", "P@1", "P@3", "P@5", "train_s")}),
          flush=True)
    return row


def _made(r: dict, result: dict) -> str:
    """Where a row comes from: this invocation, or the earlier one that made it."""
    g = r.get("git", result["git"])
    return (f"`{g['commit'][:12]}`" + (" dirty" if g["dirty"] else "")
            + ("" if r.get("date", result["date"]) == result["date"] else f", {r['date']}"))


def markdown(result: dict) -> str:
    name = result.get("dataset", "debtags")
    pecos = PECOS.get(name)
    lines = provenance_lines(result, f"Neural methods on {name}, CPU (no accelerator), "
                               "64 tokens")
    lines += [f"Note: {n}" for n in result["notes"]] + ([""] if result["notes"] else [])
    lines += ["Metrics in % on the test split. train s: `train_seconds` of the "
              "`jxmc train` process that finished the model (compilation included, TF-IDF and "
              "tokenisation excluded). "
              + (f"XR-Linear (PECOS, same TF-IDF features, `../shared/PEERS.md`): P@1/3/5 = "
                 f"{'/'.join(map(str, pecos))}. " if pecos else "")
              + "epochs: passes over the training set (per phase of xr-transformer, per tree "
              "level of attentionxml). made: the commit (dirty: with uncommitted changes) and, for "
              "a row kept from an earlier invocation, its date.", "",
              "| method | epochs | P@1 | P@3 | P@5 | nDCG@5 | PSP@5 | train s | P@1 vs XR-Linear "
              "| made |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["runs"]:
        vs = f"{r['P@1'] - pecos[0]:+.2f}" if pecos else "-"
        lines.append(f"| {label(r)} | {r.get('epochs', 1)} | {r['P@1']:.2f} | {r['P@3']:.2f} | "
                     f"{r['P@5']:.2f} | {r['nDCG@5']:.2f} | {r['PSP@5']:.2f} | "
                     f"{r['train_s']:.0f} | {vs} | "
                     f"{_made(r, result)} |")
    lines += ["", "Epoch lines (from each run's log):", ""]
    for r in result["runs"]:
        lines += [f"- {e}" for e in r["epoch_lines"]] or [f"- {label(r)}: (no log kept)"]
    lines += ["", "Commands (metrics: the table `jxmc train` printed on the test split, or "
              "`jxmc evaluate --data DIR --model-dir M --json` where its log has none):", ""]
    lines += [f"- `{r['command']}`" for r in result["runs"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "debtags"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--epochs", type=int, default=1, help="passes over the training set")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override of every method run (jxmc train --set); the "
                         "row is kept apart from the method's default one")
    ap.add_argument("--work", default="/tmp/jxmc-transformers-cpu")
    ap.add_argument("--out", default=str(REPO / "experiments" / "results"))
    ap.add_argument("--note", action="append", default=[], help="recorded in the results")
    provenance.add_arguments(ap)
    args = ap.parse_args()
    provenance.require_clean(args.allow_dirty, "transformers_cpu.py")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.data).resolve().name
    stem = "transformers_cpu" if name == "debtags" else f"transformers_cpu_{name}"
    result = {"command": "python experiments/transformers_cpu.py " + shlex.join(sys.argv[1:]),
              "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "git": git_state(), "dataset": name, "notes": args.note,
              "runs": []}
    earlier = out / f"{stem}.json"
    kept = []
    if earlier.exists():  # the rows of the methods not run now, with their own provenance
        old = json.loads(earlier.read_text())
        now = {(m, tuple(args.sets)) for m in args.methods}
        seen = {}  # one row per key (files written before the fix below held some twice)
        for r in old.get("runs", []):
            if _key(r) not in now:
                seen.setdefault(_key(r), {"git": old["git"], "date": old["date"], **r})
        kept = list(seen.values())
        result["notes"] = [*old.get("notes", []), *args.note] if kept else args.note
    result["runs"] = kept
    for method in args.methods:
        row = {**run_one(args.data, work, method, args.epochs, tuple(args.sets)),
               "git": result["git"], "date": result["date"]}
        others = [r for r in result["runs"] if _key(r) != _key(row)]
        result["runs"] = sorted([*others, row],
                                key=lambda r: (METHODS.index(r["method"]), _key(r)))
        write_atomic(out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
        write_atomic(out / f"{stem}.md", markdown(result))


if __name__ == "__main__":
    main()
