"""A rank's report: the validation summary (Kendall's tau, regret, cost), Markdown, a PNG, written atomically."""

from __future__ import annotations

from pathlib import Path

from ..reporting import save_figure, write_report_files


def _tau(x, y) -> dict:
    from scipy.stats import kendalltau, weightedtau

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return {"tau": None, "p": None, "weighted_tau": None}
    t = kendalltau(x, y)
    return {"tau": round(float(t.statistic), 4), "p": round(float(t.pvalue), 4),
            "weighted_tau": round(float(weightedtau(x, y).statistic), 4)}


def summarize_validation(report: dict) -> dict:
    """How well each predictor ordered the candidates by test accuracy, and what following it would have lost.

    Predictors: the k-fold probe, LogME, and model size (parameters), the plain prior published
    studies find hard to beat. Regret is in points of test accuracy against the best candidate, for
    each predictor's top pick, the recommendation, and the unpaired-overlap rule it replaced.
    """
    from .choice import recommend

    rows = [r for r in report["rows"] if r["status"] == "ok" and r.get("test_accuracy") is not None]
    if not rows:
        return {"n": 0}
    test = [r["test_accuracy"] for r in rows]
    best = max(rows, key=lambda r: r["test_accuracy"])

    def regret(row: dict) -> float:
        return round((best["test_accuracy"] - row["test_accuracy"]) * 100, 3)

    predictors = {"probe": "accuracy", "logme": "logme", "params": "params"}
    out = {"n": len(rows), "best": {"id": best["id"], "test_accuracy": best["test_accuracy"]}, "predictors": {}}
    for name, column in predictors.items():
        values = [r[column] for r in rows]
        top = max(rows, key=lambda r: (r[column], -r["bytes_per_image"]))
        out["predictors"][name] = {**_tau(values, test), "top": top["id"], "top_regret": regret(top)}
    by_id = {r["id"]: r for r in rows}
    for key, rec in (("recommended", report.get("recommendation")),
                     ("recommended_unpaired", recommend(report["rows"], paired=False))):
        if rec and rec["id"] in by_id:
            chosen = by_id[rec["id"]]
            out[key] = {"id": rec["id"], "test_accuracy": chosen["test_accuracy"], "regret": regret(chosen)}
    if report.get("rounds"):
        out["screen"] = _screen_check(report, rows, regret)
    seconds = report.get("seconds", {})
    if seconds.get("full_embedding"):
        out["cost_ratio"] = round(seconds["rank"] / seconds["full_embedding"], 4)
    return out


def _screen_check(report: dict, rows: list[dict], regret) -> dict:
    """What the rounds (which --validate does not prune by) would have kept, and what that would have cost."""
    from .candidates import Candidate
    from .choice import choose_contenders, compare_to_best, forward_passes, pass_costs, recommend

    kept = {r["id"] for r in rows}
    passes = forward_passes([Candidate(r["backbone"], r["size"], r["crop"], r["layers"], r["precision"])
                             for r in rows])
    costs = pass_costs(passes, report)
    for round_ in report["rounds"]:
        kept = set(choose_contenders({c: s for c, s in round_["scores"].items() if c in kept}, round_["keep"],
                                     passes, costs))
    best = max(rows, key=lambda r: r["test_accuracy"])
    probe_best = max(rows, key=lambda r: r["accuracy"])
    # among the finalists alone, as the rank would have compared them: measured against the best of every
    # candidate, none of them might be within reach of it, and there would be nothing to recommend
    finalists = [dict(r) for r in rows if r["id"] in kept]
    compare_to_best(finalists, report["sample"]["n"])
    rec = recommend(finalists)
    chosen = next((r for r in rows if rec and r["id"] == rec["id"]), None)
    return {"images": [r["images"] for r in report["rounds"]], "contenders": sorted(kept),
            "kept_test_best": best["id"] in kept, "kept_probe_best": probe_best["id"] in kept,
            "recommended": None if chosen is None else {"id": chosen["id"], "regret": regret(chosen)}}


def rounds_line(report: dict) -> str | None:
    """How many candidates each round pruned: "16 after 256 images, 4 after 512"."""
    pruned = [r for r in report["rows"] if r["status"] == "pruned"]
    if not pruned:
        return None
    counts = [(n, sum(r["pruned_at"] == n for r in pruned)) for n in sorted({r["pruned_at"] for r in pruned})]
    return ", ".join(f"{k} after {n:,} images" for n, k in counts)


def _pct(v) -> str:
    return "–" if v is None else f"{v * 100:.1f}"


