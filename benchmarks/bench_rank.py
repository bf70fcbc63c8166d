"""Is `featx rank` worth running? Its prediction against the truth (`--validate`) on real data, and its cost.

For each dataset the script runs ``rank_candidates(..., validate=True)`` with a fresh cache (so every
embedding is measured, none reused): every candidate of the grid embeds the shared stratified sample
and is scored (k-fold logreg accuracy with interval, LogME); then every candidate embeds the whole
train and test splits, a logreg head trains on all of it and is scored on the test split. Printed:
the table, Kendall's tau (plain and weighted) of the probe, LogME and model size against test
accuracy, the regret of the recommendation, and the seconds of rank against the seconds of
embedding every candidate fully.

``--train``/``--test`` draw a stratified subset of the dataset's own splits (seeded), to keep the
full embedding of two dozen candidates within an hour on two cores.

    .venv/bin/python benchmarks/bench_rank.py --dataset digits --sample 300
    .venv/bin/python benchmarks/bench_rank.py --dataset fashion-mnist --train 20000 --test 5000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from featx.data import SubsetSource, open_source
from featx.rank import RankSettings, parse_candidates, rank_candidates
from featx.rank.report import render_markdown


def stratified_split_subset(source, n_train: int | None, n_test: int | None, seed: int = 0):
    """About n_train of the source's train items and n_test of its test items, each class in proportion."""
    if n_train is None and n_test is None:
        return source
    rng = np.random.default_rng(seed)
    chosen = []
    for split, n in (("train", n_train), ("test", n_test)):
        members = [i for i, item in enumerate(source.items) if item.split == split]
        if n is None or n >= len(members):
            chosen += members
            continue
        labels = np.array([source.items[i].label for i in members])
        for label in np.unique(labels):
            of_class = np.array(members)[labels == label]
            take = int(round(n * len(of_class) / len(members)))
            chosen += rng.choice(of_class, size=take, replace=False).tolist()
    return SubsetSource(source, sorted(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--train", type=int, default=None, help="training images kept [default: all]")
    parser.add_argument("--test", type=int, default=None, help="test images kept [default: all]")
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--candidates", default=None, help="a --candidates spec [default: the default grid]")
    parser.add_argument("--cache", default=None, help="store root [default: a fresh temporary folder]")
    parser.add_argument("--out", default=None, help="report folder [default: benchmarks/out/rank-<dataset>]")
    args = parser.parse_args()

    source = stratified_split_subset(open_source(args.dataset), args.train, args.test)
    out = Path(args.out or Path(__file__).parent / "out" / f"rank-{args.dataset}")
    with tempfile.TemporaryDirectory(prefix="featx-bench-rank-") as fresh:
        started = time.perf_counter()
        report = rank_candidates(source, parse_candidates(args.candidates),
                                 RankSettings(sample=args.sample, folds=args.folds, validate=True),
                                 cache=args.cache or fresh, out=out, name=args.dataset)
        seconds = time.perf_counter() - started
    print(render_markdown(report))
    v = report["validation"]
    print(json.dumps({"dataset": args.dataset, "items": len(source.items), "sample": report["sample"]["n"],
                      "candidates": len(report["rows"]), "seconds": report["seconds"], "wall_seconds": round(seconds),
                      "taus": {k: {"tau": p["tau"], "weighted_tau": p["weighted_tau"], "top_regret": p["top_regret"]}
                               for k, p in v["predictors"].items()},
                      "recommended": v.get("recommended"), "recommended_unpaired": v.get("recommended_unpaired"),
                      "cost_ratio": v.get("cost_ratio")}, indent=1))


if __name__ == "__main__":
    main()
