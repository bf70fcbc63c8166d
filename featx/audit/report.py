"""An audit's report: report.json (every finding), report.md (counts, top findings), report.png (contact sheet)."""

from __future__ import annotations

from pathlib import Path

from ..reporting import write_report_files
from ..data.thumbnails import Thumbnails
from .sheet import contact_sheet


def _name(path: str) -> str:
    return Path(path).name if "/" in path else path


def render_markdown(report: dict, top: int = 20) -> str:
    s, summary = report["summary"], report["settings"]
    lines = [
        f"# featx audit: {report['dataset']}",
        "",
        f"{s['images']:,} images ({s['distinct']:,} distinct, {s['labelled']:,} labelled, {s['classes']} classes), "
        f"{report['backbone']}. Out-of-fold probabilities from {summary['folds']} folds of the {summary['head']} "
        f"head; label issues by confident learning, ranked by {summary['ranking'].replace('_', ' ')}. "
        "Findings are advice: no label was changed.",
        *(["", f"Note: {report['note']}"] if report.get("note") else []),
        *(["", f"Note: {report['recipe_note']}"] if report.get("recipe_note") else []),
        "",
        "| finding | count |", "|---|---:|",
        f"| likely label issues | {s['label_issues']:,} |",
        f"| the same image in two splits | {s['exact_leaks']:,} |",
        f"| a near-twin across splits (cosine ≥ {summary['leak_threshold']}) | {s['near_leaks']:,} |",
        f"| one image with two labels | {s['conflicting_labels']:,} |",
        f"| outliers (robust z > 5 of the distance to the {summary['k']}th neighbour) | {s['outliers_z_over_5']:,} |",
        "",
        "## Estimated share of wrong labels per class", "",
        "| class | noise rate |", "|---|---:|",
        *[f"| {c} | {v:.1%} |" for c, v in sorted(report["noise_rate"].items(), key=lambda kv: -kv[1])],
        "", "## Pairs most often confused (given → likely)", "",
        *[f"- {p['given']} → {p['likely']}: {p['count']}" for p in report["confused_pairs"]],
        "", f"## Top label issues ({min(top, s['label_issues'])} of {s['label_issues']:,})", "",
        "| # | image | split | given | suggested | quality |", "|---:|---|---|---|---|---:|",
        *[f"| {i} | {_name(f['path'])} | {f['split']} | {f['given']} | {f['suggested']} | {f['quality']:.3f} |"
          for i, f in enumerate(report["label_issues"][:top], 1)],
        "", "## Leaks", "",
    ]
    leaks = report["leaks"][:top]
    lines += [f"- {f['kind'].replace('_', ' ')}: " + (
        f"{_name(f['path'])} ({f['split']}, {f['label']}) ≈ {_name(f['train_path'])} (train, {f['train_label']}), "
        f"cosine {f['similarity']:.3f}" if f["kind"] == "near_leak" else
        ", ".join(f"{_name(p)} ({sp}, {lb})" for p, sp, lb in zip(f["paths"], f["splits"], f["labels"])))
        for f in leaks] or ["none found"]
    lines += ["", f"## Outliers (top {min(top, len(report['outliers']))})", "",
              "| # | image | label | distance | robust z |", "|---:|---|---|---:|---:|",
              *[f"| {i} | {_name(f['path'])} | {f['label']} | {f['distance']:.3f} | {f['z']:.1f} |"
                for i, f in enumerate(report["outliers"][:top], 1)]]
    sec = report["seconds"]
    lines += ["", "Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sec.items()) + "."]
    return "\n".join(lines) + "\n"


def sheet_sections(report: dict, n: int = 16) -> list[tuple[str, list[tuple[str, str]]]]:
    issues = [(f["path"], f"{f['given']} → {f['suggested']} ({f['quality']:.2f})") for f in report["label_issues"][:n]]
    leaks = []
    for f in [f for f in report["leaks"] if f["kind"] == "near_leak"][: n // 2]:
        leaks += [(f["path"], f"{f['split']}: {f['label']}"), (f["train_path"], f"train: {f['train_label']} ({f['similarity']:.3f})")]
    outliers = [(f["path"], f"{f['label']} (z {f['z']:.0f})") for f in report["outliers"][: n // 2]]
    return [("likely label issues: given → suggested (quality)", issues),
            ("near-twins across splits: held-out | its training twin (cosine)", leaks),
            ("outliers: label (robust z)", outliers)]


def write_report(report: dict, out: str | Path, data_dir: str | None = None) -> dict[str, Path]:
    """report.json, report.md and the contact sheet report.png in ``out``."""
    return write_report_files(report, out, render_markdown(report),
                              lambda path: contact_sheet(sheet_sections(report), path, Thumbnails(data_dir)))
