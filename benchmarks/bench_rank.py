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
    .venv/bin/python benchmarks/bench_rank.py --probe-cost     # seconds per candidate: probe vs LogME
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


def probe_cost(cache: str = "cache", n: int = 2000) -> None:
    """Seconds to score one candidate on a 2,000-image Fashion-MNIST sample: the 5-fold probe against LogME,
    and the probe with C chosen once on the sample (the speed-up considered, not adopted)."""
    from featx.heads import LogisticHead
    from featx.rank.logme import logme
    from featx.rank.probe import kfold_accuracy
    from featx.rank.sample import stratified_sample
    from featx.search.flat import normalize
    from featx.config import StoreQuery
    from featx.store import find_dataset
    from sklearn.model_selection import StratifiedKFold

    with find_dataset("fashion-mnist", cache, StoreQuery(image_size=224, crop="full", layers="stages")) as store:
        members = store.members("fashion-mnist", "train")
        keys, labels = [m.key for m in members], [m.label for m in members]
        pick = stratified_sample(keys, labels, n)
        X = store.vectors([keys[i] for i in pick])
        blocks = store.config.layer_dims
    y = np.array([labels[i] for i in pick])
    for layers, Xs, b in (("stages", X, blocks), ("final", X[:, -1280:], None)):
        started = time.perf_counter()
        probe = kfold_accuracy(Xs, y, layer_widths=b)
        probe_seconds = time.perf_counter() - started
        started = time.perf_counter()
        logme(normalize(Xs, layer_widths=b), y)
        logme_seconds = time.perf_counter() - started
        started = time.perf_counter()
        C = LogisticHead(layer_widths=b).fit(Xs, y).C_
        correct = np.zeros(len(y), bool)
        for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(Xs, y):
            correct[test] = LogisticHead(C=C, layer_widths=b).fit(Xs[train], y[train]).predict(Xs[test]) == y[test]
        fixed_seconds = time.perf_counter() - started
        print(json.dumps({"layers": layers, "probe_seconds": round(probe_seconds, 1), "probe_accuracy": probe.accuracy,
                          "logme_seconds": round(logme_seconds, 2), "fixed_C_probe_seconds": round(fixed_seconds, 1),
                          "fixed_C_accuracy": float(correct.mean())}), flush=True)


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
    parser.add_argument("--probe-cost", action="store_true",
                        help="only time the scorers on a Fashion-MNIST sample from --cache (default: cache)")
    args = parser.parse_args()
    if args.probe_cost:
        return probe_cost(args.cache or "cache")

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
