"""Markdown tables from the harness's JSON results, and PEERS.md's reference numbers.

* :func:`dataset_markdown` -- ``results/<dataset>.md`` for one JSON file;
* :func:`aggregate_markdown` -- ``results/README.md`` over every JSON file present;
* :func:`read_peers_md` -- the table of ``../shared/PEERS.md`` as numbers, to
  print the harness's PECOS / napkinXC figures next to the reference ones.
"""

from __future__ import annotations

import glob
import json
import os

QUALITY = ("P@1", "P@3", "P@5", "nDCG@3", "nDCG@5", "PSP@1", "PSP@3", "PSP@5", "PSnDCG@5")

#: Order of the datasets in the aggregate table (others follow, alphabetically).
DATASET_ORDER = ("bibtex", "delicious", "debtags", "debian-deps")

#: PEERS.md's system names -> the harness's entry keys.
PEERS_MD_SYSTEMS = {"PECOS XR-Linear": "pecos:xr-linear", "napkinXC PLT": "napkinxc:plt"}


def _num(x, digits=2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and x != x:
        return "–"
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _sig(x) -> str:
    """Seconds / milliseconds with about three significant digits."""
    if x is None:
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def entry_order(key: str) -> tuple:
    system = key.split(":", 1)[0]
    return ({"jxmc": 0, "pecos": 1, "napkinxc": 2}.get(system, 3), key)


def dataset_order(name: str) -> tuple:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def quality_header(with_dataset: bool) -> list[str]:
    cols = (["dataset"] if with_dataset else []) + ["system"] + list(QUALITY)
    return ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]


def cost_header(with_dataset: bool) -> list[str]:
    cols = (["dataset"] if with_dataset else []) + [
        "system", "featurize s", "compile s", "train s (rest)", "train total s",
        "predict ms/q batched", "predict ms/q one at a time", "predict compile s",
        "peak MiB", "model MiB"]
    return ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]


def quality_row(entry: dict, dataset: str | None) -> str:
    m = entry.get("metrics") or {}
    cells = ([dataset] if dataset else []) + [entry["label"]]
    if entry.get("status") != "ok":
        why = str(entry.get("error_summary", "?")).replace("|", "\\|")
        cells += [f"failed: {why}"] + [""] * (len(QUALITY) - 1)
    else:
        cells += [_num(m.get(q)) for q in QUALITY]
    return "| " + " | ".join(cells) + " |"


def cost_row(entry: dict, dataset: str | None) -> str:
    cells = ([dataset] if dataset else []) + [entry["label"]]
    if entry.get("status") != "ok":
        return "| " + " | ".join(cells + ["failed"] + [""] * 8) + " |"
    t = entry["times"]
    jit = entry["system"] == "jxmc"
    cells += [
        _sig(t["featurize_s"]),
        _sig(t["compile_s"]) if jit else "–",
        _sig(t["train_rest_s"]),
        _sig(t["train_total_s"]),
        _sig(t["predict_batch_ms_per_query"]),
        _sig(t["predict_one_ms_per_query"]),
        _sig(t["predict_compile_s"]) if jit else "–",
        _sig(entry["memory"]["peak_rss_mb"]),
        _sig(entry["model_bytes"] / 2**20),
    ]
    return "| " + " | ".join(cells) + " |"


