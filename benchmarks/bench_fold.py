"""Batch norm folded into the convolutions: the torch runtime's forward pass before and after, side by side.

For each backbone and size, the extractor as built (``backbone.extractor``) and the folded copy the torch
runtime runs (``backbone.inference``) take turns on the same random batch under bf16 autocast, as
``featx embed --runtime torch`` runs them; images per second, best of the rounds.

    .venv/bin/python benchmarks/bench_fold.py [--rounds 5] [--batch 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from featx.backbones import create_backbone
from featx.hardware import set_threads

CASES = [("efficientnet_lite0", 224), ("efficientnet_lite0", 112), ("efficientnet_lite2", 260)]


def rate(module, x: torch.Tensor) -> float:
    started = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        module(x)
    return len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--layers", default="grid")
    args = parser.parse_args()
    set_threads()
    print("| backbone | px | as built (images/s) | folded (images/s) | ratio |\n|---|---:|---:|---:|---:|")
    for name, size in CASES:
        backbone = create_backbone(name, image_size=size, layers=args.layers, device="cpu")
        x = torch.rand(args.batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        plain, folded = backbone.extractor, backbone.inference
        rate(plain, x), rate(folded, x)  # warm-up
        best = {"plain": 0.0, "folded": 0.0}
        for _ in range(args.rounds):
            best["plain"] = max(best["plain"], rate(plain, x))
            best["folded"] = max(best["folded"], rate(folded, x))
        print(f"| {name} | {size} | {best['plain']:.1f} | {best['folded']:.1f} | {best['folded'] / best['plain']:.2f}x |")


if __name__ == "__main__":
    main()
