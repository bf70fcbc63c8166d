"""The logistic-regression fit `featx train` runs, alone: this checkout against an earlier revision, in turn.

Digits embedded with the default recipe (every stage over a 2×2 grid, 1,414 × 3,328) into a scratch cache
once; then, in a fresh process per revision and round, `LogisticHead` with its C search fitted on the train
split four times in a row: the best of the four (the first pays for imports and warm-up), for all of the
recipe's columns and for the final layer's alone (1,414 × 1,280). Prints the medians over the rounds and
the chosen C with the test accuracy, which must not move.

    .venv/bin/python benchmarks/bench_fit.py --base a472e61 [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from bench_revisions import REPO, base_worktree, run_code

FIT = """
import json, sys, time
import numpy as np
from featx.hardware import set_threads
set_threads()
from featx.heads import LogisticHead
from featx.store import find_dataset
from featx.store.columns import select_layers
import inspect
# the layer widths' parameter, by the name this revision gives it ("blocks" before 2026-12-06)
WIDTHS = "layer_widths" if "layer_widths" in inspect.signature(LogisticHead).parameters else "blocks"
out = {}
with find_dataset("digits", sys.argv[1]) as store:
    X0, y, _, _ = store.load("digits", "train")
    Xt0, yt, _, _ = store.load("digits", "test")
    for name, use in (("all", None), ("final", [store.config.layers[-1]])):
        selection = select_layers(store.config, use)
        X, Xt = selection.take(np.asarray(X0)), selection.take(np.asarray(Xt0))
        widths = getattr(selection, "layer_widths", None) or getattr(selection, "blocks", None)
        seconds = []
        for _ in range(4):
            started = time.perf_counter()
            head = LogisticHead(**{WIDTHS: widths}).fit(X, y)
            seconds.append(time.perf_counter() - started)
        out[name] = {"seconds": min(seconds), "C": head.C_, "accuracy": float(np.mean(head.predict(Xt) == yt)),
                     "shape": list(X.shape)}
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier revision (a commit or tag)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with base_worktree(args.base) as (tmp, base):
        cache = tmp / "cache"
        subprocess.run([sys.executable, "-m", "featx", "embed", "digits", "--cache", str(cache)], cwd=REPO,
                       check=True, capture_output=True)
        runs: dict[str, list[dict]] = {"base": [], "head": []}
        for r in range(args.rounds):
            for name, tree in (("base", base), ("head", REPO)):
                runs[name].append(run_code(FIT, tree, str(cache)))
                print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v['seconds']:.3f} s"
                                                           for k, v in runs[name][-1].items()), flush=True)
    for name, values in runs.items():
        label = args.base if name == "base" else "this checkout"
        for part in values[0]:
            last = values[-1][part]
            print(f"{label}, {' × '.join(map(str, last['shape']))}: fit "
                  f"{statistics.median(v[part]['seconds'] for v in values):.3f} s (median of {len(values)}), "
                  f"C={last['C']:g}, test accuracy {last['accuracy']:.2%}")


if __name__ == "__main__":
    main()
