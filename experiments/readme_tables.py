"""The README's result tables, generated from ``experiments/results/`` (never pasted).

Usage (from the repository root)::

    python experiments/readme_tables.py           # rewrites README.md's generated blocks
    python experiments/readme_tables.py --check   # exit 1 when README.md differs from the results

Each generated block of ``README.md`` sits between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->``; :data:`TABLES` maps ``NAME`` to the function that
writes it from the JSON files in ``experiments/results/``.  Every block names the
date and commit of the runs behind it, and marks figures made on a tree with
uncommitted changes (so not reproducible from a commit as they stand) as such.
``tests/test_readme.py`` fails when the README differs from what this script
would write.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
README = os.path.join(REPO, "README.md")
DATASETS = ("bibtex", "delicious", "debtags", "debian-deps")
sys.path.insert(0, os.path.join(HERE, "harness"))
from report import _num as n2  # noqa: E402  (the harness's number formats, one place)
from report import _sig as sig  # noqa: E402

sys.path.insert(0, HERE)
from transformers_cpu import label as trf_label  # noqa: E402  (how its rows are named)

BLOCK = re.compile(r"(<!-- results:([a-z0-9-]+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)

# Published figures (P@1/3/5, %), Extreme Classification Repository, BoW features: other
# features than ours, quoted for orientation only (../shared/PEERS.md).
PUBLISHED = {
    ("bibtex", "Parabel"): (64.53, 38.56, 27.94), ("bibtex", "LEML"): (62.54, 38.41, 28.21),
    ("bibtex", "CPLST"): (62.38, 37.84, 27.62),
    ("delicious", "Parabel"): (67.44, 61.83, 56.75), ("delicious", "LEML"): (65.67, 60.55, 56.08),
    ("delicious", "CPLST"): (65.31, 59.95, 55.31),
    ("bibtex", "CS"): (58.87, 33.53, 23.72), ("delicious", "CS"): (61.36, 56.46, 52.07),
}


def load(name: str, folder: str = RESULTS) -> dict | None:
    """``results/NAME.json`` or ``None`` when absent."""
    path = os.path.join(folder, name + ".json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def when(date: str, commit: str, dirty: bool) -> str:
    """``date, commit `abc`` with a warning when the tree was dirty."""
    text = f"{date}, commit `{commit[:7]}`"
    if dirty:
        text += " (**uncommitted tree: not reproducible from that commit as it stands**)"
    return text


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


# ------------------------------------------------------------------------------------ tables


def side_by_side(folder: str = RESULTS) -> list[str]:
    """jxmc xr-linear (and ovr) vs PECOS XR-Linear vs napkinXC PLT, from ``<dataset>.json``."""
    seeds = load("seeds", folder) or {}
    spread = seeds.get("spread", {})
    rows, runs = [], {}
    for ds in DATASETS:
        res = load(ds, folder)
        if res is None:
            continue
        for key in ("jxmc:xr-linear", "pecos:xr-linear", "napkinxc:plt", "jxmc:ovr"):
            e = res["results"].get(key)
            if not e or e.get("status") != "ok":
                continue
            m, t = e["metrics"], e["times"]
            run = e["run"]
            runs.setdefault((run["date"], run["git_commit"], run["git_dirty"]), []).append(
                f"{ds} {e['label']}")
            label = f"jxmc `{key.split(':')[1]}`" if key.startswith("jxmc") else e["label"]
            s = spread.get(ds, {}).get(key)
            p1 = n2(m["P@1"]) + (f" ({s['P@1']['min']:.2f}–{s['P@1']['max']:.2f})" if s else "")
            rows.append([ds, label, p1, n2(m["P@3"]), n2(m["P@5"]), n2(m["PSP@5"]),
                         sig(t["train_total_s"]), sig(e["memory"]["peak_rss_mb"]),
                         sig(e["model_bytes"] / 2**20), sig(t["predict_batch_ms_per_query"]),
                         sig(t["predict_one_ms_per_query"])])
    if not rows:
        return ["(no results yet: run `python experiments/bench_xr_linear.py`)"]
    m = next(load(ds, folder) for ds in DATASETS if load(ds, folder))["run"]["machine"]
    out = [f"Machine: {m['cpu_model']}, {m['cpus']} cores, {m['ram_gib']:.0f} GiB RAM, no "
           "accelerator; each system in its own process with 2 threads, one after another. "
           "Metrics in % on the test split; P@1 with its range over "
           f"{seeds.get('n_seeds', 3)} seeds in brackets where `experiments/seeds.py` ran "
           "(the figure itself is seed 0's); \"featurise + train s\": the loader's featurisation "
           "plus training, jxmc's XLA compilation included, cold (no persistent compile cache); "
           "peak MiB: each system's own process's resident-set peak (VmHWM).", ""]
    out += table(["dataset", "system", "P@1", "P@3", "P@5", "PSP@5", "featurise + train s",
                  "peak MiB", "model MiB", "predict ms/q batched", "predict ms/q one at a time"],
                 rows)
    warm = []
    for ds in DATASETS:
        res = load(ds, folder)
        e = (res or {}).get("results", {}).get("jxmc:xr-linear") or {}
        w = e.get("warm")
        if isinstance(w, dict) and "train_total_s" in w:
            warm.append(f"{ds} {sig(w['train_total_s'])} s (cold {sig(e['times']['train_total_s'])})")
    if warm:
        out += ["", "jxmc `xr-linear` with a warm persistent compile cache (a new process reading "
                "what an earlier one compiled, as a second `jxmc train` on the same shapes does), "
                "featurise + train: " + ", ".join(warm) + "."]
    out += ["", "Runs: " + "; ".join(
        f"{when(d, c, dirty)}: {', '.join(sorted(set(x.split(' ')[0] for x in who)))}"
        for (d, c, dirty), who in sorted(runs.items()))
        + ". Command: `python experiments/bench_xr_linear.py --data ../shared/data/{bibtex,delicious,"
          "debtags,debian-deps}` (and `--method ovr --systems jxmc` for the ovr rows); full tables, "
          "warm-cache times and compile times in `experiments/results/README.md`."]
    return out


