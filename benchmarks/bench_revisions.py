"""This checkout against an earlier git revision, run alternately in one script: embed, train or index.

Checks that a change did not slow featx down. `--task embed` (default): both revisions embed the same
Fashion-MNIST JPEG folder into fresh stores through their own CLI. `--task train` / `--task index`:
both train the default logreg head on (or index) DATASET of an existing store, each in its own copy of
that store. Rounds alternate so that a machine that slows down or speeds up meanwhile affects both alike.

    .venv/bin/python benchmarks/bench_revisions.py --base d54dee5 [--images 2000] [--rounds 3]
    .venv/bin/python benchmarks/bench_revisions.py --base BASE --task train --store cache/STORE \
        [--dataset fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from bench_embed import write_jpegs

REPO = Path(__file__).resolve().parents[1]
EMBED = "import sys; from featx.cli import main; main(sys.argv[1:], prog_name='featx')"


def embed_with(tree: Path, folder: Path, cache: Path) -> float:
    """images/s that the featx in ``tree`` reports for embedding ``folder`` into a fresh ``cache``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", EMBED, "embed", str(folder), "--cache", str(cache), "--json"],
                         env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_second"]


def store_task_with(tree: Path, task: str, cache: Path, dataset: str) -> float:
    """Seconds ``featx train`` (its train_seconds) or ``featx index`` (its build_seconds) of ``tree`` reports."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = ["train", dataset, "--out", str(cache / "head.npz")] if task == "train" else ["index", dataset]
    out = subprocess.run([sys.executable, "-c", EMBED, *args, "--cache", str(cache), "--json"],
                         env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return report["train_seconds"] if task == "train" else report["build_seconds"]



def run_code(code: str, tree: Path, *args: str):
    """Run ``code`` in a fresh interpreter importing featx from ``tree``; the JSON of its last output line."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=tree, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@contextmanager
def base_worktree(revision: str) -> Iterator[tuple[Path, Path]]:
    """A temporary folder and, inside it, a git worktree of ``revision``."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), revision], check=True,
                       capture_output=True)
        try:
            yield tmp, base
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)


def alternate(rounds: int, base: Path, measure: Callable[[str, Path, int], float], unit: str) -> tuple[float, float]:
    """Medians of ``measure(name, tree, round)`` for the base revision and this checkout, taking turns."""
    values: dict[str, list[float]] = {"base": [], "head": []}
    for r in range(rounds):
        for name, tree in (("base", base), ("head", REPO)):
            values[name].append(measure(name, tree, r))
            print(f"round {r + 1} {name}: {values[name][-1]:.2f} {unit}", flush=True)
    return statistics.median(values["base"]), statistics.median(values["head"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier revision (a commit or tag)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", choices=("embed", "train", "index"), default="embed")
    parser.add_argument("--store", type=Path, help="with --task train/index: the store to copy and use")
    parser.add_argument("--dataset", default="fashion-mnist")
    args = parser.parse_args()
    with base_worktree(args.base) as (tmp, base):
        if args.task == "embed":
            write_jpegs(tmp / "jpegs", args.images, 0)
            b, h = alternate(args.rounds, base, lambda name, tree, r: embed_with(
                tree, tmp / "jpegs", tmp / f"cache-{name}-{r}"), "images/s")
            what, unit = f"{args.images} JPEGs, efficientnet_lite0 @ 224 px", "images/s"
        else:
            for name in ("base", "head"):  # one copy of the store each: the revisions may save indexes differently
                shutil.copytree(args.store, tmp / f"cache-{name}" / args.store.name,
                                ignore=shutil.ignore_patterns("indexes", "heads", "maps", "thumbnails"))

            def measure(name: str, tree: Path, r: int) -> float:
                shutil.rmtree(tmp / f"cache-{name}" / args.store.name / "indexes", ignore_errors=True)
                return store_task_with(tree, args.task, tmp / f"cache-{name}", args.dataset)

            b, h = alternate(args.rounds, base, measure, "s")
            what, unit = f"featx {args.task} {args.dataset} ({args.store.name})", "s"
    print(f"{what}, median of {args.rounds} alternating rounds:")
    print(f"base {args.base}: {b:.2f} {unit}; this checkout: {h:.2f} {unit}; ratio {h / b:.3f}")


if __name__ == "__main__":
    main()
