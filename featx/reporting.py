"""The files an experiment leaves: report.json, report.md and report.png, each replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .store.atomic import atomic_write


def write_json(report: dict, out: str | Path) -> Path:
    """``out``/report.json: rewritten whole, so a reader never sees half of it."""
    path = Path(out) / "report.json"
    with atomic_write(path) as f:
        f.write(json.dumps(report, indent=1).encode())
    return path


def previous_report(out: str | Path, report: dict, key: Callable[[dict], str]) -> dict | None:
    """The report.json an earlier, interrupted or smaller run left in ``out``, when it has ``report``'s format and
    the same ``key`` (what must match for its results to be reused); None when missing, unreadable or another's."""
    try:
        old = json.loads((Path(out) / "report.json").read_text())
        if not isinstance(old, dict) or old.get("format") != report["format"] or key(old) != key(report):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return old


def save_figure(fig, path: Path, **savefig) -> Path:
    """A matplotlib figure as PNG at ``path`` (atomically), then closed."""
    import matplotlib.pyplot as plt

    with atomic_write(path) as f:
        fig.savefig(f, format="png", **{"dpi": 110, **savefig})
    plt.close(fig)
    return path


def write_report_files(report: dict, out: str | Path, markdown: str, draw: Callable[[Path], Path]) -> dict[str, Path]:
    """report.json, report.md (``markdown``) and report.png (``draw(path)``) in ``out``."""
    out = Path(out)
    paths = {"json": write_json(report, out), "md": out / "report.md", "png": out / "report.png"}
    with atomic_write(paths["md"]) as f:
        f.write(markdown.encode())
    draw(paths["png"])
    return paths
