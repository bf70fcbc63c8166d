"""Head bundles: a fitted head as plain arrays plus JSON in one .npz file, written atomically, no pickle."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import BackboneConfig
from ..errors import BundleError
from ..store.atomic import write_npz
from ..store.columns import LayerSelection, select_layers
from .registry import HEAD_NAMES, LINEAR_HEADS
from .scoring import LinearPredictor

FORMAT = "featx-head"
FORMAT_VERSION = 1


@dataclass
class HeadBundle:
    """A fitted head with what it needs to be trusted: its store key, backbone config, classes, metrics."""

    head: object
    head_name: str
    config: BackboneConfig
    dataset: str
    metrics: dict = field(default_factory=dict)
    featx_version: str = __version__
    created: float = field(default_factory=time.time)
    layers: tuple[str, ...] | None = None  # the recipe's layers it reads (None: all of them)

    def selection(self) -> LayerSelection:
        """The columns of the store's vectors this head reads."""
        return select_layers(self.config, self.layers)

    def features(self, X: np.ndarray) -> np.ndarray:
        """The head's input from vectors of its store (its layers' columns)."""
        return self.selection().take(X)

    @property
    def store_key(self) -> str:
        return self.config.key

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.head.classes_]

    def check_config(self, config: BackboneConfig) -> None:
        """Refuse vectors of another backbone configuration, naming both."""
        if config.key != self.config.key or config.dim != self.config.dim:
            raise BundleError(
                f"this {self.head_name} head was trained on vectors of {self.config.describe()} (dim "
                f"{self.config.dim}), but the data is {config.describe()} (dim {config.dim}). Embed the data with "
                f"the head's backbone configuration, or train a head on this one."
            )


def _fitted_arrays(head) -> dict[str, np.ndarray]:
    """The fitted attributes (``name_``) that are arrays, which are all a linear or k-NN head needs."""
    return {k: np.asarray(v) for k, v in vars(head).items() if k.endswith("_") and isinstance(v, np.ndarray)}


def _fitted_scalars(head) -> dict:
    out = {}
    for k, v in vars(head).items():
        if k.endswith("_") and not isinstance(v, np.ndarray):
            if isinstance(v, dict):
                v = {str(a): b for a, b in v.items()}
            out[k] = v
    return out


def save_bundle(bundle: HeadBundle, path: str | os.PathLike) -> Path:
    """Write ``bundle`` to ``path`` via a temp file and a rename: a reader never sees half a bundle."""
    head = bundle.head
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "featx_version": bundle.featx_version,
        "created": bundle.created,
        "head": bundle.head_name,
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in head.get_params().items()},
        "fitted": _fitted_scalars(head),
        "dataset": bundle.dataset,
        "store_key": bundle.store_key,
        "backbone": bundle.config.to_dict(),
        "classes": bundle.classes,
        "metrics": bundle.metrics,
        "layers": None if bundle.layers is None else list(bundle.layers),
    }
    arrays = _fitted_arrays(head)
    # Class names as a unicode array (not object) so np.load never needs pickle.
    arrays["classes_"] = np.asarray(bundle.classes, dtype=str)
    return write_npz(path, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


def load_bundle(path: str | os.PathLike) -> HeadBundle:
    """Read a bundle written by save_bundle; ``allow_pickle=False``, so a bundle cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"head file {str(path)!r} does not exist; train a head on a dataset first.", params=("head",))
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
    except Exception as e:  # a zip, npy or JSON error: whatever it is, this is no bundle featx wrote
        raise BundleError(f"{str(path)!r} is not a featx head bundle ({type(e).__name__}: {e}).") from None
    try:
        return _bundle_from(meta, arrays, path)
    except BundleError:
        raise
    except Exception as e:  # metadata of the wrong types or missing fields: not a bundle featx wrote
        raise BundleError(f"{str(path)!r} is not a featx head bundle ({type(e).__name__}: {e}).") from None


def _bundle_from(meta: dict, arrays: dict, path: Path) -> HeadBundle:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{str(path)!r} is not a featx head bundle.")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise BundleError(f"{str(path)!r} was written by a newer featx ({meta.get('featx_version')}); upgrade featx.")
    if meta["head"] not in HEAD_NAMES:
        raise BundleError(f"{str(path)!r} holds an unknown head type {meta['head']!r}.")
    head = _head_from(meta["head"], meta["params"], {**meta["fitted"], **arrays})
    layers = meta.get("layers")
    if layers is not None and not (isinstance(layers, list) and all(isinstance(n, str) for n in layers)):
        raise BundleError(f"{str(path)!r} is not a featx head bundle (its layers are {layers!r}).")
    if not isinstance(meta["dataset"], str):
        raise BundleError(f"{str(path)!r} is not a featx head bundle (its dataset is {meta['dataset']!r}).")
    bundle = HeadBundle(
        head=head,
        head_name=meta["head"],
        config=BackboneConfig.from_dict(meta["backbone"]),
        dataset=meta["dataset"],
        metrics=meta.get("metrics", {}),
        featx_version=meta.get("featx_version", "?"),
        created=meta.get("created", 0.0),
        layers=None if layers is None else tuple(layers),
    )
    _check_usable(bundle, arrays, path)
    return bundle


def _head_from(name: str, params: dict, fitted: dict):
    """The saved head, ready to predict. A linear head comes back as a LinearPredictor (numpy only: `featx
    predict` imports no scikit-learn, a second of its start-up); the others as their estimator class."""
    params = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()}
    if "blocks" in params:  # bundles saved before 2026-12-06 name the layer widths "blocks"
        params["layer_widths"] = params.pop("blocks")
    if name in LINEAR_HEADS or name == "mlp":
        params.setdefault("scaling", "standard")  # bundles from before the option was added standardised each feature
    if name in LINEAR_HEADS:
        return LinearPredictor(params, fitted)
    from .registry import HEADS

    head = HEADS[name](**params)
    for k, v in fitted.items():
        setattr(head, k, v)
    return head


def _check_usable(bundle: HeadBundle, arrays: dict, path: Path) -> None:
    """Refuse a bundle whose arrays hold NaN or cannot answer: a probe batch must give one finite
    probability row per input, over the bundle's classes (wrong shapes and types fail here, not later)."""
    damaged = sorted(k for k, v in arrays.items() if v.dtype.kind in "fc" and not np.isfinite(v).all())
    if damaged:
        raise BundleError(f"{str(path)!r} is damaged: {', '.join(damaged)} hold NaN or infinite values. Train the "
                          "head again.")
    probe = np.random.default_rng(0).standard_normal((2, bundle.config.dim)).astype(np.float32)
    try:
        P = np.asarray(bundle.head.predict_proba(bundle.features(probe)))
        ok = P.shape == (2, len(bundle.classes)) and bool(np.isfinite(P).all())
    except Exception as e:  # whatever breaks inside the estimator: the arrays are not what it wrote
        raise BundleError(f"{str(path)!r} is damaged: its head cannot predict ({type(e).__name__}: {e}). Train the "
                          "head again.") from None
    if not ok:
        raise BundleError(f"{str(path)!r} is damaged: its head gives {P.shape} probabilities, not finite ones for "
                          f"{len(bundle.classes)} classes. Train the head again.")