def warm_lines(results: list[tuple[str | None, dict]]) -> list[str]:
    """A table of the jxmc entries measured again with a warm persistent compile cache
    (``--compile-cache cold+warm``); empty when there are none."""
    rows = [(d, e) for d, e in results if isinstance(e.get("warm"), dict) and "train_s" in e["warm"]]
    if not rows:
        return []
    with_ds = any(d for d, _ in rows)
    cols = (["dataset"] if with_ds else []) + [
        "system", "cache", "compile s", "train total s", "predict compile s",
        "first one-at-a-time pass ms/q", "process wall s", "same predictions"]
    out = ["", "jxmc again, in a new process reading a persistent compile cache that an earlier "
           "process filled (`--compile-cache cold+warm`; the cold run has the cache off):", "",
           "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for d, e in rows:
        t, w = e["times"], e["warm"]
        for name, x in (("cold", {**t, "process_wall_s": t["process_wall_s"]}), ("warm", w)):
            cells = ([d] if with_ds else []) + [e["label"], name, _sig(x["compile_s"]),
                                                _sig(x["train_total_s"]), _sig(x["predict_compile_s"]),
                                                _sig(x["predict_one_first_ms_per_query"]),
                                                _sig(x["process_wall_s"]),
                                                "" if name == "cold" else
                                                ("yes" if w.get("same_predictions_as_cold") else "NO")]
            out.append("| " + " | ".join(cells) + " |")
    return out


def _machine_line(run: dict) -> str:
    m = run["machine"]
    return (f"{m['cpu_model']}, {m['cpus']} cores ({m['cpus_usable']} usable), "
            f"{m['ram_gib']:.0f} GiB RAM, {m['os']}; {run['threads']} threads per system")


def cost_notes(n_one: int | str = 200) -> list[str]:
    return [
        "featurize s: the jxmc loader, once per run, shared by every system (XC sets: parsing and "
        "row L2 normalisation; raw text: TF-IDF fit on train + transform of test).",
        "compile s: JAX tracing + lowering + XLA compilation during `fit` (jxmc only); train s (rest): "
        "the rest of the training wall time; train total s = featurize + compile + rest.",
        "predict ms/q: steady state (second pass) over the whole test set in one call (batched), and "
        f"over {n_one} test points one call each (one at a time; PECOS with 1 thread there), top 10; "
        "predict compile s: JAX compilation in the first passes, left out of the steady state.",
        "peak MiB: the system's own process's maximum resident set (Linux VmHWM, read by the process "
        "itself; older results used ru_maxrss, which carries the harness's peak), data loading included; "
        "model MiB: the saved model's files (featuriser excluded for every system).",
        "PSnDCG@k here is `jxmc.metrics`' (as napkinxc: each point's PSDCG divided by its "
        "IDCG(min(k, |y|)), then the sum over the sum of the best achievable); `../shared/PEERS.md` "
        "uses pyxclib's (the same without the per-point IDCG), recorded in the JSON as "
        "`PSnDCG@k_pyxclib`. The other metrics follow one convention.",
    ]


def dataset_markdown(res: dict) -> str:
    run = res["run"]
    d = res["data"]
    keys = sorted(res["results"], key=entry_order)
    lines = [
        f"# {res['dataset']} — jxmc vs PECOS XR-Linear vs napkinXC PLT",
        "",
        f"Written by `experiments/bench_xr_linear.py` on {run['date']} at commit "
        f"`{run['git_commit'][:12]}`{' (uncommitted changes)' if run.get('git_dirty') else ''}.",
        f"Machine: {_machine_line(run)}.",
        f"Data: `{d['source']}` ({d['layout']}), {d['n_train']:,} train / {d['n_test']:,} test points, "
        f"{d['n_features']:,} features, {d['n_labels']:,} labels ({d['n_labels_all']:,} with test-only ones); "
        f"propensity A={d['propensity_A']}, B={d['propensity_B']}.",
        "",
        "Metrics in %, on the test split, from `jxmc.metrics.evaluate` on each system's top 10:",
        "",
        *quality_header(False),
        *(quality_row(res["results"][k], None) for k in keys),
        "",
        "Costs:",
        "",
        *cost_header(False),
        *(cost_row(res["results"][k], None) for k in keys),
        *warm_lines([(None, res["results"][k]) for k in keys]),
        "",
        *("- " + n for n in cost_notes(run.get("n_one", 200))),
    ]
    older = [k for k in keys if res["results"][k].get("run", {}).get("run_id") != run["run_id"]]
    if older:
        lines.append("- From an earlier run of the harness (kept when only other systems were re-run): "
                     + ", ".join(f"{res['results'][k]['label']} ({res['results'][k]['run']['date']})"
                                 for k in older) + ".")
    ref = [k for k in keys if res["results"][k].get("peers_md")]
    if ref:
        lines += ["", "Against `../shared/PEERS.md` (reference − this run, points; PSnDCG@5 against this "
                  "run's `PSnDCG@5_pyxclib`, PEERS.md's convention, see above):", "",
                  "| system | " + " | ".join(QUALITY) + " |", "|" + " --- |" * (len(QUALITY) + 1)]
        for k in ref:
            e = res["results"][k]
            p = e["peers_md"]
            mine = {q: e["metrics"].get(q + "_pyxclib", e["metrics"].get(q)) if q.startswith("PSnDCG")
                    else e["metrics"].get(q) for q in QUALITY}
            cells = [_num(p["metrics"][q] - mine[q]) if p["metrics"].get(q) is not None
                     and mine.get(q) is not None else "–" for q in QUALITY]
            lines.append(f"| {e['label']} | " + " | ".join(cells) + " |")
    notes = run.get("notes") or []
    if notes:
        lines += ["", "Notes:", "", *("- " + n for n in notes)]
    return "\n".join(lines) + "\n"


def load_results(folder: str) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                res = json.load(f)
        except (OSError, ValueError):
            continue
        if res.get("schema") == 1 and not res.get("data", {}).get("subset"):
            out.append(res)
    return sorted(out, key=lambda r: dataset_order(r["dataset"]))


def aggregate_markdown(results: list[dict]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Regenerated by `experiments/bench_xr_linear.py` from the JSON files in this folder "
        "(one per dataset; each names its machine, software versions, date and commit). "
        "How to run: `experiments/README.md`.",
        "",
        "Metrics in % on the test split (test-only labels kept in the ground truth):",
        "",
        *quality_header(True),
    ]
    for res in results:
        for k in sorted(res["results"], key=entry_order):
            lines.append(quality_row(res["results"][k], res["dataset"]))
    lines += ["", "Costs:", "", *cost_header(True)]
    for res in results:
        for k in sorted(res["results"], key=entry_order):
            lines.append(cost_row(res["results"][k], res["dataset"]))
    lines += warm_lines([(res["dataset"], res["results"][k]) for res in results
                         for k in sorted(res["results"], key=entry_order)])
    n_one = sorted({str(r["run"].get("n_one", 200)) for r in results}) or ["200"]
    lines += ["", *("- " + n for n in cost_notes("/".join(n_one))), "", "Runs:", ""]
    for res in results:
        run = res["run"]
        notes = "; ".join(run.get("notes") or [])
        lines.append(f"- {res['dataset']}: {run['date']}, commit `{run['git_commit'][:12]}`, "
                     f"{_machine_line(run)}." + (f" Notes: {notes}." if notes else ""))
    return "\n".join(lines) + "\n"


def _float(row: dict, name: str) -> float | None:
    try:
        return float(row[name])
    except (KeyError, ValueError):
        return None


def read_peers_md(path: str) -> dict[tuple[str, str], dict]:
    """``{(dataset, entry key): {"metrics": {...}, "featurize_s", "train_s", "predict_ms"}}``
    from PEERS.md's table; empty when the file is missing or has no table."""
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        rows = [line.strip() for line in f if line.strip().startswith("|")]
    if not rows:
        return {}
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out = {}
    for line in rows[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header) or set(cells[0]) <= {"-", " "}:
            continue
        row = dict(zip(header, cells, strict=True))
        key = PEERS_MD_SYSTEMS.get(row.get("system", ""))
        if key is None:
            continue

        out[(row["dataset"], key)] = {
            "metrics": {q: _float(row, q) for q in QUALITY},
            "featurize_s": _float(row, "featurize s"), "train_s": _float(row, "train s"),
            "predict_ms_per_query": _float(row, "predict ms/query"),
        }
    return out
