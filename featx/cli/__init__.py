"""The `featx` command line: each command parses its options, calls one library function, and prints."""

from __future__ import annotations

import errno
import gc
import importlib
import os
import warnings

import click

from .. import __version__
from ..errors import FeatxError
from .output import cli_message, printable


class FeatxGroup(click.Group):
    """Loads a command's module only when it runs (so `featx stores` imports neither torch nor scikit-learn),
    and turns library errors into ``Error: …`` (with the parameters named as flags) and exit status 1."""

    COMMANDS = {  # command → module in featx.cli
        "backbones": "embedding", "embed": "embedding", "stores": "embedding", "verify": "embedding",
        "train": "heads", "evaluate": "heads", "predict": "heads",
        "index": "search", "search": "search", "duplicates": "search",
        "finetune": "transfer", "compare": "transfer", "rank": "rank", "audit": "audit", "map": "maps", "serve": "serving",
        "select": "selection",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.COMMANDS:
            return None
        module = importlib.import_module(f".{self.COMMANDS[name]}", __name__)
        return getattr(module, name, None) or getattr(module, name + "_")  # map_: not shadowing the builtin

    def invoke(self, ctx: click.Context):
        from ..hardware import set_threads

        set_threads()  # once, before any work: the cores this process may use, for every pool (cheap)
        # Importing torch, timm and OpenVINO makes millions of objects, and Python's default thresholds then run
        # about 940 collections, each full one walking all of them: 0.9-1.0 s of a 5 s `featx embed --runtime
        # torch` of one image. Ten times fewer young-generation collections (65 in all) cost 0.35 s.
        gc.set_threshold(10_000, 10, 10)
        try:
            return super().invoke(ctx)
        except FeatxError as e:
            raise click.ClickException(cli_message(e)) from None
        except OSError as e:
            if e.errno not in _DISK_ERRORS:
                raise
            where = f" {printable(str(e.filename))!r}" if e.filename else ""
            raise click.ClickException(
                f"cannot write{where}: {e.strerror or e}. {_DISK_ERRORS[e.errno]} Nothing already stored was lost "
                "(files are written whole or not at all).") from None


# What a full or read-only disk needs from the user; the library lets these OSErrors rise, the skin explains.
_DISK_ERRORS = {
    errno.ENOSPC: "Free some space, or pass --cache DIR (or --out) on a disk with room, and run the command again.",
    errno.EDQUOT: "Your disk quota is used up: free some space, or pass --cache DIR on another disk.",
    errno.EROFS: "That disk is read-only here: pass --cache DIR (or --out) on a writable disk.",
    errno.EACCES: "You may not write there: pass --cache DIR (or --out) in a folder of your own.",
    errno.EFBIG: "The file would be too large for that disk.",
}


_SHOW_WARNING = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """featx's own warnings (a damaged store skipped…) as one plain line on stderr; others as Python shows them."""
    if category.__module__.startswith("featx."):
        click.echo(f"{getattr(category, 'label', 'warning')}: {printable(message)}", err=True)
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


@click.group(cls=FeatxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="featx")
def main() -> None:
    """Transfer learning from a frozen backbone: embed once, then train heads and search in seconds.

    \b
    Start with:
      featx backbones                      # what can embed, and whether it works offline
      featx embed digits                   # embed a dataset into the feature store (./cache)
      featx stores                         # what the store holds
      featx train digits                   # a logistic-regression head in seconds
      featx predict HEAD image.jpg         # classify new images with it
      featx search digits id:KEY           # what looks like this?
      featx rank digits                    # which backbone and recipe will transfer best
      featx audit digits                   # likely wrong labels, leaks across splits, outliers
      featx serve --dataset digits         # a web page and an HTTP API over the store
      featx compare digits                 # frozen heads against fine-tuning, same subsets

    \b
    Environment: FEATX_CACHE (the store root), FEATX_RUNTIMES (one folder of converted
    models and runtime choices for every cache; default CACHE/runtimes), FEATX_FASHION_MNIST
    (its IDX folder), FEATX_TOKEN and FEATX_LOG_LEVEL (featx serve), FEATX_MALLOC=default
    (keep glibc's default allocator; see the README).
    """
    warnings.showwarning = _show_warning
    if os.environ.get("FEATX_MALLOC", "") == "default":
        from ..hardware import set_malloc_tuning

        set_malloc_tuning(False)
