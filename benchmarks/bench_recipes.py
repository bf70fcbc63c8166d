"""Which recipe transfers best: final layer vs every stage, centre crop vs whole image, on real data.

For each dataset (all of Fashion-MNIST: 60,000 train, 10,000 test; and digits) and input size, the
script embeds once per crop with ``layers="stages"`` (the final features are its last columns, so
one forward pass serves every layer subset), then trains featx's default logreg head on

  final          the final layer alone (today's default recipe, with that crop)
  stages only    every stage's pooled output, without the final layer
  stages+final   all of it, each layer block normalised on its own

and prints test accuracy and head training seconds. Vectors go to the feature store under
``--cache``, so a rerun (or a later `featx embed --layers stages`) reuses them.

``--normalisation`` compares ways of scaling the stages + final vector for the head (Fashion-MNIST
at 112 px and digits at 224 px, whole image). ``--pooling`` adds a probe of how stage outputs are pooled (average, max, average over a 2x2
grid) on 10,000 training and 5,000 test images of Fashion-MNIST at 112 px, whole image, all
three from the same forward pass.

    .venv/bin/python benchmarks/bench_recipes.py [--sizes 112,224] [--datasets fashion-mnist,digits] [--pooling] [--normalisation]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from featx.backbones import create_backbone
from featx.data import open_source
from featx.embed import embed_source
from featx.heads import LogisticHead, score_predictions, train_head
from featx.store import open_store



def recipe_rows(dataset: str, size: int, crop: str, cache: str, workdir: Path) -> list[dict]:
    backbone = create_backbone("efficientnet_lite0", image_size=size, layers="stages", crop=crop)
    source = open_source(dataset)
    rows = []
    with open_store(backbone.config, cache) as store:
        embedded = embed_source(source, backbone, store)
        stage_names = [n for n in backbone.config.layers if n != "final"]
        for subset, layers in (("final", ["final"]), ("stages only", stage_names), ("stages+final", None)):
            out = workdir / f"{dataset}-{size}-{crop}-{subset.replace(' ', '_')}.npz"
            result = train_head(store, source.name, "logreg", out, use_layers=layers)
            rows.append({"dataset": dataset, "size": size, "crop": crop, "layers": subset,
                         "dim": sum(b - a for n, (a, b) in backbone.config.columns().items()
                                    if layers is None or n in layers),
                         "accuracy": result.accuracy, "train_seconds": result.train_seconds,
                         "embed_images_per_second": embedded.images_per_second})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def pooling_probe(n_train: int = 10000, n_test: int = 5000, size: int = 112) -> list[dict]:
    """Stage outputs pooled three ways from one forward pass, each with the final features, logreg head."""
    import torch

    from featx.data import decode_input
    from featx.hardware import prepare_batch

    source = open_source("fashion-mnist")
    backbone = create_backbone("efficientnet_lite0", image_size=size, crop="full")
    model, pre = backbone.model, backbone.config.preprocess
    rng = np.random.default_rng(0)
    picks = {s: rng.choice([i for i, it in enumerate(source.items) if it.split == s], n, replace=False)
             for s, n in (("train", n_train), ("test", n_test))}
    feats = {}
    for split, idx in picks.items():
        out = {"avg": [], "max": [], "grid2": []}
        for start in range(0, len(idx), 128):
            crops = np.stack([decode_input(source.read(int(i)), pre) for i in idx[start : start + 128]])
            x = prepare_batch(torch.from_numpy(crops), pre, backbone.device)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                last, stages = model.forward_intermediates(x)
                final = model.forward_head(last, pre_logits=True).float()
            stages = [t.float() for t in stages]
            for name, pool in (("avg", lambda t: t.mean((2, 3))), ("max", lambda t: t.amax((2, 3))),
                               ("grid2", lambda t: torch.nn.functional.adaptive_avg_pool2d(t, 2).flatten(1))):
                out[name].append(torch.cat([pool(t) for t in stages] + [final], 1).numpy())
        feats[split] = {k: np.concatenate(v) for k, v in out.items()}
        labels = np.array([source.items[int(i)].label for i in idx])
        feats[split]["y"] = labels
    widths_avg = [t.shape[1] for t in stages]
    rows = []
    for name in ("avg", "max", "grid2"):
        per = 4 if name == "grid2" else 1
        blocks = tuple(w * per for w in widths_avg) + (backbone.dim,)
        started = time.perf_counter()
        head = LogisticHead(layer_widths=blocks).fit(feats["train"][name], feats["train"]["y"])
        seconds = time.perf_counter() - started
        acc = score_predictions(feats["test"]["y"], head.predict(feats["test"][name])).accuracy
        rows.append({"pooling": name, "dim": sum(blocks), "accuracy": acc, "train_seconds": round(seconds, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def normalisation_probe(cache: str, dataset: str = "fashion-mnist", size: int = 112, crop: str = "full") -> list[dict]:
    """How the stages + final vector is scaled before the default logreg: per layer block (featx's
    default), one L2 norm over the whole vector, or per-feature standardisation."""
    backbone = create_backbone("efficientnet_lite0", image_size=size, layers="stages", crop=crop)
    source = open_source(dataset)
    blocks = tuple(b - a for a, b in backbone.config.columns().values())
    rows = []
    with open_store(backbone.config, cache) as store:
        embed_source(source, backbone, store)  # reuses the vectors recipe_rows stored
        X, y, _, _ = store.load(source.name, "train")
        Xt, yt, _, _ = store.load(source.name, "test")
        for name, params in (("per layer block (default)", {"blocks": blocks}), ("whole vector L2", {}),
                             ("standardise each feature", {"scaling": "standard"})):
            started = time.perf_counter()
            head = LogisticHead(**params).fit(np.asarray(X), y)
            seconds = time.perf_counter() - started
            acc = score_predictions(yt, head.predict(np.asarray(Xt))).accuracy
            rows.append({"scaling": name, "accuracy": acc, "train_seconds": round(seconds, 2), "C": head.C_})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="112,224")
    parser.add_argument("--datasets", default="fashion-mnist,digits")
    parser.add_argument("--crops", default="center,full")
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--pooling", action="store_true", help="also run the pooling probe")
    parser.add_argument("--normalisation", action="store_true",
                        help="also compare ways of scaling a multi-layer vector for the head (112 px, full)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                for crop in args.crops.split(","):
                    rows += recipe_rows(dataset, size, crop, args.cache, Path(tmp))
    print("\n| dataset | px | crop | layers | dims | logreg test accuracy | head seconds |")
    print("|---|---:|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['size']} | {r['crop']} | {r['layers']} | {r['dim']:,} | "
              f"{r['accuracy']:.2%} | {r['train_seconds']:.1f} |")
    if args.normalisation:
        print()
        for dataset, size in (("fashion-mnist", 112), ("digits", 224)):
            for r in normalisation_probe(args.cache, dataset, size):
                print(f"{dataset} {size} px, {r['scaling']}: {r['accuracy']:.2%}, head {r['train_seconds']} s "
                      f"(C={r['C']:g})")
    if args.pooling:
        print()
        for r in pooling_probe():
            print(f"pooling {r['pooling']}: {r['dim']} dims, {r['accuracy']:.2%}, head {r['train_seconds']} s")


if __name__ == "__main__":
    main()
