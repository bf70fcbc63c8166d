"""What the CLI prints: JSON for scripts, progress bars on a terminal, library errors as `Error: …` with flags."""

from __future__ import annotations

import json
import re
import sys

import click

from ..errors import FeatxError

FLAGS = {"k": "-k"}  # parameters whose flag is not --name-with-dashes


# Control characters in a file name could forge an output line or drive the terminal: shown escaped.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7f, 0xa0)]} | {0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t"}


def printable(text) -> str:
    """``text`` with control characters written as escapes, so it prints on one line as itself."""
    return str(text).translate(_ESCAPES)


def flag(param: str) -> str:
    return FLAGS.get(param, "--" + param.replace("_", "-"))


def cli_message(e: FeatxError) -> str:
    """The error's message, on one line, with the parameters it names written as this CLI's flags."""
    text = printable(e)
    for param in e.params:
        if text.startswith(param + " "):  # "batch_size must be …"
            text = flag(param) + text[len(param):]
        text = re.sub(rf"\b{re.escape(param)}=(?=[\w'\"/.~-])", flag(param) + " ", text)
        text = re.sub(rf"\b{re.escape(param)}=", flag(param), text)
    return text


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=None, default=str))


class Bars:
    """tqdm bars for the library's progress callback; silent when stderr is not a terminal."""

    UNITS = {"train": "step", "runs": "run", "candidates": "candidate", "screen": "candidate", "folds": "fold"}

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bars: dict = {}

    def __call__(self, stage: str, advance: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage not in self.bars:
            for bar in self.bars.values():
                if bar.total is not None and bar.n >= bar.total:  # finished; one still running (the model
                    bar.close()  # converting while files are hashed) keeps its line
            self.bars[stage] = tqdm(total=total, desc=stage, unit=self.UNITS.get(stage, "img"), unit_scale=False,
                                    file=sys.stderr, dynamic_ncols=True)
        self.bars[stage].update(advance)

    def __enter__(self) -> "Bars":
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()


def echo_metrics(m: dict, verbose: bool) -> None:
    """Per-class recall (worst first) and, with ``verbose``, the confusion matrix."""
    worst = sorted(m["per_class_recall"].items(), key=lambda kv: kv[1])
    click.echo("per-class recall: " + ", ".join(f"{printable(k)} {v:.1%}" for k, v in worst))
    if verbose:
        labels = [printable(label) for label in m["labels"]]
        width = max(len(label) for label in labels)
        click.echo("confusion matrix (rows: true, columns: predicted, in the order above):")
        for label, row in zip(labels, m["confusion"]):
            click.echo(f"  {label:>{width}}  " + " ".join(f"{v:>5}" for v in row))
