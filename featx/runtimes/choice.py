"""auto: the faster runtime for this machine, configuration and batch size, measured once and remembered."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

import numpy as np

from ..config import BackboneConfig
from ..hardware import cpu_info
from .base import Runtime, RuntimeChoice, installed_versions
from .cache import CHOICES, read_table, remember

MEASURE_ROUNDS = 2  # timed batches per runtime, after one warm-up batch
MEASURE_IMAGES = 16  # images per measured batch: enough to rank the runtimes, few enough to keep the first run short


def machine_id() -> str:
    """What a measured choice holds for: the CPU model, its cores, and the runtimes' versions."""
    versions = ", ".join(f"{p} {v or '-'}" for p, v in installed_versions("torch", "openvino").items())
    return f"{cpu_info('model name') or 'unknown cpu'} x{os.cpu_count()}; {versions}"


def choice_key(config: BackboneConfig, batch_size: int) -> str:
    """A measured choice holds for the network at its precision, whatever the crop or store dtype."""
    return f"{machine_id()} | {config.network().key} | batch {batch_size}"


def remembered_choice(cache, config: BackboneConfig, batch_size: int) -> RuntimeChoice | None:
    entry = read_table(cache, CHOICES).get(choice_key(config, batch_size))
    if not isinstance(entry, dict) or entry.get("runtime") not in ("torch", "openvino"):
        return None
    return RuntimeChoice(entry["runtime"], "remembered", dict(entry.get("images_per_second", {})))


def measure(runtimes: dict[str, Runtime], batch_size: int, rounds: int = MEASURE_ROUNDS) -> dict[str, float]:
    """Images/s of each runtime on the same batch (content does not change the cost), one warm-up first."""
    size = next(iter(runtimes.values())).preprocess.input_size
    n = min(batch_size, MEASURE_IMAGES)  # 16 images: ~0.5 s for both runtimes, against 2.3 s for 64
    batch = np.random.default_rng(0).integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    speeds = {}
    for name, runtime in runtimes.items():
        runtime(batch)
        start = time.perf_counter()
        for _ in range(rounds):
            runtime(batch)
        speeds[name] = round(rounds * n / (time.perf_counter() - start), 1)
    return speeds


def choose(cache, config: BackboneConfig, batch_size: int, runtimes: dict[str, Runtime]) -> RuntimeChoice:
    """Measure ``runtimes``, keep the fastest, and remember it for this machine and configuration."""
    speeds = measure(runtimes, batch_size)
    best = max(speeds, key=speeds.get)
    remember(cache, CHOICES, choice_key(config, batch_size),
             {"runtime": best, "images_per_second": speeds,
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return RuntimeChoice(best, "measured", speeds)