def seed_spread(folder: str = RESULTS) -> list[str]:
    """Mean and range over seeds of P@1/3/5 and PSP@5, from ``seeds.json``."""
    res = load("seeds", folder)
    if res is None:
        return ["(not run yet: `python experiments/seeds.py`)"]
    rows = []
    for ds in DATASETS:
        for s in res["spread"].get(ds, {}).values():
            cells = [ds, s["label"]]
            for q in ("P@1", "P@3", "P@5", "PSP@5"):
                cells.append(f"{s[q]['mean']:.2f} [{s[q]['min']:.2f}, {s[q]['max']:.2f}]")
            rows.append(cells)
        gap = res.get("gap", {}).get(ds)
        if gap:
            rows.append([ds, "jxmc − PECOS, P@1", f"{gap['mean']:+.2f} [{gap['min']:+.2f}, "
                         f"{gap['max']:+.2f}]", "", "", ""])
    out = [f"Seeds {', '.join(map(str, res['seeds']))} of every system (jxmc's k-means and "
           "solver order, PECOS's k-means, napkinXC's tree): mean [min, max] in %; "
           f"{when(res['date'], res['git']['commit'], res['git']['dirty'])}; "
           "`python experiments/seeds.py`. jxmc and PECOS give the same model for the same seed on "
           "one machine; napkinXC with 2 threads need not (its seed-0 figures in the table above, "
           "from another run, can differ from the ones here by about 0.1).", ""]
    return out + table(["dataset", "system", "P@1", "P@3", "P@5", "PSP@5"], rows)


