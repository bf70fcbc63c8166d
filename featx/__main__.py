"""`python -m featx`: the same as the `featx` command."""

from featx.cli import main

main(prog_name="featx")
