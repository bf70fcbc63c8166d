"""Embedding throughput of this checkout against an earlier git revision, run alternately in one script.

Checks that a change (reliability checks, a new decoding path) did not slow `featx embed`: both
revisions embed the same Fashion-MNIST JPEG folder into fresh stores through their own CLI, taking
turns so that a machine that slows down or speeds up meanwhile affects both alike.

    .venv/bin/python benchmarks/bench_revisions.py --base d54dee5 [--images 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_embed import write_jpegs

REPO = Path(__file__).resolve().parents[1]
EMBED = "import sys; from featx.cli import main; main(sys.argv[1:], prog_name='featx')"


def embed_with(tree: Path, folder: Path, cache: Path) -> float:
    """images/s that the featx in ``tree`` reports for embedding ``folder`` into a fresh ``cache``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", EMBED, "embed", str(folder), "--cache", str(cache), "--json"],
                         env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier revision (a commit or tag)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base], check=True,
                       capture_output=True)
        try:
            write_jpegs(tmp / "jpegs", args.images, 0)
            speeds: dict[str, list[float]] = {"base": [], "head": []}
            for r in range(args.rounds):
                for name, tree in (("base", base), ("head", REPO)):
                    speeds[name].append(embed_with(tree, tmp / "jpegs", tmp / f"cache-{name}-{r}"))
                    print(f"round {r + 1} {name}: {speeds[name][-1]:.1f} images/s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    b, h = statistics.median(speeds["base"]), statistics.median(speeds["head"])
    print(f"{args.images} JPEGs, efficientnet_lite0 @ 224 px, median of {args.rounds} alternating rounds:")
    print(f"base {args.base}: {b:.1f} images/s; this checkout: {h:.1f} images/s; ratio {h / b:.3f}")


if __name__ == "__main__":
    main()
