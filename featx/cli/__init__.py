"""The `featx` command line: each command parses its options, calls one library function, and prints."""

from __future__ import annotations

import os

import click

from .. import __version__
from ..errors import FeatxError
from .output import cli_message


class FeatxGroup(click.Group):
    """Turns library errors into ``Error: …`` (with the parameters named as flags) and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FeatxError as e:
            raise click.ClickException(cli_message(e)) from None


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
      featx compare digits                 # frozen heads against fine-tuning, same subsets

    \b
    Environment: FEATX_CACHE (the store root), FEATX_FASHION_MNIST (its IDX folder),
    FEATX_TOKEN and FEATX_LOG_LEVEL (featx serve), FEATX_MALLOC=default (keep glibc's
    default allocator; see the README).
    """
    if os.environ.get("FEATX_MALLOC", "") == "default":
        from ..runtime import set_malloc_tuning

        set_malloc_tuning(False)


from . import embedding, heads, search, serving, transfer  # noqa: E402,F401  (the commands register on main)
