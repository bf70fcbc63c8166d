"""Which recipe should the plain commands use? final against stages against grid, for what each command does.

One `--layers stages` store per dataset holds two recipes: its final-layer columns are the vectors a
`--layers final` store holds (the same forward pass; rank's stores rely on it); a `--layers grid` store
(every stage averaged over a 2×2 grid) is the third. For each recipe:

- classification (`featx train`): the default logreg head's test accuracy and fit seconds;
- search (`featx search`): neighbour-label agreement (the share of a test image's 10 nearest training
  images with its label) and 10-NN majority accuracy; near-duplicate top-1: 300 test images,
  re-cropped to 90%, brightened by 20% and saved as JPEG at quality 60, each looked up among all the
  dataset's images (is the original the first answer?);
- audit (`featx audit`): 5% of the training labels flipped (seed 0, half at random, half to the class
  most confused with; as bench_audit.py), confident learning on 5-fold out-of-fold probabilities:
  precision and recall of the flagged rows;
- cost: bytes per stored vector.

Recipes: efficientnet_lite0, whole image, at 224 px (digits) and 112 px (Fashion-MNIST, as its README
figures), embedded into ``--cache`` when missing. Writes benchmarks/out/defaults.json.

    .venv/bin/python benchmarks/bench_defaults.py [--datasets digits,fashion-mnist] [--cache cache] [--recipes ...]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from bench_audit import flip_labels, precision_recall
from featx.audit import find_label_issues, out_of_fold_probabilities
from featx.config import FINAL, Recipe, StoreQuery
from featx.data import open_source
from featx.embed import embed_into_store
from featx.hardware import set_threads
from featx.heads import LogisticHead
from featx.search.flat import flat_search, normalize
from featx.store import find_dataset
from featx.store.columns import select_layers

SIZES = {"digits": 224, "fashion-mnist": 112}
# each recipe: the store's --layers, and the column selection in it (None: all of them)
RECIPES = {"final": ("stages", [FINAL]), "stages": ("stages", None), "grid": ("grid", None)}


def recipe(dataset: str, layers: str = "stages") -> dict:
    return {"backbone": "efficientnet_lite0", "image_size": SIZES[dataset], "crop": "full", "layers": layers}


def stored(dataset: str, cache: str, layers: str = "stages"):
    """(config, members, vectors) of the dataset's store of ``layers``, embedding it first when missing."""
    try:
        store = find_dataset(dataset, cache, StoreQuery(**recipe(dataset, layers)))
    except Exception:
        embed_into_store(open_source(dataset), Recipe(**recipe(dataset, layers)), cache=cache)
        store = find_dataset(dataset, cache, StoreQuery(**recipe(dataset, layers)))
    with store:
        members = store.members(dataset)
        return store.config, members, np.asarray(store.vectors([m.key for m in members]))


def near_duplicate_copies(dataset: str, members, n: int = 300, seed: int = 0):
    """(folder of n altered copies of test images, the originals' positions in ``members``)."""
    source = open_source(dataset)
    rng = np.random.default_rng(seed)
    tests = [i for i, m in enumerate(members) if m.split == "test"]
    picked = rng.choice(tests, size=min(n, len(tests)), replace=False)
    items = {it.path: j for j, it in enumerate(source.items)}
    folder = Path(tempfile.mkdtemp(prefix="featx-copies-"))
    for n_copy, i in enumerate(picked):
        raw = source.read(items[members[i].path])
        image = Image.fromarray(raw) if isinstance(raw, np.ndarray) else Image.open(io.BytesIO(raw))
        image = image.convert("RGB")
        w, h = image.size
        box = (round(0.05 * w), round(0.05 * h), round(0.95 * w), round(0.95 * h))
        altered = ImageEnhance.Brightness(image.crop(box).resize((w, h))).enhance(1.2)
        altered.save(folder / f"{n_copy:04d}.jpg", quality=60)
    return folder, np.asarray(picked)


def evaluate(dataset: str, cache: str, recipes: list[str]) -> dict:
    stores = {layers: stored(dataset, cache, layers) for layers in {RECIPES[r][0] for r in recipes}}
    _, members, _ = stores["stages"] if "stages" in stores else next(iter(stores.values()))
    labels = np.array([m.label for m in members], dtype=str)
    split = np.array([m.split for m in members])
    train, test = np.where(split == "train")[0], np.where(split == "test")[0]
    folder, originals = near_duplicate_copies(dataset, members)
    queries = {}
    with tempfile.TemporaryDirectory() as copies_cache:
        for layers in stores:
            embed_into_store(open_source(str(folder)), Recipe(**recipe(dataset, layers)), cache=copies_cache)
            with find_dataset(folder.name, copies_cache, StoreQuery(layers=layers)) as store:
                copies = store.members(folder.name)
                order = np.argsort([Path(m.path).name for m in copies])
                queries[layers] = np.asarray(store.vectors([copies[i].key for i in order]))
    out = {"dataset": dataset, "image_size": SIZES[dataset], "n_train": len(train), "n_test": len(test)}
    for name in recipes:
        layers, columns = RECIPES[name]
        config, their_members, X_all = stores[layers]
        assert [m.key for m in their_members] == [m.key for m in members]  # the same images, in the same order
        Q_all = queries[layers]
        selection = select_layers(config, columns)
        X = selection.take(X_all)
        started = time.perf_counter()
        head = LogisticHead(layer_widths=selection.layer_widths, random_state=0).fit(X[train], labels[train])
        fit = time.perf_counter() - started
        accuracy = float((head.predict(X[test]) == labels[test]).mean())
        Z = normalize(X, layer_widths=selection.layer_widths)
        _, nn = flat_search(Z[train], Z[test], 10)
        same = labels[train][nn] == labels[test][:, None]
        # the majority of the 10; a tie goes to the label of the nearer neighbour (Counter keeps first-seen order)
        votes = [Counter(row).most_common(1)[0][0] for row in labels[train][nn]]
        _, top = flat_search(Z, normalize(selection.take(Q_all), layer_widths=selection.layer_widths), 1)
        y = labels[train]
        clean = out_of_fold_probabilities(Z[train], y, folds=5)
        noisy, flipped = flip_labels(y, clean.proba, clean.classes)
        oof = out_of_fold_probabilities(Z[train], clean.classes[noisy], folds=5)
        issues = find_label_issues(oof.proba, noisy)
        out[name] = {
            "dim": selection.dim, "bytes_per_vector": selection.dim * 4,
            "logreg_test_accuracy": round(accuracy, 4), "logreg_fit_seconds": round(fit, 2),
            "neighbour_label_agreement@10": round(float(same.mean()), 4),
            "knn10_accuracy": round(float(np.mean(np.array(votes) == labels[test])), 4),
            "near_duplicate_top1": round(float(np.mean(top[:, 0] == originals)), 4),
            "audit_5pct_flips": precision_recall(issues.rows, flipped),
        }
        print(json.dumps({dataset: {name: out[name]}}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"of {', '.join(RECIPES)}")
    args = parser.parse_args()
    set_threads()
    results = [evaluate(d, args.cache, args.recipes.split(",")) for d in args.datasets.split(",")]
    out = Path(__file__).parent / "out" / "defaults.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
