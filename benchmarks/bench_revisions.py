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


def store_task_with(tree: Path, task: str, cache: Path, dataset: str) -> float:
    """Seconds ``featx train`` (its train_seconds) or ``featx index`` (its build_seconds) of ``tree`` reports."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = ["train", dataset, "--out", str(cache / "head.npz")] if task == "train" else ["index", dataset]
    out = subprocess.run([sys.executable, "-c", EMBED, *args, "--cache", str(cache), "--json"],
                         env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return report["train_seconds"] if task == "train" else report["build_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier revision (a commit or tag)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", choices=("embed", "train", "index"), default="embed")
    parser.add_argument("--store", type=Path, help="with --task train/index: the store to copy and use")
    parser.add_argument("--dataset", default="fashion-mnist")
    args = parser.parse_args()
    if args.task != "embed":
        return compare_store_task(args)
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


def compare_store_task(args) -> None:
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base], check=True,
                       capture_output=True)
        try:
            seconds: dict[str, list[float]] = {"base": [], "head": []}
            for name in seconds:  # one copy of the store each: the revisions may save indexes differently
                shutil.copytree(args.store, tmp / f"cache-{name}" / args.store.name,
                                ignore=shutil.ignore_patterns("indexes", "heads", "maps", "thumbnails"))
            for r in range(args.rounds):
                for name, tree in (("base", base), ("head", REPO)):
                    shutil.rmtree(tmp / f"cache-{name}" / args.store.name / "indexes", ignore_errors=True)
                    seconds[name].append(store_task_with(tree, args.task, tmp / f"cache-{name}", args.dataset))
                    print(f"round {r + 1} {name}: {seconds[name][-1]:.2f} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    b, h = statistics.median(seconds["base"]), statistics.median(seconds["head"])
    print(f"featx {args.task} {args.dataset} ({args.store.name}), median of {args.rounds} alternating rounds:")
    print(f"base {args.base}: {b:.2f} s; this checkout: {h:.2f} s; ratio {h / b:.3f}")


if __name__ == "__main__":
    main()
