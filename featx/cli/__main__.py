"""Run the command line as `python -m featx.cli`."""

from . import main

main()
