"""Embedding throughput: featx end to end versus a plain img2vec-style loop, in the same script.

Writes Fashion-MNIST images as JPEG files (class folders, train/test), then embeds them twice with
the same efficientnet_lite0 weights at the native 224 px:

  baseline: one process; PIL decode, timm's eval transform, fp32 NCHW forward under torch.no_grad()
  featx:    featx.embed_source on a fresh store (worker decoding, channels-last, bf16 where native)

and prints images/s for both, their ratio, and the test accuracy of logistic-regression heads trained
on each set of vectors (they should agree within 0.5 points).

    .venv/bin/python benchmarks/bench_embed.py [--train 2000] [--test 3000] [--batch-size 64]
    .venv/bin/python benchmarks/bench_embed.py --recipes-only [--rounds 3]   # --layers stages vs final
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from timm.data import create_transform

from featx.backbones import create_backbone
from featx.embed import embed_source
from featx.data.builtins import load_fashion_mnist_source
from featx.data.sources import FolderSource
from featx.store import open_store


def write_jpegs(root: Path, n_train: int, n_test: int) -> list[tuple[Path, str, str]]:
    src = load_fashion_mnist_source()
    rng = np.random.default_rng(0)
    files = []
    for split, n in (("train", n_train), ("test", n_test)):
        idx = [i for i, item in enumerate(src.items) if item.split == split]
        for i in rng.choice(idx, n, replace=False):
            label = src.items[i].label.replace("/", "_")
            path = root / split / label / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(src.read(i), "L").save(path, quality=95)
            files.append((path, label, split))
    return files


def baseline_embed(files, batch_size: int) -> tuple[np.ndarray, float]:
    """What img2vec-style code does: decode, transform, forward in fp32 NCHW, one process."""
    backbone = create_backbone("efficientnet_lite0", precision="fp32")
    model = backbone.model.to(memory_format=torch.contiguous_format)
    p = backbone.config.preprocess
    transform = create_transform(input_size=(3, p.input_size, p.input_size), crop_pct=p.crop_pct,
                                 interpolation=p.interpolation, mean=p.mean, std=p.std)
    out = []
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(files), batch_size):
            x = torch.stack([transform(Image.open(f).convert("RGB")) for f, _, _ in files[i : i + batch_size]])
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).numpy())
    return np.concatenate(out), time.perf_counter() - start


def featx_embed(root: Path, cache: Path, batch_size: int, precision: str = "auto", ray: bool = False,
                layers: str | None = None):
    start = time.perf_counter()
    backbone = create_backbone("efficientnet_lite0", precision=precision, layers=layers)
    source = FolderSource(root, name="fmnist-jpeg")
    engine = None
    if ray:
        from featx.embed.ray_engine import RayEngine

        engine = RayEngine(backbone.config)  # a local Ray instance with every CPU, started inside the timing
    with open_store(backbone.config, cache) as store:
        embed_source(source, backbone, store, batch_size=batch_size, engine=engine)
        X, y, keys, paths = store.load("fmnist-jpeg")
        X = np.array(X)
    seconds = time.perf_counter() - start
    return X, paths, seconds, backbone.config.precision


def head_accuracy(X: np.ndarray, labels, splits) -> float:
    labels, splits = np.asarray(labels), np.asarray(splits)
    train, test = splits == "train", splits == "test"
    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    head.fit(X[train], labels[train])
    return 100.0 * head.score(X[test], labels[test])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    ap.add_argument("--ray", action="store_true", help="also embed with --engine ray (a local Ray instance)")
    ap.add_argument("--ray-only", action="store_true", help="only featx's local engine against the Ray engine")
    ap.add_argument("--recipes-only", action="store_true",
                    help="only the cost of --layers stages against final (alternating rounds)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of --recipes-only")
    args = ap.parse_args()
    if args.ray_only:
        return compare_engines(args)
    if args.recipes_only:
        return compare_recipes(args)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        files = write_jpegs(root, args.train, args.test)
        n = len(files)
        print(f"{n} Fashion-MNIST JPEGs ({args.train} train, {args.test} test), efficientnet_lite0 @ 224 px, "
              f"{torch.get_num_threads()} threads")

        Xb, base_s = baseline_embed(files, args.batch_size)
        base_ips = n / base_s
        print(f"baseline (PIL + timm transform, fp32 NCHW, no_grad): {base_ips:7.1f} images/s ({base_s:.1f} s)")

        Xf, paths, featx_s, precision = featx_embed(root, Path(tmp) / "cache", args.batch_size)
        featx_ips = n / featx_s
        print(f"featx embed ({precision}, channels-last, worker decoding): {featx_ips:7.1f} images/s ({featx_s:.1f} s)"
              " - model load and store writes included")
        print(f"speed-up: {featx_ips / base_ips:.2f}x")
        Xf32, paths32, f32_s, _ = featx_embed(root, Path(tmp) / "cache-fp32", args.batch_size, precision="fp32")
        print(f"featx embed --precision fp32 (for reference):        {n / f32_s:7.1f} images/s ({f32_s:.1f} s), "
              f"{n / f32_s / base_ips:.2f}x the baseline")

        # Align both sets of vectors on file path, then train the same head on each.
        order = {str(p): i for i, p in enumerate(paths)}
        Xf = Xf[[order[str(f.resolve())] for f, _, _ in files]]
        labels = [label for _, label, _ in files]
        splits = [split for _, _, split in files]
        acc_b, acc_f = head_accuracy(Xb, labels, splits), head_accuracy(Xf, labels, splits)
        order32 = {str(p): i for i, p in enumerate(paths32)}
        acc_32 = head_accuracy(Xf32[[order32[str(f.resolve())] for f, _, _ in files]], labels, splits)
        print(f"logistic-regression test accuracy, featx fp32: {acc_32:.2f}%")
        cos = np.sum(Xb * Xf, 1) / np.linalg.norm(Xb, axis=1) / np.linalg.norm(Xf, axis=1)
        print(f"logistic-regression test accuracy: baseline {acc_b:.2f}%, featx {acc_f:.2f}% "
              f"(difference {abs(acc_b - acc_f):.2f} points); vector cosine mean {cos.mean():.4f}, min {cos.min():.4f}")
        if args.json:
            args.json.write_text(json.dumps({
                "n_images": n, "baseline_images_per_second": base_ips, "featx_images_per_second": featx_ips,
                "ratio": featx_ips / base_ips, "precision": precision, "baseline_accuracy": acc_b,
                "featx_accuracy": acc_f, "featx_fp32_images_per_second": n / f32_s, "featx_fp32_accuracy": acc_32,
                "cosine_mean": float(cos.mean())}, indent=2))

        if args.ray:
            compare_engines(args, root, files, featx_ips)


def compare_engines(args, root: Path | None = None, files=None, local_ips: float | None = None) -> None:
    """featx's local engine against the Ray engine on one node, same images, same script."""
    with tempfile.TemporaryDirectory() as tmp:
        if root is None:
            root = Path(tmp) / "images"
            files = write_jpegs(root, args.train, args.test)
            _, _, local_s, _ = featx_embed(root, Path(tmp) / "cache-local", args.batch_size)
            local_ips = len(files) / local_s
            print(f"featx embed, local engine: {local_ips:7.1f} images/s ({local_s:.1f} s)")
        Xr, _, ray_s, _ = featx_embed(root, Path(tmp) / "cache-ray", args.batch_size, ray=True)
        ray_ips = len(files) / ray_s
        print(f"featx embed --engine ray (local Ray, start-up included): {ray_ips:7.1f} images/s ({ray_s:.1f} s); "
              f"{ray_ips / local_ips:.2f}x the local engine")


