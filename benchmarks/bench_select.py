"""Does `featx select` choose better images to label than chance? A simulation with the labels hidden.

For each dataset, the training split is the pool (its labels hidden) and the test split scores the head:
1. Cold start: for budgets of 10, 20, 50, 100, 200 and 500 images, the images chosen by each strategy
   (typical, coverage, random) from the pool's stored vectors, their true labels revealed, featx's default
   logreg head trained on them (what `featx train` fits) and its test accuracy; mean and spread over 5 seeds.
   Also: in how many seeds every class is among the picks when the budget equals the number of classes.
2. Rounds: five rounds of 20 images (select, label, train, select again), each round choosing with the labels
   of the rounds before: `auto` (featx's default, as `featx select` decides it), typical every round, uncertain
   from the second round, and random rounds.

The strategies run exactly as `featx select` runs them (featx.select.strategies, the same normalised vectors).
Vectors come from whichever store under --cache holds each dataset (the default recipe's store is embedded first
when none does).

    .venv/bin/python benchmarks/bench_select.py [--datasets digits,fashion-mnist] [--cache cache] [--seeds 5]
        [--budgets 10,20,50,100,200,500] [--no-rounds]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from featx.config import StoreQuery
from featx.errors import DatasetNotStoredError
from featx.heads import LogisticHead
from featx.select import strategies
from featx.select.runner import auto_strategy
from featx.store import find_dataset
from featx.store.view import VectorView

BUDGETS = (10, 20, 50, 100, 200, 500)
COLD = ("typical", "coverage", "random")
ROUNDS, PER_ROUND = 5, 20
OUT = Path(__file__).parent / "out" / "select.json"


def load(dataset: str, cache: str):
    """(pool vectors normalised, pool raw, pool labels, test raw, test labels, layer widths, recipe)."""
    try:
        found = find_dataset(dataset, cache, StoreQuery())
    except DatasetNotStoredError:
        from featx.data import open_source
        from featx.embed import embed_into_store

        embed_into_store(open_source(dataset), StoreQuery().recipe(), cache=cache)
        found = find_dataset(dataset, cache, StoreQuery())
    with found as store:
        view = VectorView(store, dataset)
        X, y, keys, _ = store.load(dataset, "train")
        X_test, y_test, _, _ = store.load(dataset, "test")
        return (view.normalised(keys), np.asarray(X), np.asarray(y), np.asarray(X_test), np.asarray(y_test),
                view.layer_widths, store.config.describe())


def accuracy(X, y, picked, X_test, y_test, widths, seed) -> float:
    """Test accuracy of featx's default logreg head trained on the picked images (their labels revealed)."""
    if len(set(y[picked])) < 2:
        return float(np.mean(y_test == y[picked][0]))
    head = LogisticHead(layer_widths=widths, random_state=seed).fit(X[picked], y[picked])
    return float(np.mean(head.predict(X_test) == y_test))


def choose(name: str, Xn, budget: int, seed: int, graph, labelled=None, y_known=None, X_raw=None, widths=None):
    """Positions in the pool chosen by strategy ``name`` (``labelled``: positions already labelled)."""
    pool = np.setdiff1d(np.arange(len(Xn)), labelled) if labelled is not None else np.arange(len(Xn))
    known_X = Xn[labelled] if labelled is not None and len(labelled) else None
    if name == "random":
        return pool[strategies.random_picks(len(pool), budget, seed).rows]
    if name == "typical":
        return pool[strategies.typical(Xn[pool], budget, known_X, seed).rows]
    if name == "coverage":
        sub = graph if labelled is None else None  # the pool's graph, when the pool is every image
        return pool[strategies.coverage(Xn[pool], budget, known_X, seed, graph=sub).rows]
    if name == "uncertain":
        head = LogisticHead(C=1.0, layer_widths=widths, random_state=seed).fit(X_raw[labelled], y_known)
        proba = head.predict_proba(X_raw[pool])
        return pool[strategies.uncertain(Xn[pool], proba, head.classes_, budget, seed).rows]
    raise ValueError(name)


