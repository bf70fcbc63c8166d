"""Service throughput: /predict requests per second with 1 and 16 concurrent clients against a real
`featx serve` on loopback, p50/p99 latency, and the ratio; 16 clients without micro-batching as a control.

    .venv/bin/python benchmarks/bench_service.py [--seconds 20] [--image-size 224]

Clients run in this process (one thread and one keep-alive connection each) on the same machine as
the server, so on 2 cores they compete with it for CPU: the figures are for this machine as a whole.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
FEATX = [sys.executable, "-m", "featx.cli"]


def digit_pngs(n: int = 64) -> list[bytes]:
    """Real images: scikit-learn's digits, upscaled to 64×64 PNG files as a client would send them."""
    d = load_digits()
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray((d.images[-1 - i] * 255 / 16).astype(np.uint8)).resize((64, 64)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(cache: Path, image_size: int) -> Path:
    head = cache / "digits-logreg.npz"
    if not head.exists():
        subprocess.run(FEATX + ["embed", "digits", "--image-size", str(image_size), "--cache", str(cache)], check=True)
        subprocess.run(FEATX + ["train", "digits", "--image-size", str(image_size), "--cache", str(cache),
                                "--out", str(head)], check=True)
    return head


class Server:
    def __init__(self, head: Path, cache: Path, extra: list[str]):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "FEATX_LOG_LEVEL": "warning"}
        self.proc = subprocess.Popen(FEATX + ["serve", "--head", str(head), "--cache", str(cache),
                                              "--port", str(self.port), *extra], env=env)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("featx serve did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def load(base: str, clients: int, seconds: float, images: list[bytes]) -> dict:
    """``clients`` threads each sending /predict requests back to back for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start_line = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            http.post("/predict", files={"files": ("w.png", images[c % len(images)], "image/png")})  # warm-up
            start_line.wait()
            stop_at = time.perf_counter() + seconds
            i = c
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = http.post("/predict", files={"files": (f"{i}.png", images[i % len(images)], "image/png")})
                latencies[c].append(time.perf_counter() - t0)
                errors[c] += r.status_code != 200
                i += clients

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start_line.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    lat = np.array([x for per in latencies for x in per]) * 1000
    return {"clients": clients, "requests": int(lat.size), "errors": int(sum(errors)),
            "requests_per_second": round(lat.size / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="load duration per configuration")
    ap.add_argument("--image-size", type=int, default=224, help="backbone input size")
    ap.add_argument("--cache", type=Path, default=OUT / "service-cache")
    args = ap.parse_args()
    head = prepare(args.cache, args.image_size)
    images = digit_pngs()
    rows = []
    for label, clients, extra in (("1 client", 1, []), ("16 clients", 16, []),
                                  ("16 clients, no micro-batching (--max-batch 1)", 16, ["--max-batch", "1"])):
        server = Server(head, args.cache, extra)
        try:
            row = load(server.base, clients, args.seconds, images)
            batching = httpx.get(f"{server.base}/info", timeout=10).json()["batching"]
        finally:
            server.stop()
        row["run"] = label
        row["images_per_forward_pass"] = round(batching["images"] / max(1, batching["forward_passes"]), 2)
        rows.append(row)
        print(f"{label:<48} {row['requests_per_second']:>8.1f} req/s  p50 {row['p50_ms']:>7.1f} ms  "
              f"p99 {row['p99_ms']:>7.1f} ms  ({row['requests']} requests, {row['errors']} errors, "
              f"{row['images_per_forward_pass']} images per forward pass)", flush=True)
    ratio = rows[1]["requests_per_second"] / rows[0]["requests_per_second"]
    control = rows[1]["requests_per_second"] / rows[2]["requests_per_second"]
    print(f"16 clients / 1 client: {ratio:.2f}x; micro-batching / none at 16 clients: {control:.2f}x")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_service.json").write_text(json.dumps({"image_size": args.image_size, "rows": rows,
                                                        "ratio_16_vs_1": ratio, "batching_vs_none": control},
                                                       indent=1))


if __name__ == "__main__":
    main()