def compare_recipes(args) -> None:
    """The multi-layer recipe against the final layer alone: same images, fresh stores, alternating rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        files = write_jpegs(root, args.train, args.test)
        speed: dict[str, list[float]] = {"final": [], "stages": []}
        size: dict[str, int] = {}
        for r in range(args.rounds):
            for layers in ("final", "stages"):
                cache = Path(tmp) / f"cache-{layers}-{r}"
                X, _, seconds, _ = featx_embed(root, cache, args.batch_size, layers=layers)
                speed[layers].append(len(files) / seconds)
                size[layers] = sum(f.stat().st_size for f in cache.rglob("*.npy"))
                print(f"round {r + 1} --layers {layers}: {speed[layers][-1]:.1f} images/s, dim {X.shape[1]}", flush=True)
        f, s = np.median(speed["final"]), np.median(speed["stages"])
        print(f"{len(files)} JPEGs at 224 px, median of {args.rounds}: final {f:.1f}, stages {s:.1f} images/s "
              f"({s / f:.3f}x); shards {size['final'] / 1e6:.1f} MB vs {size['stages'] / 1e6:.1f} MB "
              f"({size['stages'] / size['final']:.2f}x)")
    # The forward pass alone, without decoding or the store: what the extra taps cost the model.
    from featx.embed.mapper import Embedder

    embedders = {layers: Embedder(create_backbone("efficientnet_lite0", layers=layers)) for layers in speed}
    x = torch.randint(0, 256, (args.batch_size, 3, 224, 224), dtype=torch.uint8)
    times: dict[str, list[float]] = {layers: [] for layers in embedders}
    for r in range(2 * args.rounds + 1):
        for layers, embedder in embedders.items():
            started = time.perf_counter()
            embedder(x)
            if r:  # the first round warms up
                times[layers].append(time.perf_counter() - started)
    f, s = np.median(times["final"]), np.median(times["stages"])
    print(f"forward pass of {args.batch_size} images alone, median of {2 * args.rounds}: final {f:.3f} s, "
          f"stages {s:.3f} s ({f / s:.3f}x the speed)")


if __name__ == "__main__":
    main()
