"""A compare experiment's report as Markdown tables and a PNG figure, written next to report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..reporting import save_figure, write_report_files


def summarize(runs: Sequence[dict], methods: Sequence[str], shots: Sequence[int]) -> list[dict]:
    """One row per (method, shots): accuracy mean and std over seeds, mean seconds, train−test gap, failures."""
    rows = []
    for method in methods:
        for k in shots:
            these = [r for r in runs if r["method"] == method and r["shots"] == k]
            ok = [r for r in these if r["status"] == "ok"]
            acc = np.array([r["accuracy"] for r in ok], dtype=float)
            gap = [r["train_accuracy"] - r["accuracy"] for r in ok if r.get("train_accuracy") is not None]
            rows.append({
                "method": method, "shots": k, "n_ok": len(ok), "n_failed": len(these) - len(ok),
                "accuracy_mean": float(acc.mean()) if len(acc) else None,
                "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else (0.0 if len(acc) else None),
                "macro_f1_mean": float(np.mean([r["macro_f1"] for r in ok])) if ok else None,
                "seconds_mean": float(np.mean([r["seconds"] for r in ok])) if ok else None,
                "gap_mean": float(np.mean(gap)) if gap else None,
                "peak_rss_mb_max": max((r["peak_rss_mb"] for r in ok if r.get("peak_rss_mb")), default=None),
                "added_rss_mb_max": max((r["added_rss_mb"] for r in ok if r.get("added_rss_mb") is not None),
                                        default=None),
            })
    return rows


def _cell(mean, std, scale=100.0, digits=1) -> str:
    if mean is None:
        return "failed"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _table(rows: list[dict], methods: list[str], shots: list[int], value) -> list[str]:
    by = {(r["method"], r["shots"]): r for r in rows}
    lines = ["| shots/class | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
    for k in shots:
        lines.append(f"| {k} | " + " | ".join(value(by[(m, k)]) for m in methods) + " |")
    return lines


def _memory(row: dict) -> str:
    if row["added_rss_mb_max"] is not None:
        return f"{row['added_rss_mb_max']:.0f}"
    return "–" if row["peak_rss_mb_max"] is None else f"≤ {row['peak_rss_mb_max']:.0f} (process peak)"


def _baseline(report: dict) -> float:
    starts = [r["peak_rss_mb"] - r["added_rss_mb"] for r in report["runs"]
              if r["status"] == "ok" and r.get("added_rss_mb") is not None]
    return min(starts, default=0.0)


def _seconds(v) -> str:
    return "–" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.0f}")


def render_markdown(report: dict) -> str:
    """Accuracy mean ± std per method and shots, seconds, the train−test gap, memory, failures."""
    s = report["settings"]
    methods, shots = s["methods"], s["shots"]
    rows = summarize(report["runs"], methods, shots)
    e = report["embedding"]
    baseline = _baseline(report)
    lines = [
        f"# featx compare: {report['dataset']}",
        "",
        f"{report['backbone']} at {report['image_size']} px ({report['precision']}) on {report['device']}; "
        f"{s['seeds']} seed(s) per shots value; fine-tuning: up to {s['epochs']} epochs, batch {s['batch_size']}, "
        f"lr {s['lr']:g}; {report['n_test']:,} test images, the same for every method.",
        "",
        f"Images: {report.get('crop', 'center')} crop for every method. Frozen methods read the final layer; "
        f"`*-stages` and `*-grid` ones also every stage's output, average-pooled or over a 2×2 grid "
        f"({', '.join(report.get('layers', ['final']))}).",
        "",
        f"Embedding ({e['n_images']:,} images; once, then cached, so not in the frozen methods' seconds): "
        f"{e['seconds']:.1f} s, {e['n_embedded']:,} embedded"
        + (f" at {e['images_per_second']:.0f} images/s" if e["n_embedded"] else "")
        + f", {e['n_reused']:,} reused from the store.",
        "",
        "## Test accuracy (%), mean ± std over seeds",
        "",
        *_table(rows, methods, shots, lambda r: _cell(r["accuracy_mean"], r["accuracy_std"])),
        "",
        "## Seconds per run (mean): training plus predicting the test split",
        "",
        *_table(rows, methods, shots, lambda r: _seconds(r["seconds_mean"])),
        "",
        "## Train − test accuracy (points, mean): how much each method overfits its few examples",
        "",
        *_table(rows, methods, shots, lambda r: "–" if r["gap_mean"] is None else f"{r['gap_mean'] * 100:.1f}"),
        "",
        "## Memory (MB, highest run): peak resident memory the run added to the process",
        "",
        *_table(rows, methods, shots, lambda r: _memory(r)),
        *(["", f"(Before a run the process already held about {baseline:,.0f} MB: libraries, the "
             "dataset, the model.)"] if baseline else []),
    ]
    failed = [r for r in report["runs"] if r["status"] != "ok"]
    lines += ["", f"## Failed runs: {len(failed)}", ""]
    lines += [f"- {r['method']}, {r['shots']} shots, seed {r['seed']}: {r['reason']}" for r in failed]
    if "seconds" in report:
        lines += ["", f"Whole experiment: {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def render_figure(report: dict, path: Path) -> Path:
    """Accuracy against shots per class (log x), one line per method; a second panel with seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["settings"]
    rows = summarize(report["runs"], s["methods"], s["shots"])
    fig, (ax_acc, ax_sec) = plt.subplots(1, 2, figsize=(12.5, 4.4))
    for method in s["methods"]:
        mine = [r for r in rows if r["method"] == method and r["accuracy_mean"] is not None]
        x = [r["shots"] for r in mine]
        ax_acc.errorbar(x, [r["accuracy_mean"] * 100 for r in mine], yerr=[r["accuracy_std"] * 100 for r in mine],
                        marker="o", capsize=3, label=method)
        ax_sec.plot(x, [r["seconds_mean"] for r in mine], marker="o", label=method)
    e = report["embedding"]
    if e["n_embedded"]:
        ax_sec.axhline(e["seconds"], color="grey", linestyle="--", label=f"embed all {e['n_images']:,} (once)")
    for ax in (ax_acc, ax_sec):
        ax.set_xscale("log")
        ax.set_xticks(s["shots"], [str(k) for k in s["shots"]])
        ax.set_xlabel("training images per class")
        ax.grid(True, alpha=0.3)
    ax_sec.set_yscale("log")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_sec.set_ylabel("seconds per run")
    ax_acc.legend()
    ax_sec.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{report['dataset']}: {report['backbone']} at {report['image_size']} px, "
                 f"mean ± std over {s['seeds']} seed(s)")
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(report: dict, out: str | Path) -> dict[str, Path]:
    """report.json, report.md and report.png in ``out``."""
    return write_report_files(report, out, render_markdown(report), lambda path: render_figure(report, path))
