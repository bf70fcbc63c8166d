"""Does a higher ceiling pay? Test-time flip and 2×2 grid pooling of the stages, measured on one forward pass.

One OpenVINO forward pass per image and its mirror image gives, for each view, every stage's output pooled
two ways (the global mean, as featx stores it, and the mean of each cell of a 2×2 grid) and the final
features. From those columns every combination is taken without embedding again:

- ``plain``: what ``--layers stages`` stores today;
- ``flip``: plain, averaged with the mirror image's;
- ``grid``: the stages pooled over a 2×2 grid (``--grid-stages`` lists which), the final features as they are;
- ``flip+grid``: both.

Each is trained with featx's logistic head (and the MLP head with ``--mlp``) on the training split and
tested on the test split, block-normalised per layer like a store's recipe. Writes
``benchmarks/out/views-DATASET-SIZE.json`` (``…-gridSTAGES.json`` for a subset of the stages).

    .venv/bin/python benchmarks/bench_views.py fashion-mnist --image-size 224 --mlp
    .venv/bin/python benchmarks/bench_views.py digits --image-size 224
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "out"


def build(backbone_name: str, image_size: int, crop: str):
    """The backbone, and a module giving each view's [stage means | stage 2×2 cells | final] in one pass."""
    import torch
    from torch import nn

    from featx.backbones import create_backbone

    backbone = create_backbone(backbone_name, image_size=image_size, layers="stages", crop=crop, device="cpu")
    extractor = backbone.extractor

    class Views(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = extractor.model
            self.indices = extractor.indices

        def forward(self, x):
            n = x.shape[0]
            last, stages = self.model.forward_intermediates(torch.cat([x, x.flip(3)]), indices=self.indices)
            means = [t.mean((2, 3)) for t in stages]
            cells = [nn.functional.adaptive_avg_pool2d(t, 2).flatten(1) for t in stages]
            final = self.model.forward_head(last, pre_logits=True)
            both = torch.cat(means + cells + [final], 1)
            return torch.cat([both[:n], both[n:]], 1)

    return backbone, Views().eval()


def embed(dataset: str, backbone_name: str, image_size: int, crop: str, limit: int | None):
    """Every image's views through OpenVINO (bf16), with the labels and splits."""
    import torch

    from featx.config import BackboneConfig
    from featx.data import hash_source, open_source
    from featx.data.reader import read_input
    from featx.runtimes.openvino_runtime import OpenVINORuntime, import_openvino, with_preprocessing
    from featx.transfer.subsets import labelled_splits

    backbone, views = build(backbone_name, image_size, crop)
    pre = backbone.config.preprocess
    ov = import_openvino()
    with torch.inference_mode():
        dim = int(views(torch.zeros(1, 3, image_size, image_size)).shape[1])
    folder = Path(tempfile.mkdtemp(prefix="featx-views-"))
    model = ov.convert_model(views.float(), example_input=torch.zeros(1, 3, image_size, image_size),
                             input=[(-1, 3, image_size, image_size)])
    ov.save_model(with_preprocessing(model, pre), str(folder / "views.xml"), compress_to_fp16=False)
    config = BackboneConfig(name="views", weights_sha256="", preprocess=pre, dim=dim, precision="bf16")
    runtime = OpenVINORuntime(config, folder / "views.xml")
    source = open_source(dataset)
    items = source.items if limit is None else source.items[:limit]
    out = np.empty((len(items), dim), np.float32)
    started, batch, where = time.perf_counter(), [], []
    for i in range(len(items)):
        _, crop_, _ = read_input(source, i, pre)
        batch.append(crop_)
        where.append(i)
        if len(batch) == 64 or i == len(items) - 1:
            out[where] = runtime(np.stack(batch))
            batch, where = [], []
    seconds = time.perf_counter() - started
    # the train/test split every featx command uses (a built-in's own, else featx's seeded one)
    keys, _ = hash_source(source, None)
    parts = labelled_splits(source, keys, dataset)
    labels, splits = np.full(len(source.items), "", object), np.full(len(source.items), "", object)
    for split in ("train", "test"):
        labels[parts[split].indices], splits[parts[split].indices] = parts[split].labels, split
    labels, splits = labels[:len(items)].astype(str), splits[:len(items)].astype(str)
    stage_widths = [int(d["num_chs"]) for d in backbone.model.feature_info]
    return out, labels, splits, stage_widths, seconds


def columns(stage_widths: list[int], final: int, grid_stages: set[int]) -> dict[str, list[tuple[int, int]]]:
    """For each recipe, the (start, stop) column ranges of one view's layers: the view holds every stage's mean,
    then every stage's 2×2 cells, then the final features."""
    edges = np.cumsum([0, *stage_widths, *(4 * w for w in stage_widths), final])
    spans = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    means, cells, last = spans[:len(stage_widths)], spans[len(stage_widths):-1], spans[-1]
    grid = [cells[i] if i in grid_stages else means[i] for i in range(len(stage_widths))]
    return {"plain": means + [last], "grid": grid + [last]}


def take(X: np.ndarray, ranges, per_view: int, flip: bool) -> tuple[np.ndarray, list[int]]:
    """The ranges' columns of the first view (averaged with the mirror view's with ``flip``), and their widths."""
    parts = [X[:, a:b] for a, b in ranges]
    if flip:
        parts = [(p + X[:, per_view + a:per_view + b]) / 2 for p, (a, b) in zip(parts, ranges)]
    return np.concatenate(parts, 1), [b - a for a, b in ranges]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--crop", default="full")
    parser.add_argument("--grid-stages", default="0,1,2,3,4", help="stage indices pooled over 2×2 in 'grid'")
    parser.add_argument("--limit", type=int, help="only the first N images (a quick look)")
    parser.add_argument("--mlp", action="store_true", help="also the MLP head (seconds to a minute each)")
    parser.add_argument("--vectors", type=Path, help="an .npz of an earlier run's views: skip embedding")
    args = parser.parse_args()
    from featx.hardware import set_threads
    from featx.heads import LogisticHead
    from featx.search.flat import normalize

    set_threads()
    if args.vectors and args.vectors.exists():
        z = np.load(args.vectors)
        X, labels, splits, widths, seconds = z["X"], z["labels"], z["splits"], list(z["widths"]), float(z["seconds"])
    else:
        X, labels, splits, widths, seconds = embed(args.dataset, args.backbone, args.image_size, args.crop, args.limit)
        if args.vectors:
            np.savez(args.vectors, X=X, labels=labels, splits=splits, widths=widths, seconds=seconds)
    per_view = X.shape[1] // 2
    final = per_view - 5 * sum(widths)
    grid_stages = {int(i) for i in args.grid_stages.split(",") if i}
    ranges = columns(widths, final, grid_stages)
    train, test = splits == "train", splits == "test"
    results = {"dataset": args.dataset, "image_size": args.image_size, "crop": args.crop, "backbone": args.backbone,
               "grid_stages": sorted(grid_stages), "images": len(X), "embed_seconds": round(seconds, 1),
               "note": "both views in one forward pass: 'plain' costs half of it", "rows": []}
    for name, flip, cols in [("plain", False, "plain"), ("flip", True, "plain"), ("grid", False, "grid"),
                             ("flip+grid", True, "grid")]:
        Z, w = take(X, ranges[cols], per_view, flip)
        Z = normalize(Z, layer_widths=w)  # each layer to the same length, as featx's heads and search do
        heads = [("logreg", LogisticHead)]
        if args.mlp:
            from featx.heads.mlp import MLPHead

            heads.append(("mlp", MLPHead))
        for head_name, Head in heads:
            started = time.perf_counter()
            head = Head().fit(Z[train], labels[train])
            acc = float((head.predict(Z[test]) == labels[test]).mean())
            row = {"variant": name, "head": head_name, "dim": int(Z.shape[1]), "test_accuracy": round(acc * 100, 2),
                   "fit_seconds": round(time.perf_counter() - started, 1)}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    OUT.mkdir(exist_ok=True)
    every = set(range(len(widths)))
    suffix = "" if grid_stages == every else "-grid" + "".join(map(str, sorted(grid_stages)))
    path = OUT / f"views-{args.dataset}-{args.image_size}{suffix}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"embedding both views of {len(X)} images: {seconds:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