def other_methods(folder: str = RESULTS) -> list[str]:
    """Tree ensembles, disentanglement, label embeddings and the transformer methods."""
    rows, notes = [], []
    dis = load("disentanglement", folder)
    emb = load("label_embedding", folder)
    marks = {}

    def mark(date, git) -> str:
        """A footnote mark per (commit, dirty) pair; the note gives the dates of its runs."""
        key = (git["commit"], bool(git.get("dirty")))
        if key not in marks:
            marks[key] = (f"[r{len(marks) + 1}]", [])
        if date not in marks[key][1]:
            marks[key][1].append(date)
        return marks[key][0]

    for ds in DATASETS:
        for r in (dis or {}).get("runs", []):
            if r["dataset"] != ds or r["run"] in ("parabel, 1 tree", "parabel, l2-hinge",
                                                   "bonsai, 1 tree"):
                continue
            g = r.get("git", dis["git"])
            name = {"parabel": "`parabel` (3 trees)", "bonsai": "`bonsai` (3 trees)",
                    "xr-linear, lambda=1": "`xr-linear` (λ = 1)",
                    "xr-linear, lambda=2": "`xr-linear --clusters-per-label 2`",
                    "xr-linear, lambda=2, copy_fraction=0.25":
                        "`xr-linear --clusters-per-label 2 --set copy_fraction=0.25`"}.get(r["run"],
                                                                                        r["run"])
            rows.append([ds, "jxmc " + name + " " + mark(r.get("date", dis["date"]), g),
                         n2(r["P@1"]), n2(r["P@3"]), n2(r["P@5"]), n2(r["PSP@5"]),
                         sig(r["train_s"])])
        for r in (emb or {}).get("results", []):
            if r["dataset"] != ds:
                continue
            g = emb.get("git", {"commit": "unknown", "dirty": True})
            rows.append([ds, f"jxmc `{r['method']}` " + mark(emb.get("date", "date not recorded"), g),
                         n2(r["P@1"]), n2(r["P@3"]), n2(r["P@5"]), n2(r["PSP@5"]),
                         sig(r["fit_s_cold"])])
        cs = load("cs", folder)
        for r in (cs or {}).get("results", []):
            if r["dataset"] != ds:
                continue
            what = f"`cs` (m = {r['m_used']})"
            rows.append([ds, f"jxmc {what} " + mark(cs["date"], cs["git"]), n2(r["P@1"]),
                         n2(r["P@3"]), n2(r["P@5"]), n2(r["PSP@5"]), sig(r["fit_s"])])
        for (d, system), p in PUBLISHED.items():
            if d == ds:
                rows.append([ds, f"{system}, published ‡", n2(p[0]), n2(p[1]), n2(p[2]), "–", "–"])
        trf = load("transformers_cpu" if ds == "debtags" else f"transformers_cpu_{ds}", folder)
        if trf:
            for r in trf["runs"]:
                ep = r.get("epochs", 1)
                rows.append([ds, f"jxmc `{trf_label(r)}`, CPU smoke scale"
                             + (f" ({ep} epochs)" if ep != 1 else "") + " "
                             + mark(r.get("date", trf["date"]), r.get("git", trf["git"])),
                             n2(r["P@1"]), n2(r["P@3"]), n2(r["P@5"]), n2(r["PSP@5"]),
                             sig(r["train_s"])])
    for (commit, dirty), (sym, dates) in marks.items():
        span = dates[0] if len(dates) == 1 else f"{min(dates)} to {max(dates)}"
        notes.append(f"{sym} {when(span, commit, dirty)}")
    out = ["Each row one `jxmc train` (times: training only, noisy: other jobs shared the 2 "
           "cores). Scripts: `experiments/disentanglement.py` (parabel, bonsai, xr-linear λ), "
           "`experiments/label_embedding.py` (plst, cplst, leml), `experiments/cs.py` (cs), "
           "`experiments/transformers_cpu.py` "
           "(the transformer methods, `elmo` and `attentionxml` at smoke scale: 1 epoch unless "
           "stated, 64 tokens).", ""]
    out += table(["dataset", "method", "P@1", "P@3", "P@5", "PSP@5", "train s"], rows)
    out += ["", "Runs: " + "; ".join(notes) + ". ‡ Extreme Classification Repository, BoW "
            "features (`../shared/PEERS.md`): other features than ours."]
    return out


