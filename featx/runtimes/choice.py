"""auto: the faster runtime for this machine, configuration and batch size, measured once and remembered."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata

import numpy as np

from ..config import BackboneConfig
from .base import Runtime
from .cache import CHOICES, read_table, remember

MEASURE_ROUNDS = 2  # timed batches per runtime, after one warm-up batch


@dataclass
class RuntimeChoice:
    """Which runtime runs the backbone and why; ``to_dict()`` goes into ``--json``."""

    runtime: str
    how: str  # asked | measured | remembered | fallback | gpu | int8
    images_per_second: dict[str, float] = field(default_factory=dict)  # the measurement behind the choice
    detail: str = ""  # the runtime's own line, e.g. "openvino 2026.4.1, bf16, 2 parallel requests"

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        why = {
            "asked": "as asked",
            "measured": "measured now",
            "remembered": "measured earlier on this machine",
            "fallback": "OpenVINO is not installed (pip install 'featx[openvino]')",
            "gpu": "a GPU is present",
            "int8": "int8 runs on OpenVINO",
        }.get(self.how, self.how)
        speeds = ", ".join(f"{k} {v:.0f}" for k, v in self.images_per_second.items())
        measured = f"; images/s {speeds}" if speeds else ""
        return f"{self.detail or self.runtime} ({why}{measured})"


def machine_id() -> str:
    """What a measured choice holds for: the CPU model, its cores, and the runtimes' versions."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    versions = []
    for package in ("torch", "openvino"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} -")
    return f"{model or 'unknown cpu'} x{os.cpu_count()}; {', '.join(versions)}"


def choice_key(config: BackboneConfig, batch_size: int) -> str:
    return f"{machine_id()} | {config.key} | batch {batch_size}"


def remembered_choice(cache, config: BackboneConfig, batch_size: int) -> RuntimeChoice | None:
    entry = read_table(cache, CHOICES).get(choice_key(config, batch_size))
    if not isinstance(entry, dict) or entry.get("runtime") not in ("torch", "openvino"):
        return None
    return RuntimeChoice(entry["runtime"], "remembered", dict(entry.get("images_per_second", {})))


def measure(runtimes: dict[str, Runtime], batch_size: int, rounds: int = MEASURE_ROUNDS) -> dict[str, float]:
    """Images/s of each runtime on the same batch (content does not change the cost), one warm-up first."""
    size = next(iter(runtimes.values())).preprocess.input_size
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, 3, size, size), dtype=np.uint8)
    speeds = {}
    for name, runtime in runtimes.items():
        runtime(batch)
        start = time.perf_counter()
        for _ in range(rounds):
            runtime(batch)
        speeds[name] = round(rounds * batch_size / (time.perf_counter() - start), 1)
    return speeds


def choose(cache, config: BackboneConfig, batch_size: int, runtimes: dict[str, Runtime]) -> RuntimeChoice:
    """Measure ``runtimes``, keep the fastest, and remember it for this machine and configuration."""
    speeds = measure(runtimes, batch_size)
    best = max(speeds, key=speeds.get)
    remember(cache, CHOICES, choice_key(config, batch_size),
             {"runtime": best, "images_per_second": speeds,
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return RuntimeChoice(best, "measured", speeds)
