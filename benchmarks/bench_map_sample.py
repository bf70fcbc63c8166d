"""A map of every image against one fitted on a sample (the rest placed by UMAP's transform), on Fashion-MNIST.

featx.maps lays out up to FIT_SAMPLE points with UMAP fitted on all of them; beyond that it fits PCA and UMAP on
a random sample and places the others with `transform`, so a million points never sit in memory at once. This
compares the two on all 70,000 Fashion-MNIST images (efficientnet_lite0 at 224 px, whole image, every stage):
seconds, trustworthiness (10 neighbours, 3,000 points, in the 50-d PCA space) and 10-NN label agreement on the
map, for fitted samples of 10,000 and 20,000 against the whole set.

    .venv/bin/python benchmarks/bench_map_sample.py [--cache cache] [--samples 10000,20000]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness

from bench_map import RECIPE, label_agreement
from featx.config import StoreQuery
from featx.maps.layout import compute_layout, import_umap
from featx.search.flat import normalize
from featx.store import find_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--samples", default="10000,20000")
    args = parser.parse_args()
    with find_dataset("fashion-mnist", args.cache, StoreQuery(**RECIPE)) as store:
        members = store.members("fashion-mnist")
        X = store.vectors([m.key for m in members])
        widths = store.config.layer_dims
    labels = np.array([m.label for m in members])
    check = np.sort(np.random.default_rng(1).choice(len(X), 3000, replace=False))
    X50 = PCA(50, random_state=0).fit_transform(normalize(X, layer_widths=widths)[check])
    # numba compiled (or loaded from its cache) before any timing: a fit past 4,096 points (nearest-neighbour
    # descent) and a transform; what cannot be cached compiles again in each process
    started = time.perf_counter()
    warm = np.random.default_rng(0).random((5000, 8)).astype(np.float32)
    import_umap().UMAP(n_components=2).fit(warm).transform(warm[:100])
    print(json.dumps({"compile_or_load_seconds": round(time.perf_counter() - started, 1)}), flush=True)
    for sample in [None, *map(int, args.samples.split(","))]:
        started = time.perf_counter()
        layout = compute_layout(X, layer_widths=widths, fit_sample=sample or len(X))
        seconds = time.perf_counter() - started
        Y = layout.points
        print(json.dumps({"fitted_on": sample or len(X), "seconds": round(seconds, 1), "method": layout.method,
                          "trustworthiness": round(float(trustworthiness(X50, Y[check], n_neighbors=10)), 4),
                          "label_agreement_10nn": round(label_agreement(Y, labels), 4)}), flush=True)


if __name__ == "__main__":
    main()