def mesh(folder: str = RESULTS) -> list[str]:
    """XR-Linear on a device mesh, from ``mesh_debian_deps.json``."""
    r = load("mesh_debian_deps", folder)
    if r is None:
        return ["(not run yet: `python experiments/mesh_debian_deps.py --fresh`)"]
    mem = r["memory"]
    dirty = r["tree_dirty"] or not r.get("all_steps_ran_now", False)
    return [f"{r['dataset']} on `{r['mesh']}` ({r['devices']} fake CPU devices): "
            f"{'a bit-identical model' if r['models_bit_identical'] else 'a different model'}, "
            f"the same top-10 lists for {100 * r['same_top10_lists']:.2f}% of the test points, "
            f"P@1 {r['precision']['mesh']['P@1']:.2f} on the mesh vs {r['precision']['one']['P@1']:.2f} "
            f"on one device, {mem['mesh_max_bytes_per_device'] / 2**20:.0f} MiB of rankers per "
            f"device instead of {mem['one_device_bytes'] / 2**20:.0f} MiB "
            f"({when(r['date'], r['commit'], dirty)}; `python experiments/mesh_debian_deps.py "
            "--fresh`, `experiments/results/mesh_debian_deps.md`)."]


def scale(folder: str = RESULTS) -> list[str]:
    """Label tables of 1 M and 3 M labels on a mesh, from ``scale.json``."""
    r = load("scale", folder)
    if r is None:
        return ["(not run yet: `python experiments/bench_scale.py`)"]
    rows = []
    for x in r["runs"]:
        mesh_text = ",".join(f"{k}={v}" for k, v in x["mesh"].items())
        rows.append([f"{x['labels']:,}", mesh_text, str(x["hidden"]),
                     f"{x['measured']['state_bytes_per_device_shards'] / 2**20:.0f}",
                     f"{x['measured']['step_temp_bytes'] / 2**20:.0f}",
                     sig(x["times"]["step_s_median"]), sig(x["times"]["predict_ms_per_query"])])
    return [f"One label level trained on a shortlist (f32, Adam), {r['args']['batch']} points a step, "
            f"on {r['args']['devices']} fake CPU devices ({r['machine']['cpu']}); "
            f"{when(r['date'], r['commit'], r['tree_dirty'])}; `python experiments/bench_scale.py`, "
            "`experiments/results/scale.md`.", ""] + table(
        ["labels", "mesh", "h", "train state MiB/device", "step temp MiB/device", "step s",
         "predict ms/query"], rows)


def serve(folder: str = RESULTS) -> list[str]:
    """The prediction service's load test, from ``serve.json``."""
    r = load("serve", folder)
    if r is None:
        return ["(not run yet: `python experiments/bench_serve.py`)"]
    rows = []
    for name, x in r["phases"].items():
        lat = x["latency_ms"]
        rows.append([name, str(x["clients"]), str(x["requests"]), f"{x['throughput_rps']:.0f}",
                     f"{lat['p50']:.1f}", f"{lat['p99']:.1f}", str(x["errors"]),
                     f"{x['served']['points'] / max(x['served']['batches'], 1):.2f}",
                     "yes" if x["answers_equal_jxmc_predict"] else "NO"])
    return [f"`jxmc serve` of {r['method']} on {r['dataset']}, one test document per request, "
            f"k = {r['args'].get('k', 10)}, a new connection per request (urllib), on the loopback of "
            f"{r['machine']['cpu']} ({r['machine']['cores']} cores); ready {r['server']['start_to_ready_s']:.0f} s "
            f"after start; {when(r['date'], r['git']['commit'], r['git']['dirty'])}; "
            "`python experiments/bench_serve.py`:", ""] + table(
        ["phase", "clients", "requests", "req/s", "p50 ms", "p99 ms", "errors",
         "points per jitted call", "answers = `jxmc predict`"], rows)


def calibration(folder: str = RESULTS) -> list[str]:
    """ECE@k and Brier@k before and after calibration, from ``calibration.json``."""
    r = load("calibration", folder)
    if r is None:
        return ["(not run yet: `python experiments/calibration.py`)"]
    rows = []
    for d in r["results"]:
        for name in ("raw", "isotonic", "platt"):
            m = d[name]
            rows.append([d["dataset"], name] + [f"{100 * m[f'ECE@{k}']:.2f}" for k in (1, 5, 10)]
                        + [f"{100 * m[f'Brier@{k}']:.2f}" for k in (1, 5, 10)]
                        + [f"{100 * m['P@1']:.2f}"])
    return [f"xr-linear, {r.get('folds', 3)}-fold cross-fitted on the training split, scored on "
            f"the test split, in %; {when(r['date'], r['git']['commit'], r['git']['dirty'])}; "
            "`python experiments/calibration.py` (reliability diagram: "
            "`experiments/results/calibration_reliability.png`):", ""] + table(
        ["dataset", "scores", "ECE@1", "ECE@5", "ECE@10", "Brier@1", "Brier@5", "Brier@10", "P@1"],
        rows)


