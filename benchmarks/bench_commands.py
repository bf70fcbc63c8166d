"""How long each everyday command takes as a user types it: this checkout against an earlier revision.

Every command runs in a fresh process and is timed start to exit (wall clock), quiet and with a second
process busy on one core; the two revisions take turns, each on its own copy of one prepared cache
(digits embedded with the default recipe, a head, an index; with --fashion, Fashion-MNIST at 112 px
too, final layer and stages). `featx serve` is timed from sending its first /search to the answer, once
it answers /health. One-image commands get a new image every run, so nothing is answered from an earlier run.
Writes benchmarks/out/commands.json and prints the README's table.

    .venv/bin/python benchmarks/bench_commands.py --base 178b871 [--rounds 5] [--fashion] [--only train-digits]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from bench_revisions import REPO, base_worktree

FEATX = "import sys; from featx.cli import main; main(sys.argv[1:], prog_name='featx')"
OUT = REPO / "benchmarks" / "out" / "commands.json"

# name -> (arguments after `featx`, what the README calls it); {image} is a new PNG, {folder} a new folder
# holding one, {cache} the revision's cache, {scratch} a folder for outputs.
COMMANDS = {
    "embed-one": (["embed", "{folder}"], "`featx embed FOLDER` of one new PNG"),
    "search-one": (["search", "digits", "{image}", "-k", "5"], "`featx search digits IMAGE -k 5`"),
    "predict-one": (["predict", "{cache}/digits-logreg.npz", "{image}"], "`featx predict HEAD IMAGE`"),
    "train-digits": (["train", "digits", "--out", "{scratch}/h.npz"],
                     "`featx train digits` (the default recipe: 1,414 × 3,328, the grid)"),
    "train-fashion": (["train", "fashion-mnist", "--image-size", "112", "--layers", "final", "--out",
                       "{scratch}/h.npz"], "`featx train fashion-mnist` (60,000 × 1,280, 112 px)"),
    "train-stages": (["train", "fashion-mnist", "--image-size", "112", "--layers", "stages", "--out",
                      "{scratch}/h.npz"], "`featx train fashion-mnist --layers stages` (60,000 × 1,792)"),
    "serve-first": (["serve", "--head", "{cache}/digits-logreg.npz", "--dataset", "digits", "--port", "{port}",
                     "--log-level", "warning"], "`featx serve`: its first `/search` of a new image, once up"),
}
FASHION = ("train-fashion", "train-stages")  # need --fashion


def featx(tree: Path, args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree), "FEATX_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-c", FEATX, *args], env=env, cwd=tree, capture_output=True, text=True)


def new_image(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    path = folder / f"{seed}.png"
    Image.fromarray(pixels).save(path)
    return path


def prepare(cache: Path, fashion: bool) -> None:
    """The cache both revisions start from, made by this checkout (the store format is shared)."""
    steps = [["embed", "digits"], ["train", "digits", "--out", str(cache / "digits-logreg.npz")],
             ["index", "digits"], ["embed", str(new_image(cache.parent / "warm", 0).parent)]]
    if fashion:
        steps += [["embed", "fashion-mnist", "--image-size", "112", "--layers", "final"],
                  ["embed", "fashion-mnist", "--image-size", "112", "--layers", "stages"]]
    for step in steps:
        done = featx(REPO, step, cache)
        if done.returncode:
            raise SystemExit(f"preparing failed: featx {' '.join(step)}\n{done.stderr}")


def first_answer(tree: Path, args: list[str], cache: Path, image: Path, port: int) -> float:
    """Start ``featx serve``, wait until it answers /health, then time its first /search of ``image``
    (seconds from sending the request to the answer). The server is stopped afterwards."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(tree), "FEATX_CACHE": str(cache)}
    server = subprocess.Popen([sys.executable, "-c", FEATX, *args], env=env, cwd=tree, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.perf_counter() + 120
        while True:
            if server.poll() is not None:
                raise SystemExit(f"featx serve exited: {server.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.perf_counter() > deadline:
                    raise SystemExit("featx serve did not come up in 120 s")
                time.sleep(0.05)
        start = time.perf_counter()
        with image.open("rb") as f:
            answer = httpx.post(f"http://127.0.0.1:{port}/search?k=5", files={"files": f}, timeout=120)
        took = time.perf_counter() - start
        if answer.status_code != 200:
            raise SystemExit(f"first /search answered {answer.status_code}: {answer.text[:500]}")
        return took
    finally:
        server.terminate()
        server.wait()


@contextmanager
def busy_core(busy: bool):
    """A second process spinning on one core while the block runs (when ``busy``)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier revision (a commit or tag)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fashion", action="store_true", help="also train on Fashion-MNIST (embeds it once)")
    parser.add_argument("--only", nargs="*", choices=sorted(COMMANDS), help="these commands only")
    args = parser.parse_args()
    names = args.only or [n for n in COMMANDS if args.fashion or n not in FASHION]
    seconds: dict = {n: {f"{rev}-{load}": [] for rev in ("base", "head") for load in ("quiet", "busy")} for n in names}
    with base_worktree(args.base) as (tmp, base):
        prepare(tmp / "prepared" / "cache", args.fashion)
        trees = {"base": base, "head": REPO}
        for rev in trees:
            shutil.copytree(tmp / "prepared" / "cache", tmp / f"run-{rev}" / "cache")
        seed = 1
        for r in range(args.rounds):
            for load in ("quiet", "busy"):
                for name in names:
                    for rev, tree in trees.items():
                        seed += 1
                        image = new_image(tmp / f"run-{rev}" / "images" / str(seed), seed)
                        cache, scratch = tmp / f"run-{rev}" / "cache", tmp / f"run-{rev}" / "scratch"
                        scratch.mkdir(exist_ok=True)
                        port = 8800 + seed % 100
                        argv = [a.format(image=image, folder=image.parent, cache=cache, scratch=scratch, port=port)
                                for a in COMMANDS[name][0]]
                        with busy_core(load == "busy"):
                            time.sleep(0.2)  # the spinner is running before the clock starts
                            if name == "serve-first":
                                took = first_answer(tree, argv, cache, image, port)
                            else:
                                start = time.perf_counter()
                                done = featx(tree, argv, cache)
                                took = time.perf_counter() - start
                                if done.returncode:
                                    raise SystemExit(f"{rev}: featx {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
                        seconds[name][f"{rev}-{load}"].append(round(took, 3))
                        print(f"round {r + 1} {load:<5} {name:<14} {rev}: {took:6.2f} s", flush=True)
    medians = {n: {k: statistics.median(v) for k, v in runs.items()} for n, runs in seconds.items()}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"base": args.base, "rounds": args.rounds, "cores": os.cpu_count(),
                               "seconds": seconds, "medians": medians}, indent=1))
    print(f"\nmedian of {args.rounds}, whole commands in a fresh process (s); busy: another process on one core")
    print(f"| command | before ({args.base}) | now | now, one core busy | busy / quiet |")
    print("|---|---:|---:|---:|---:|")
    for n, m in medians.items():
        print(f"| {COMMANDS[n][1]} | {m['base-quiet']:.2f} | {m['head-quiet']:.2f} | {m['head-busy']:.2f} | "
              f"{m['head-busy'] / m['head-quiet']:.2f}x |")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
