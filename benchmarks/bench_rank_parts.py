"""The parts of `featx rank`'s cost that the README quotes: decoding beside the forward pass, and the k-fold probe.

1. Decoding: 1,024 digits embedded at 224 px (efficientnet_lite0, every stage, torch) into fresh stores, three
   ways in alternating rounds: a decoding worker kept throughout, the default (the worker lets the consumer's
   process decode once decoding proves cheap), and no worker. images/s, median of the rounds.
2. The 5-fold probe on 256, 512 and 1,414 digits × 1,792 stage columns (the rank sample's vectors), this
   checkout against ``--base`` in turn, each in a fresh process: seconds, median of the rounds.

    .venv/bin/python benchmarks/bench_rank_parts.py --base 9129bf4 [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench_revisions import REPO, base_worktree, run_code

DECODE = """
import json, sys, time
from featx.hardware import set_threads
set_threads()
from featx.backbones import create_backbone
from featx.data import SubsetSource, hash_source, open_source
from featx.embed import decoders, embed_source
from featx.store import open_store
how, cache = sys.argv[1], sys.argv[2]
if how == "worker kept":
    decoders.CHEAP_DECODE = 0.0  # never judged cheap: the worker decodes every batch
model = create_backbone("efficientnet_lite0", layers="stages", crop="full")
source = SubsetSource(open_source("digits"), range(1024), name="digits")
hashes = hash_source(source)
with open_store(model.config, cache) as store:
    started = time.perf_counter()
    embed_source(source, model, store, hashes=hashes, workers=0 if how == "no worker" else 1)
print(json.dumps(1024 / (time.perf_counter() - started)))
"""

PROBE = """
import json, sys, time
import numpy as np
from featx.hardware import set_threads
set_threads()
from featx.backbones import create_backbone
from featx.data import open_source
from featx.embed import embed_source
from featx.rank.probe import kfold_accuracy
from featx.store import open_store
import inspect
# the layer widths' parameter, by the name this revision gives it ("blocks" before 2026-12-06)
WIDTHS = "layer_widths" if "layer_widths" in inspect.signature(kfold_accuracy).parameters else "blocks"
cache = sys.argv[1]
model = create_backbone("efficientnet_lite0", image_size=112, layers="stages", crop="full")
with open_store(model.config, cache) as store:
    embed_source(open_source("digits"), model, store)
    members = store.members("digits", "train")
    X = np.asarray(store.vectors([m.key for m in members]))
    y = np.array([m.label for m in members])
    blocks = store.config.layer_dims
out = {}
for n in (256, 512, len(y)):
    started = time.perf_counter()
    kfold_accuracy(X[:n], y[:n], **{WIDTHS: blocks})
    out[n] = time.perf_counter() - started
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision the probe is compared with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        speeds: dict[str, list[float]] = {"worker kept": [], "default": [], "no worker": []}
        for _ in range(args.rounds):
            for how in speeds:
                cache = Path(tmp) / "decode"
                shutil.rmtree(cache, ignore_errors=True)
                speeds[how].append(run_code(DECODE, REPO, how, str(cache)))
        for how, values in speeds.items():
            print(f"decoding, {how}: {statistics.median(values):.1f} images/s "
                  f"({', '.join(f'{v:.1f}' for v in values)})", flush=True)
    with base_worktree(args.base) as (tmp, base):
        seconds: dict[str, list[dict]] = {"base": [], "head": []}
        for _ in range(args.rounds):
            for name, tree in (("base", base), ("head", REPO)):
                seconds[name].append(run_code(PROBE, tree, str(tmp / f"probe-{name}")))
        for name, runs in seconds.items():
            sizes = runs[0].keys()
            line = " / ".join(f"{statistics.median(r[n] for r in runs):.2f}" for n in sizes)
            print(f"5-fold probe at {args.base if name == 'base' else 'this checkout'}, {' / '.join(sizes)} "
                  f"digits: {line} s", flush=True)


if __name__ == "__main__":
    main()
