"""Embedding speed, end to end and piece by piece: whole commands, start-up, decoding, and each runtime.

Default (about 45 minutes, run it alone), everything with efficientnet_lite0 at 224 px, batch 64:

  whole command   `featx embed` as a user runs it (a fresh process, fresh store) on 2,000 JPEGs of 256 px
                  cut from scikit-learn's sample photos, against a naive loop in this script (one
                  process: PIL decode, timm's eval transform, fp32 NCHW forward under no_grad) and
                  against the revision before the runtime work (--before, in a git worktree); seconds,
                  images/s, and the time from the process's start to the first stored batch.
  Fashion-MNIST   `featx embed fashion-mnist` (70,000 images) at fp32, bf16 and int8 (auto's runtime) and
                  bf16 on torch, against the naive loop on the first --naive-images; the logreg head's
                  test accuracy on each store and the cosine of each one's vectors to fp32's.
  model only      images/s of each runtime and precision on the same batch of photo crops (alternating
                  rounds), and each one's cosine to torch fp32's vectors.
  decoding        images/s per core of the decoders alone, for 256 and 1,024 px JPEGs and PNGs, in one
                  process and in two worker processes.

    .venv/bin/python benchmarks/bench_embed.py [--before 8f3d751] [--skip-fashion]   # -> benchmarks/out/embed.json
    .venv/bin/python benchmarks/bench_embed.py --only fashion                # one part again, merged
    .venv/bin/python benchmarks/bench_embed.py --recipes-only [--rounds 3]   # --layers stages vs final
    .venv/bin/python benchmarks/bench_embed.py --ray-only                    # local engine vs Ray
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform

from featx.backbones import create_backbone
from featx.embed import embed_source
from featx.data.builtins import load_fashion_mnist_source
from featx.data.sources import FolderSource
from featx.store import FeatureStore, open_store

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "embed.json"
# Runs featx's CLI and reports when the first batch reached the store, counted from the process's start
# (imports included), by wrapping the writer both revisions call; works for any revision of featx.
PROBE = """
import json, os, sys
def since_start():
    with open('/proc/self/stat') as f:
        ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as f:
        return float(f.read().split()[0]) - ticks / os.sysconf('SC_CLK_TCK')
import featx.embed.runner as runner
store_batch, first = runner.store_batch, []
def probe(*args, **kwargs):
    first or first.append(since_start())
    return store_batch(*args, **kwargs)
runner.store_batch = probe
from featx.cli import main
try:
    main(sys.argv[1:], prog_name='featx')
finally:
    print(json.dumps({'first_batch_seconds': first[0] if first else None}), file=sys.stderr)
