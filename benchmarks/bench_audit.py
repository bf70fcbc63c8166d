"""Does `featx audit` find wrong labels? Flipped labels on real data, cleanlab side by side, and a real audit.

1. Flipped labels (Fashion-MNIST's 60,000 training images; digits' 1,797): clean out-of-fold
   probabilities give the confusion each class makes most; then 5% of the labels are flipped with
   seed 0, half to a uniformly random other class, half to the class the clean model confuses
   that class with most. The audit's out-of-fold probabilities (5 folds of featx's logreg) on the
   noisy labels feed confident learning; printed: precision and recall of the flagged set against
   the flipped rows, and the average precision (area under the precision-recall curve) of two
   rankings of every row (self-confidence, normalised margin). cleanlab's `find_label_issues` on
   the very same probabilities, when it is installed (`pip install cleanlab`; not a dependency).
2. The real Fashion-MNIST (all 70,000 images, no flips): `audit_dataset` end to end, with its
   seconds split (folds, ranking, leaks, outliers), the findings' counts, and the contact sheet
   copied to docs/audit-fashion-mnist.png.
3. How far a re-compressed or resized copy drifts: nine 160 px crops of a sample photo against the same
   crops re-saved (the range of cosine similarities).

Vectors: efficientnet_lite0 at 224 px, whole image, every stage (`--layers stages`), embedded into
``--cache`` first when missing (about ten minutes for Fashion-MNIST on two cores).

    .venv/bin/python benchmarks/bench_audit.py [--datasets fashion-mnist,digits] [--cache cache] [--image-size 112]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

from featx.config import Recipe, StoreQuery
from featx.audit import audit_dataset, find_label_issues, out_of_fold_probabilities
from featx.audit.confident import label_quality, neighbour_agreement
from featx.audit.outliers import nearest_neighbours
from featx.audit.runner import NEIGHBOUR_AGREEMENT
from featx.data import open_source
from featx.embed import embed_into_store
from featx.search.flat import normalize
from featx.store import find_dataset

RECIPE = {"backbone": "efficientnet_lite0", "image_size": 224, "crop": "full", "layers": "stages"}


def vectors(dataset: str, cache: str, split: str | None = "train"):
    try:
        store = find_dataset(dataset, cache, StoreQuery(**RECIPE))
    except Exception:
        embed_into_store(open_source(dataset), Recipe(**RECIPE), cache=cache)
        store = find_dataset(dataset, cache, StoreQuery(**RECIPE))
    with store:
        members = store.members(dataset, split)
        X = store.vectors([m.key for m in members])
        blocks = store.config.layer_dims
    return normalize(X, layer_widths=blocks), np.array([m.label for m in members], dtype=str)


def flip_labels(y: np.ndarray, proba: np.ndarray, classes: np.ndarray, rate: float = 0.05, seed: int = 0,
                partner_only: bool = False):
    """5% of rows flipped: half to a random other class, half to the class the clean model confuses most
    (``partner_only``: all of them to that class)."""
    rng = np.random.default_rng(seed)
    given = np.searchsorted(classes, y)
    m = len(classes)
    confusion = np.zeros((m, m), dtype=int)
    np.add.at(confusion, (given, proba.argmax(axis=1)), 1)
    np.fill_diagonal(confusion, -1)
    most_confused = confusion.argmax(axis=1)
    rows = rng.choice(len(y), size=int(round(rate * len(y))), replace=False)
    noisy = given.copy()
    half = 0 if partner_only else len(rows) // 2
    for r in rows[:half]:
        noisy[r] = (given[r] + 1 + rng.integers(m - 1)) % m
    noisy[rows[half:]] = most_confused[given[rows[half:]]]
    flipped = np.zeros(len(y), dtype=bool)
    flipped[rows] = True
    return noisy, flipped


def precision_recall(found: np.ndarray, flipped: np.ndarray) -> dict:
    hits = int(flipped[found].sum())
    return {"flagged": int(len(found)), "precision": round(hits / max(len(found), 1), 4),
            "recall": round(hits / flipped.sum(), 4)}


def flipped_experiment(dataset: str, cache: str, kind: str = "mixed") -> dict:
    """``kind``: ``mixed`` (5%: half random, half the most confused class) or ``partner`` (8%, all to it)."""
    X, y = vectors(dataset, cache)
    clean = out_of_fold_probabilities(X, y, folds=5)
    noisy, flipped = flip_labels(y, clean.proba, clean.classes, *((0.08, 0, True) if kind == "partner" else ()))
    started = time.perf_counter()
    oof = out_of_fold_probabilities(X, clean.classes[noisy], folds=5)
    folds_seconds = time.perf_counter() - started
    out = {"dataset": dataset, "kind": kind, "n": len(y), "flipped": int(flipped.sum()),
           "folds_seconds": round(folds_seconds, 1),
           "clean_oof_accuracy": round(float((clean.proba.argmax(1) == np.searchsorted(clean.classes, y)).mean()), 4)}
    _, near = nearest_neighbours(X, 11)
    agreement = neighbour_agreement(near, noisy)
    for ranking in ("self_confidence", "normalized_margin"):
        issues = find_label_issues(oof.proba, noisy, ranking)
        out[f"featx/{ranking}"] = {**precision_recall(issues.rows, flipped),
                                   "average_precision": round(float(average_precision_score(
                                       flipped, 1 - label_quality(oof.proba, noisy, ranking))), 4)}
        # what `featx audit` reports: the flags whose neighbours mostly carry another label
        checked = issues.rows[agreement[issues.rows] < NEIGHBOUR_AGREEMENT]
        out[f"featx/{ranking}+neighbours"] = precision_recall(checked, flipped)
    try:
        from cleanlab.filter import find_label_issues as cleanlab_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        out["cleanlab"] = "not installed"
    else:
        for ranking in ("self_confidence", "normalized_margin"):
            ranked = cleanlab_issues(noisy, oof.proba, return_indices_ranked_by=ranking)
            scores = get_label_quality_scores(noisy, oof.proba, method=ranking)
            out[f"cleanlab/{ranking}"] = {**precision_recall(np.asarray(ranked), flipped),
                                          "average_precision": round(float(average_precision_score(
                                              flipped, 1 - scores)), 4)}
    print(json.dumps(out), flush=True)
    return out


def real_audit(dataset: str, cache: str) -> dict:
    vectors(dataset, cache, None)  # embedded first if missing, so the audit's seconds are the audit's alone
    started = time.perf_counter()
    report = audit_dataset(dataset, cache=cache, store_query=StoreQuery(**RECIPE), out=Path(cache) / "audit" / f"{dataset}-bench")
    seconds = time.perf_counter() - started
    docs = Path(__file__).resolve().parent.parent / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copyfile(Path(report["out"]) / "report.png", docs / f"audit-{dataset}.png")
    shutil.copyfile(Path(report["out"]) / "report.md", docs / f"audit-{dataset}.md")
    out = {"dataset": dataset, "seconds": round(seconds, 1), "split": report["seconds"], **report["summary"],
           "noise_rate": report["noise_rate"], "confused_pairs": report["confused_pairs"][:5],
           "top_near_leak_similarities": [f["similarity"] for f in report["leaks"] if f["kind"] == "near_leak"][:5],
           "test_images_by_nearest_training_similarity": nearest_train_similarity(dataset, cache)}
    print(json.dumps(out), flush=True)
    return out


def nearest_train_similarity(dataset: str, cache: str, thresholds=(0.95, 0.98, 0.99, 0.995)) -> dict:
    """How many test images have a training image at least this similar: what --leak-threshold would flag."""
    from featx.search.flat import flat_search

    X_train, _ = vectors(dataset, cache, "train")
    X_test, _ = vectors(dataset, cache, "test")
    D, _ = flat_search(X_train, X_test, 1)
    return {str(t): int((D[:, 0] >= t).sum()) for t in thresholds}


def recompression_probe() -> dict:
    """Cosine similarity between 160 px crops of a sample photo and the same crops re-saved: how far a leak
    that was re-compressed or resized drifts (lite0, 224 px, final layer, the default precision)."""
    import io

    from PIL import Image
    from sklearn.datasets import load_sample_images

    from featx.backbones import create_backbone
    from featx.embed import Embedder

    photo = load_sample_images().images[0]
    crops = [Image.fromarray(photo[y:y + 160, x:x + 160]) for y in (0, 100, 200) for x in (0, 200, 400)]

    def encoded(img, fmt="PNG", **kw):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    embedder = Embedder(create_backbone("efficientnet_lite0"))

    def unit(blobs):
        X = embedder.embed_inputs(blobs)
        return X / np.linalg.norm(X, axis=1, keepdims=True)

    base = unit([encoded(c) for c in crops])
    out = {}
    for name, change in (("jpeg quality 95", lambda c: encoded(c, "JPEG", quality=95)),
                         ("jpeg quality 60", lambda c: encoded(c, "JPEG", quality=60)),
                         ("resized to 150 px", lambda c: encoded(c.resize((150, 150))))):
        sims = (base * unit([change(c) for c in crops])).sum(axis=1)
        out[name] = [round(float(sims.min()), 3), round(float(sims.max()), 3)]
    print(json.dumps({"recompression": out}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="fashion-mnist,digits")
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--skip-real", action="store_true", help="only the flipped-label experiments")
    parser.add_argument("--skip-flipped", action="store_true", help="only the audit of the real Fashion-MNIST")
    parser.add_argument("--image-size", type=int, default=224, help="the recipe's input size [default: 224]")
    args = parser.parse_args()
    RECIPE["image_size"] = args.image_size
    for dataset in [] if args.skip_flipped else args.datasets.split(","):
        for kind in ("mixed", "partner"):
            flipped_experiment(dataset, args.cache, kind)
    if not args.skip_real:
        real_audit("fashion-mnist", args.cache)
    recompression_probe()


if __name__ == "__main__":
    main()