def _difference(d) -> str:
    if not d:
        return "–"
    if d == [0, 0, 0]:
        return "best"
    return f"{d[0] * 100:+.1f} ({d[1] * 100:+.1f} to {d[2] * 100:+.1f})"


def table_lines(report: dict) -> list[str]:
    """The ranking as a Markdown table: predicted accuracy with its interval, LogME, cost, test accuracy."""
    validated = any("test_accuracy" in r for r in report["rows"])
    head = ("| # | candidate | px | k-fold acc % (95% interval) | vs best, points (paired 95%) | LogME | images/s "
            "| dim | KB/image | params (M) |")
    rule = "|---:|---|---:|---|---|---:|---:|---:|---:|---:|"
    if validated:
        head, rule = head + " test acc % |", rule + "---:|"
    lines = [head, rule]
    rec = (report.get("recommendation") or {}).get("id")
    for i, r in enumerate([r for r in report["rows"] if r["status"] == "ok"], 1):
        mark = " ←" if r["id"] == rec else ""
        cells = [str(i), f"{r['backbone']} {r['crop']} {r['layers']} {r.get('precision_used', r['precision'])}{mark}", str(r["image_size"]),
                 f"{_pct(r['accuracy'])} ({_pct(r['low'])}–{_pct(r['high'])})", _difference(r.get("vs_best")),
                 f"{r['logme']:.3f}",
                 f"{r['images_per_second']:.0f}", str(r["dim"]), f"{r['bytes_per_image'] / 1024:.1f}",
                 f"{r['params'] / 1e6:.2f}"]
        if validated:
            cells.append(_pct(r.get("test_accuracy")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cost_line(report: dict) -> str:
    """What rank cost, and against embedding every candidate fully when --validate measured that."""
    sec, groups = report["seconds"], report["groups"].values()
    reused = sum(g.get("sample_reused", 0) for g in groups)
    text = f"Rank took {sec['rank']:.0f} s embedding the sample, timing and scoring (plus {sec.get('setup', 0):.0f} s reading the data)"
    pruned = rounds_line(report)
    if pruned:
        text += f"; of its {len(report['rows'])} candidates it pruned {pruned}"
    text += f"; {reused:,} sample vectors came from the store." if reused else "."
    if sec.get("full_embedding"):
        full_reused = sum(g.get("full_reused", 0) for g in groups) - sum(g.get("sample_embedded", 0) for g in groups)
        text += (f" Embedding every candidate's images fully took {sec['full_embedding']:.0f} s; rank cost "
                 f"{sec['rank'] / sec['full_embedding']:.1%} of that")
        text += (f" (but {full_reused:,} of those vectors were already stored, so the full cost is understated)."
                 if full_reused > 0 else ".")
    return text


def render_markdown(report: dict) -> str:
    s, sample = report["settings"], report["sample"]
    lines = [
        f"# featx rank: {report['dataset']}",
        "",
        f"{len(report['candidates'])} candidates scored on the same stratified sample of {sample['n']:,} of the "
        f"{sample['of']:,} training images ({sample['classes']} classes; stored as dataset `{sample['dataset']}`): "
        f"{s['folds']}-fold accuracy of the default logreg head with a 95% bootstrap interval, and LogME. "
        "images/s is the forward pass alone, measured on this machine during the run.",
        *(["", f"Note: {report['note']}"] if report.get("note") else []),
        "",
        *table_lines(report),
    ]
    rec = report.get("recommendation")
    if rec:
        lines += ["", f"**Recommendation: {rec['id']}**: {rec['why']}."]
    pruned = [r for r in report["rows"] if r["status"] == "pruned"]
    if pruned:
        steps = ", then ".join(f"{r['keep']} kept after {r['images']:,} images" for r in report["rounds"])
        lines += ["", f"## Pruned in rounds: {len(pruned)}", "",
                  f"Scored on a growing part of the sample (k-fold accuracy, LogME), the best by each score in turn "
                  f"going on: {steps}; those went on to the whole sample.", "",
                  "| candidate | px | pruned after (images) | acc % there | LogME there | images/s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in pruned:
            speed = f"{r['images_per_second']:.0f}" if r.get("images_per_second") else "–"
            lines.append(f"| {r['id']} | {r.get('image_size')} | {r['pruned_at']:,} | "
                         f"{_pct(r['screen']['accuracy'])} | {r['screen']['logme']:.3f} | {speed} |")
    failed = [r for r in report["rows"] if r["status"] == "failed"]
    if failed:
        lines += ["", f"## Failed candidates: {len(failed)}", ""]
        lines += [f"- {r['id']}: {r['reason']}" for r in failed]
    v = report.get("validation")
    if v and v.get("n"):
        lines += ["", "## Validation: every candidate embedded fully, logreg trained on the whole train split", ""]
        lines += ["| predictor | Kendall's tau | weighted tau | its top pick | regret of that pick (points) |",
                  "|---|---:|---:|---|---:|"]
        for name, p in v["predictors"].items():
            tau = "–" if p["tau"] is None else f"{p['tau']:.3f}"
            wtau = "–" if p["weighted_tau"] is None else f"{p['weighted_tau']:.3f}"
            lines.append(f"| {name} | {tau} | {wtau} | {p['top']} | {p['top_regret']:.2f} |")
        if "recommended" in v:
            r = v["recommended"]
            lines += ["", f"Best test accuracy: {v['best']['test_accuracy']:.2%} ({v['best']['id']}). The "
                      f"recommendation scored {r['test_accuracy']:.2%}: a regret of {r['regret']:.2f} points."]
        if v.get("screen"):
            c = v["screen"]
            picked = c["recommended"]
            sizes = " and ".join(f"{n:,}" for n in c["images"])
            lines += ["", f"The rounds ({sizes} images; not used to prune under --validate) would have kept "
                      f"{len(c['contenders'])} candidates, {'including' if c['kept_test_best'] else 'not'} the best on "
                      f"the test split" + (f"; its recommendation, {picked['id']}, has a regret of "
                                           f"{picked['regret']:.2f} points." if picked else ".")]
        if "recommended_unpaired" in v:
            r = v["recommended_unpaired"]
            lines += ["", f"(Had it taken the cheapest candidate whose own interval overlaps the best one's, it "
                      f"would have picked {r['id']}: {r['test_accuracy']:.2%}, a regret of {r['regret']:.2f} points.)"]
    sec = report.get("seconds", {})
    if sec:
        lines += ["", cost_line(report)]
    if rec and rec.get("embed"):  # last, where a reader who scrolled to the end finds what to run
        lines += ["", "## Next: embed all of it with the recommendation", "", f"    {rec['embed']}"]
    return "\n".join(lines) + "\n"


def render_figure(report: dict, path: Path) -> Path:
    """Predicted accuracy (with intervals) against embedding cost; with validation, predicted against test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["status"] == "ok"]
    validated = [r for r in rows if r.get("test_accuracy") is not None]
    fig, axes = plt.subplots(1, 2 if validated else 1, figsize=(13 if validated else 7.5, 4.8), squeeze=False)
    ax = axes[0][0]
    rec = (report.get("recommendation") or {}).get("id")
    for r in rows:
        x = 1000.0 / max(r["images_per_second"], 1e-9)
        acc = r["accuracy"] * 100
        ax.errorbar([x], [acc], yerr=[[acc - r["low"] * 100], [r["high"] * 100 - acc]],
                    marker="o" if r["layers"] == "final" else "s", capsize=3,
                    color="tab:red" if r["id"] == rec else "tab:blue", alpha=0.85)
        ax.annotate(r["id"].replace("efficientnet_", ""), (x, acc), fontsize=6, xytext=(3, 2),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("embedding cost (ms per image, forward pass)")
    ax.set_ylabel("k-fold accuracy on the sample (%)")
    ax.set_title("predicted accuracy vs cost (red: recommended; squares: several layers)")
    ax.grid(True, alpha=0.3)
    if validated:
        ax2 = axes[0][1]
        ax2.scatter([r["accuracy"] * 100 for r in validated], [r["test_accuracy"] * 100 for r in validated])
        lo = min(min(r["accuracy"], r["test_accuracy"]) for r in validated) * 100
        hi = max(max(r["accuracy"], r["test_accuracy"]) for r in validated) * 100
        ax2.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1)
        ax2.set_xlabel("k-fold accuracy on the sample (%)")
        ax2.set_ylabel("test accuracy, trained on all training data (%)")
        tau = report.get("validation", {}).get("predictors", {}).get("probe", {}).get("tau")
        ax2.set_title("predicted vs actual" + (f" (Kendall's tau {tau:.2f})" if tau is not None else ""))
        ax2.grid(True, alpha=0.3)
    fig.suptitle(f"featx rank: {report['dataset']}, sample of {report['sample']['n']:,}")
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(report: dict, out: str | Path) -> dict[str, Path]:
    """report.json, report.md and report.png in ``out``."""
    return write_report_files(report, out, render_markdown(report), lambda path: render_figure(report, path))