"""


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


def write_photo_jpegs(root: Path, n: int, size: int, fmt: str = "jpg") -> list[Path]:
    """``n`` square crops of scikit-learn's two sample photos at ``size`` px, in four class folders."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        photo = photos[i % 2]
        w, h = photo.size
        s = int(rng.integers(min(w, h) // 3, min(w, h)))
        x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        crop = photo.crop((x, y, x + s, y + s)).resize((size, size), Image.Resampling.BILINEAR)
        path = root / f"class{i % 4}" / f"{i:05d}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, quality=90) if fmt == "jpg" else crop.save(path)
        files.append(path)
    return files


def naive_embed(images, batch_size: int = 64, full: bool = False) -> float:
    """What img2vec-style code does, in this process: decode, transform, fp32 NCHW forward; images/s.

    ``images`` are file paths or pixel arrays; ``full`` resizes the whole image (Fashion-MNIST's recipe).
    """
    backbone = create_backbone("efficientnet_lite0", precision="fp32")
    model = backbone.model.to(memory_format=torch.contiguous_format)
    p = backbone.config.preprocess
    transform = create_transform(input_size=(3, p.input_size, p.input_size), crop_pct=1.0 if full else p.crop_pct,
                                 interpolation=p.interpolation, mean=p.mean, std=p.std)

    def load(item):
        img = Image.fromarray(item) if isinstance(item, np.ndarray) else Image.open(item)
        return transform(img.convert("RGB"))

    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.stack([load(item) for item in images[i:i + batch_size]])
            model.forward_head(model.forward_features(x), pre_logits=True)
    return len(images) / (time.perf_counter() - start)


def run_featx(tree: Path, *args) -> dict:
    """``featx ARGS --json`` of the featx in ``tree``, in a fresh process: its JSON, wall seconds, first batch."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args), "--json"], env=env, cwd=tree,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"featx {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    probe = json.loads(done.stderr.strip().splitlines()[-1])
    return {"json": json.loads(done.stdout), "seconds": round(seconds, 2),
            "first_batch_seconds": round(probe["first_batch_seconds"], 2)}


def whole_commands(args, tmp: Path, results: dict) -> None:
    folder = tmp / "jpeg256"
    files = write_photo_jpegs(folder, args.images, 256)
    n = len(files)
    naive = naive_embed(files)
    rows = {"naive loop (fp32 NCHW, one process)": {"images_per_second": round(naive, 1)}}
    print(f"{n} JPEGs at 256 px; naive loop: {naive:.1f} images/s", flush=True)
    runs = []
    if args.before:
        from bench_revisions import base_worktree

        with base_worktree(args.before) as (_, base):
            runs.append((f"featx embed at {args.before} (before)", run_featx(base, "embed", folder, "--cache",
                                                                             tmp / "cache-before")))
    cache = tmp / "cache-now"
    runs.append(("featx embed, first run on this machine (converts, measures)",
                 run_featx(REPO, "embed", folder, "--cache", cache)))
    for label, extra in (("featx embed (auto, remembered)", ()), ("featx embed --runtime torch", ("--runtime", "torch")),
                         ("featx embed --runtime openvino --precision fp32", ("--runtime", "openvino", "--precision",
                                                                             "fp32")),
                         ("featx embed --precision int8 (calibrates first)", ("--precision", "int8"))):
        for store in cache.glob("efficientnet_lite0-*"):  # a fresh store; the runtimes folder stays
            shutil.rmtree(store)
        runs.append((label, run_featx(REPO, "embed", folder, "--cache", cache, *extra)))
    for label, run in runs:
        ips = n / run["seconds"]
        runtime = run["json"].get("runtime", {}).get("detail", "torch (before runtimes)")
        rows[label] = {"seconds": run["seconds"], "images_per_second": round(ips, 1), "vs_naive": round(ips / naive, 2),
                       "first_batch_seconds": run["first_batch_seconds"], "runtime": runtime,
                       "precision": run["json"].get("precision", "bf16")}
        print(f"{label}: {run['seconds']:.1f} s, {ips:.1f} images/s ({ips / naive:.2f}x), first batch at "
              f"{run['first_batch_seconds']:.2f} s; {runtime}", flush=True)
    results["jpeg256"] = {"images": n, "rows": rows}


def fashion_mnist(args, tmp: Path, results: dict) -> None:
    source = load_fashion_mnist_source()
    arrays = [source.read(i) for i in range(args.naive_images)]
    naive = naive_embed(arrays, full=True)
    print(f"Fashion-MNIST naive loop on {len(arrays)} images: {naive:.1f} images/s", flush=True)
    rows, stores = {}, {}
    # auto's three precisions, and torch's bf16 beside OpenVINO's (they share a store key: separate caches)
    for precision, runtime in (("fp32", "auto"), ("bf16", "auto"), ("int8", "auto"), ("bf16", "torch")):
        name = precision if runtime == "auto" else f"{precision} --runtime {runtime}"
        cache = tmp / f"fmnist-{precision}-{runtime}"
        run = run_featx(REPO, "embed", "fashion-mnist", "--cache", cache, "--precision", precision, "--runtime", runtime)
        n = run["json"]["n_embedded"]
        trained = subprocess.run([sys.executable, "-m", "featx", "train", "fashion-mnist", "--cache", cache,
                                  "--out", cache / "head.npz", "--json"], capture_output=True, text=True, check=True)
        accuracy = json.loads(trained.stdout)["accuracy"]
        stores[name] = run["json"]["store"]
        rows[name] = {"seconds": run["seconds"], "images_per_second": round(n / run["seconds"], 1),
                      "vs_naive": round(n / run["seconds"] / naive, 2),
                      "first_batch_seconds": run["first_batch_seconds"],
                      "runtime": run["json"]["runtime"]["detail"], "logreg_test_accuracy": round(100 * accuracy, 2)}
        print(f"featx embed fashion-mnist --precision {precision} --runtime {runtime}: {rows[name]}", flush=True)
        if name != "fp32":
            X32, _, keys, _ = FeatureStore(stores["fp32"]).load("fashion-mnist")
            X, _, k, _ = FeatureStore(stores[name]).load("fashion-mnist")
            assert list(k) == list(keys)
            c = cosines(np.asarray(X), np.asarray(X32))
            rows[name]["cosine_to_fp32"] = {"min": round(float(c.min()), 5), "mean": round(float(c.mean()), 5),
                                            "p01": round(float(np.percentile(c, 1)), 5)}
            print(f"{name} vs fp32 cosine: {rows[name]['cosine_to_fp32']}", flush=True)
    results["fashion_mnist"] = {"images": int(len(keys)), "naive_images_per_second": round(naive, 1),
                                "naive_images": len(arrays), "rows": rows}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def model_only(args, tmp: Path, results: dict) -> None:
    """Each runtime and precision on the same 64 photo crops, in alternating rounds; cosine to torch fp32."""
    from featx.data import hash_source, read_input
    from featx.embed.runner import calibration_for
    from featx.config import Recipe
    from featx.runtimes import load_runtime

    folder = tmp / "jpeg256-model"
    write_photo_jpegs(folder, 400, 256)
    source = FolderSource(folder)
    cache = tmp / "cache-model"
    pre = create_backbone("efficientnet_lite0").config.preprocess
    crops = np.stack([read_input(source, i, pre)[1] for i in range(0, 400, 400 // args.batch_size)][:args.batch_size])
    keys, _ = hash_source(source)
    runtimes = {f"{runtime} {precision}": load_runtime(Recipe(precision=precision, layers="final"), runtime=runtime,
                                                      cache=cache, calibrate=calibration_for(source, keys))
                for runtime, precision in (("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"),
                                           ("openvino", "bf16"), ("openvino", "int8"))}
    reference = runtimes["torch fp32"](crops)
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for r in range(args.rounds + 1):
        for name, runtime in runtimes.items():
            start = time.perf_counter()
            for _ in range(3):
                runtime(crops)
            if r:  # the first round warms up
                times[name].append(3 * len(crops) / (time.perf_counter() - start))
    rows = {}
    for name, runtime in runtimes.items():
        c = cosines(runtime(crops), reference)
        rows[name] = {"images_per_second": round(statistics.median(times[name]), 1),
                      "vs_torch_fp32": round(statistics.median(times[name]) / statistics.median(times["torch fp32"]), 2),
                      "cosine_to_torch_fp32": {"min": round(float(c.min()), 5), "mean": round(float(c.mean()), 5)},
                      "detail": runtime.describe()}
        print(f"model only, {name}: {rows[name]}", flush=True)
    results["model_only"] = {"batch": len(crops), "rounds": args.rounds, "rows": rows}


def decoding(args, tmp: Path, results: dict) -> None:
    """The decoders alone: images/s in this process (one core) and in a pool of two worker processes."""
    from featx.embed.decoders import DecoderPool

    pre = create_backbone("efficientnet_lite0").config.preprocess
    rows = {}
    for fmt, size, n in (("jpg", 256, 1000), ("jpg", 1024, 200), ("png", 256, 400), ("png", 1024, 60)):
        folder = tmp / f"decode-{fmt}-{size}"
        write_photo_jpegs(folder, n, size, fmt)
        source = FolderSource(folder)
        row = {}
        for workers in (0, 2):
            with DecoderPool(source, workers) as pool:
                list(pool.batches(list(range(min(n, 64))), pre, 32))  # warm: file cache, forked workers
                start = time.perf_counter()
                for _ in pool.batches(list(range(n)), pre, 32):
                    pass
                row[f"{workers or 1}_process" + ("es" if workers > 1 else "")] = round(n / (time.perf_counter() - start), 1)
        rows[f"{fmt.upper()} {size} px"] = row
        print(f"decoding {fmt} {size} px: {row}", flush=True)
    results["decoding"] = {"cores": os.cpu_count(), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000, help="JPEGs for the whole-command runs")
    ap.add_argument("--naive-images", type=int, default=3000, help="Fashion-MNIST images for its naive loop")
    ap.add_argument("--before", default="8f3d751", help="revision to compare whole commands with ('' to skip)")
    ap.add_argument("--only", choices=("whole", "decoding", "model", "fashion"), action="append", default=None,
                    help="run only these parts (repeatable); their figures replace those in embed.json")
    ap.add_argument("--skip-fashion", action="store_true", help="leave out the Fashion-MNIST runs (35 minutes)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the model-only and --recipes-only runs")
    ap.add_argument("--train", type=int, default=2000, help="--recipes-only / --ray-only: Fashion-MNIST JPEGs")
    ap.add_argument("--test", type=int, default=3000, help="--recipes-only / --ray-only: Fashion-MNIST JPEGs")
    ap.add_argument("--ray-only", action="store_true", help="only featx's local engine against the Ray engine")
    ap.add_argument("--recipes-only", action="store_true",
                    help="only the cost of --layers stages against final (alternating rounds)")
    args = ap.parse_args()
    if args.ray_only:
        return compare_engines(args)
    if args.recipes_only:
        return compare_recipes(args)
    parts = {"whole": whole_commands, "decoding": decoding, "model": model_only, "fashion": fashion_mnist}
    chosen = args.only or [p for p in parts if not (p == "fashion" and args.skip_fashion)]
    results: dict = json.loads(OUT.read_text()) if args.only and OUT.is_file() else {}
    results.update({"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count()})
    with tempfile.TemporaryDirectory() as tmp:
        for part in chosen:
            parts[part](args, Path(tmp), results)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1))
    print(f"wrote {OUT}")


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