def simd(folder: str = RESULTS) -> list[str]:
    """The same ``jxmc train`` with this CPU's SIMD kernels limited, from ``simd.json``."""
    r = load("simd", folder)
    if r is None:
        return ["(not run yet: `python experiments/simd.py`)"]
    rows = []
    for x in r["runs"]:
        env = " ".join(f"`{k}={v}`" for k, v in x["env"].items()) or "as installed"
        rows.append([x["variant"], env, n2(x["P@1"]), n2(x["P@3"]), n2(x["P@5"]), n2(x["PSP@5"]),
                     ", ".join(f"{lv['weights']:,}" for lv in x["levels"]) or "not recorded"])
    return [f"`jxmc train --data ../shared/data/{r['dataset']}` four times on {r['machine']['cpu']} "
            f"({r['machine']['simd']}), {when(r['date'], r['git']['commit'], r['git']['dirty'])}; "
            "`python experiments/simd.py`:", ""] + table(
        ["variant", "environment", "P@1", "P@3", "P@5", "PSP@5", "ranker weights per level"], rows)


def first_answer(folder: str = RESULTS) -> list[str]:
    """``jxmc predict`` on a few queries from process start, from ``first_answer.json``."""
    r = load("first_answer", folder)
    if r is None:
        return ["(not run yet: `python experiments/bench_first_answer.py`)"]
    names = {"import jax": '`python -c "import jax"` (the floor)',
             "cold": "`jxmc predict`, compile cache off", "warm": "`jxmc predict`, warm compile cache"}
    rows = []
    for name, w in r["ways"].items():
        ws, cs = w["wall_s"], w["cpu_s"]
        rows.append([names.get(name, name), f"{ws['median']:.2f} ({ws['min']:.2f}–{ws['max']:.2f})",
                     f"{cs['median']:.2f}"])
    data = os.path.basename(r["data"].rstrip("/"))
    return [f"`jxmc predict` of {r['queries']} {data} test texts with a saved xr-linear model, from "
            f"process start to exit (every answer written), {r['repeats']} fresh processes each "
            f"(median and range), load average {r['load_avg_start'][0]} at start; "
            f"{when(r['date'], r['git']['commit'], r['git']['dirty'])}; "
            "`python experiments/bench_first_answer.py`:", ""] + table(
        ["process", "wall s", "CPU s"], rows)


TABLES: dict[str, Callable[[str], list[str]]] = {
    "first-answer": first_answer,
    "serve": serve,
    "calibration": calibration,
    "simd": simd,
    "side-by-side": side_by_side,
    "seeds": seed_spread,
    "other-methods": other_methods,
    "mesh": mesh,
    "scale": scale,
}


def render(text: str, folder: str = RESULTS) -> str:
    """``text`` (the README) with every generated block rewritten from ``folder``.

    Raises:
      KeyError: a block names a table that :data:`TABLES` does not have.
    """
    def fill(m: re.Match) -> str:
        name = m.group(2)
        body = "\n".join(TABLES[name](folder))
        return f"{m.group(1)}{body}\n{m.group(4)}"

    return BLOCK.sub(fill, text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when README.md is stale")
    p.add_argument("--readme", default=README)
    args = p.parse_args(argv)
    with open(args.readme, encoding="utf-8") as f:
        old = f.read()
    new = render(old)
    if args.check:
        if new != old:
            print(f"{args.readme}: generated tables differ from experiments/results/; run "
                  "python experiments/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        tmp = args.readme + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(tmp, args.readme)
        print(f"rewrote the generated blocks of {os.path.relpath(args.readme, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
