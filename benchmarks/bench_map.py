"""Which 2-D layout for the page's map: PCA, scikit-learn's t-SNE or UMAP, by quality and seconds.

On 10,000 Fashion-MNIST training images (seeded sample; efficientnet_lite0 at 224 px, whole image,
every stage, each layer L2-normalised, then PCA to 50 dimensions for every method), each method's
layout is scored by
  trustworthiness   (scikit-learn, 10 neighbours, on 3,000 of the points): are 2-D neighbours real ones?
  10-NN label agreement in 2-D: how often a point's ten nearest points on the map share its label
and timed (UMAP's one-off numba compilation apart). Then t-SNE and UMAP on all 70,000 images, and
featx.maps' own layout, timed.

    .venv/bin/python benchmarks/bench_map.py [--cache cache] [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE, trustworthiness
from sklearn.neighbors import NearestNeighbors

from featx.maps.layout import compute_layout
from featx.search.flat import normalize
from featx.config import StoreQuery
from featx.store import find_dataset

RECIPE = {"backbone": "efficientnet_lite0", "image_size": 224, "crop": "full", "layers": "stages"}


def label_agreement(Y: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(Y)
    return float((labels[idx[:, 1:]] == labels[:, None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--n", type=int, default=10000)
    args = parser.parse_args()
    with find_dataset("fashion-mnist", args.cache, StoreQuery(**RECIPE)) as store:
        members = store.members("fashion-mnist")
        X_all = normalize(store.vectors([m.key for m in members]), layer_widths=store.config.layer_dims)
    labels_all = np.array([m.label for m in members])
    pick = np.sort(np.random.default_rng(0).choice(len(members), size=args.n, replace=False))
    X, labels = X_all[pick], labels_all[pick]
    X50 = PCA(50, random_state=0).fit_transform(X)
    methods = {
        "pca": lambda Z: PCA(2, random_state=0).fit_transform(Z),
        "tsne": lambda Z: TSNE(2, init="pca", random_state=0).fit_transform(Z),
        "umap": lambda Z: __import__("umap").UMAP(n_components=2, random_state=0).fit_transform(Z),
    }
    started = time.perf_counter()
    methods["umap"](X50[:500])  # numba compiles UMAP on first use: timed apart, not charged to the layout
    print(json.dumps({"umap_first_use_compile_seconds": round(time.perf_counter() - started, 1)}), flush=True)
    rows = []
    for name, fit in methods.items():
        started = time.perf_counter()
        Y = fit(X50)
        seconds = time.perf_counter() - started
        rows.append({"method": name, "n": args.n, "seconds": round(seconds, 1),
                     "trustworthiness": round(float(trustworthiness(X50[:3000], Y[:3000], n_neighbors=10)), 4),
                     "label_agreement_10nn": round(label_agreement(Y, labels), 4)})
        print(json.dumps(rows[-1]), flush=True)
    # all 70,000: PCA to 50 first, as featx.maps does, then each of the two contenders
    Z = PCA(50, random_state=0).fit_transform(X_all)
    for name in ("tsne", "umap"):
        started = time.perf_counter()
        Y = methods[name](Z)
        print(json.dumps({"method": name, "n": len(Z), "seconds": round(time.perf_counter() - started, 1),
                          "label_agreement_10nn": round(label_agreement(Y, labels_all), 4)}), flush=True)
    started = time.perf_counter()
    layout = compute_layout(X_all)
    print(json.dumps({"featx.maps": layout.method, "n": len(X_all), "seconds": round(time.perf_counter() - started, 1)}),
          flush=True)


if __name__ == "__main__":
    main()
