"""Which recipe should the plain commands use? final against stages, for what each command does.

One `--layers stages` store per dataset holds both recipes: its final-layer columns are the vectors a
`--layers final` store holds (the same forward pass; rank's stores rely on it). For each recipe:

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

    .venv/bin/python benchmarks/bench_defaults.py [--datasets digits,fashion-mnist] [--cache cache]
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
from featx.config import FINAL
from featx.data import open_source
from featx.embed import embed_into_store
from featx.hardware import set_threads
from featx.heads import LogisticHead
from featx.search.flat import flat_search, normalize
from featx.store import find_dataset
from featx.store.columns import select_layers

SIZES = {"digits": 224, "fashion-mnist": 112}
RECIPES = {"final": [FINAL], "stages": None}  # the column selection of each recipe in the stages store


def recipe(dataset: str) -> dict:
    return {"backbone": "efficientnet_lite0", "image_size": SIZES[dataset], "crop": "full", "layers": "stages"}


def stored(dataset: str, cache: str):
    """(config, members, vectors) of the dataset's stages store, embedding it first when missing."""
    try:
        store = find_dataset(dataset, cache, **recipe(dataset))
    except Exception:
        embed_into_store(open_source(dataset), cache=cache, **recipe(dataset))
        store = find_dataset(dataset, cache, **recipe(dataset))
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


def evaluate(dataset: str, cache: str) -> dict:
    config, members, X_all = stored(dataset, cache)
    labels = np.array([m.label for m in members], dtype=str)
    split = np.array([m.split for m in members])
    train, test = np.where(split == "train")[0], np.where(split == "test")[0]
    folder, originals = near_duplicate_copies(dataset, members)
    with tempfile.TemporaryDirectory() as copies_cache:
        embed_into_store(open_source(str(folder)), cache=copies_cache, **recipe(dataset))
        with find_dataset(folder.name, copies_cache) as store:
            copies = store.members(folder.name)
            order = np.argsort([Path(m.path).name for m in copies])
            Q_all = np.asarray(store.vectors([copies[i].key for i in order]))
    out = {"dataset": dataset, "image_size": SIZES[dataset], "n_train": len(train), "n_test": len(test)}
    for name, layers in RECIPES.items():
        selection = select_layers(config, layers)
        X = selection.take(X_all)
        started = time.perf_counter()
        head = LogisticHead(blocks=selection.blocks, random_state=0).fit(X[train], labels[train])
        fit = time.perf_counter() - started
        accuracy = float((head.predict(X[test]) == labels[test]).mean())
        Z = normalize(X, blocks=selection.blocks)
        _, nn = flat_search(Z[train], Z[test], 10)
        same = labels[train][nn] == labels[test][:, None]
        # the majority of the 10; a tie goes to the label of the nearer neighbour (Counter keeps first-seen order)
        votes = [Counter(row).most_common(1)[0][0] for row in labels[train][nn]]
        _, top = flat_search(Z, normalize(selection.take(Q_all), blocks=selection.blocks), 1)
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
    args = parser.parse_args()
    set_threads()
    results = [evaluate(d, args.cache) for d in args.datasets.split(",")]
    out = Path(__file__).parent / "out" / "defaults.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