def rounds(strategy: str, Xn, X, y, X_test, y_test, widths, seed, graph) -> list[float]:
    """Accuracy after each of ROUNDS rounds of PER_ROUND picks, each round choosing with the labels before."""
    labelled = np.zeros(0, np.int64)
    out = []
    for r in range(ROUNDS):
        name = strategy
        if strategy == "auto":  # as choose_in_store decides
            classes = len(set(y[labelled]))
            name = auto_strategy(len(Xn) - len(labelled), PER_ROUND + len(labelled), len(labelled) / max(classes, 1),
                                 head_ready=classes >= 2)
        elif strategy == "uncertain" and r == 0:
            name = "typical"  # no head before the first labels
        picked = choose(name, Xn, PER_ROUND, seed * 100 + r, graph, labelled if r else None, y[labelled], X, widths)
        labelled = np.concatenate([labelled, picked])
        out.append(accuracy(X, y, labelled, X_test, y_test, widths, seed))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--no-rounds", action="store_true",
                        help="the cold-start budgets only (Fashion-MNIST's rounds cluster 60,000 vectors 25 times over)")
    parser.add_argument("--figure", default="docs/select.png", help="where the figure is drawn")
    parser.add_argument("--figure-only", action="store_true", help="draw the figure from the saved results only")
    args = parser.parse_args()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if args.figure_only:
        return figure(results, Path(args.figure))
    for dataset in args.datasets.split(","):
        Xn, X, y, X_test, y_test, widths, recipe = load(dataset, args.cache)
        classes = len(set(y))
        started = time.perf_counter()
        graph = strategies.neighbour_graph(Xn)
        row = {"recipe": recipe, "pool": len(Xn), "test": len(X_test), "classes": classes,
               "graph_seconds": round(time.perf_counter() - started, 1), "cold": {}, "rounds": {}}
        for budget in map(int, args.budgets.split(",")):
            cell = {}
            for name in COLD:
                accs, seconds, complete = [], [], 0
                for seed in range(args.seeds):
                    t = time.perf_counter()
                    picked = choose(name, Xn, budget, seed, graph)
                    seconds.append(time.perf_counter() - t)
                    complete += len(set(y[picked])) == classes
                    accs.append(accuracy(X, y, picked, X_test, y_test, widths, seed))
                cell[name] = {"mean": round(100 * float(np.mean(accs)), 2), "std": round(100 * float(np.std(accs)), 2),
                              "all_classes": complete, "seconds": round(float(np.mean(seconds)), 2)}
            row["cold"][budget] = cell
            print(json.dumps({dataset: {budget: cell}}), flush=True)
        for strategy in () if args.no_rounds else ("auto", "typical", "uncertain", "random"):
            curves = [rounds(strategy, Xn, X, y, X_test, y_test, widths, seed, graph) for seed in range(args.seeds)]
            row["rounds"][strategy] = {"mean": [round(100 * float(v), 2) for v in np.mean(curves, axis=0)],
                                       "std": [round(100 * float(v), 2) for v in np.std(curves, axis=0)]}
            print(json.dumps({dataset: {strategy: row["rounds"][strategy]}}), flush=True)
        results[dataset] = row
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(results, indent=1))
    print(table(results))
    figure(results, Path(args.figure))


def figure(results: dict, path: Path) -> None:
    """Test accuracy against the number of labels, each strategy's mean with its spread, one panel a dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from featx.reporting import save_figure

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (dataset, row) in zip(axes[0], results.items()):
        cells = sorted((int(b), cell) for b, cell in row["cold"].items())  # keys are text once saved as JSON
        budgets = [b for b, _ in cells]
        for name, style in zip(COLD, ("o-", "s-", "x--")):
            mean = np.array([cell[name]["mean"] for _, cell in cells])
            std = np.array([cell[name]["std"] for _, cell in cells])
            ax.plot(budgets, mean, style, label=name)
            ax.fill_between(budgets, mean - std, mean + std, alpha=0.15)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel("labelled images, chosen at once")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset} ({row['pool']:,} to choose from)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    print(f"figure: {path}")


def table(results: dict) -> str:
    lines = []
    for dataset, row in results.items():
        lines.append(f"\n{dataset} ({row['pool']:,} to choose from, {row['classes']} classes; {row['recipe']})\n")
        lines.append("| budget | " + " | ".join(COLD) + " | typical − random | every class (typical / random) |")
        lines.append("|---:|" + "---:|" * (len(COLD) + 2))
        for budget, cell in row["cold"].items():
            diff = cell["typical"]["mean"] - cell["random"]["mean"]
            lines.append(f"| {budget} | " + " | ".join(f"{cell[n]['mean']:.1f} ± {cell[n]['std']:.1f}" for n in COLD)
                         + f" | {diff:+.1f} | {cell['typical']['all_classes']} / {cell['random']['all_classes']} |")
        lines.append("\n| rounds of 20 | " + " | ".join(str(PER_ROUND * (r + 1)) for r in range(ROUNDS)) + " |")
        lines.append("|---|" + "---:|" * ROUNDS)
        for strategy, curve in row["rounds"].items():
            lines.append(f"| {strategy} | " + " | ".join(f"{m:.1f}" for m in curve["mean"]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
