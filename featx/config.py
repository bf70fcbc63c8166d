"""The frozen dataclasses that define a vector (preprocessing, backbone configuration); torch-free."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Sequence

from .errors import BackboneError, ParameterError

DEFAULT_BACKBONE = "efficientnet_lite0"
PRECISIONS = ("auto", "fp32", "bf16", "int8")  # what a backbone can be asked to run at (int8: OpenVINO only)
STORED_PRECISIONS = ("fp32", "bf16", "int8")  # what a store can have been embedded at
STORE_DTYPES = ("float32", "float16")  # how a store keeps its vectors on disk (float16: half the bytes)


CROPS = ("center", "full")  # timm's eval crop of the centre, or the whole image resized to a square
FINAL = "final"  # the backbone's pooled pre-logits features: the one layer a store held before recipes
STAGES = "stages"  # shorthand for every stage's output (pooled) plus the final features
GRID = "grid"  # shorthand for every stage's output pooled over a 2×2 grid (4 values a channel) plus the final features
GRID_CELLS = 2  # the grid of GRID, and what a layer name's suffix asks for: ``blocks.1@2x2``
# The layers `featx embed` reads unless told otherwise: every stage over a 2×2 grid won on each measure of
# benchmarks/bench_defaults.py (classification, neighbours, near-duplicates, audit; README "Recipes"), as every
# stage had won over the final layer alone before it.
DEFAULT_LAYERS = GRID


def layer_names(layers: str | Sequence[str]) -> list[str]:
    """``--layers`` / ``--use-layers`` as names: a comma list or a sequence."""
    return [n.strip() for n in layers.split(",")] if isinstance(layers, str) else list(layers)


def grid_name(tap: str, cells: int = GRID_CELLS) -> str:
    """A stage tap's name pooled over a ``cells``×``cells`` grid: ``blocks.1@2x2``."""
    return f"{tap}@{cells}x{cells}"


def split_grid(name: str) -> tuple[str, int]:
    """``blocks.1@2x2`` → (``blocks.1``, 2); a name without a grid → (name, 1): one average over the map."""
    tap, at, grid = name.partition("@")
    if not at:
        return name, 1
    rows, x, cols = grid.partition("x")
    if not (x and rows.isdigit() and rows == cols and 1 <= int(rows) <= 8):
        raise ValueError(f"{name!r}: a layer's grid is written NAME@NxN with N from 1 to 8, e.g. {grid_name(tap)}")
    return tap, int(rows)


def check_recipe(crop: str, store_dtype: str) -> None:
    """Refuse a crop or store dtype featx does not know (before any model is built or remembered one used)."""
    if store_dtype not in STORE_DTYPES:
        raise ParameterError("store_dtype", f"must be one of {', '.join(STORE_DTYPES)}, not {store_dtype!r}.")
    if crop not in CROPS:
        raise ParameterError("crop", f"must be one of {', '.join(CROPS)}, not {crop!r}.")


@dataclass(frozen=True)
class Recipe:
    """How images become vectors, as a user asks for it: the network (backbone, weights file, image size,
    precision) and what is kept of it (layers, crop, store dtype). ``create_backbone`` resolves it into the
    BackboneConfig a store is keyed by. None: the backbone's native image size; the crop that suits the
    source (``for_source``: the whole image for the built-in datasets, the centre for folders and CSVs).

    One object travels from the CLI's options (cli/options.py) through embed, finetune, compare, serve and
    load_runtime, instead of the same seven keyword arguments in each.
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    image_size: int | None = None
    precision: str = "auto"
    layers: str | tuple[str, ...] | None = DEFAULT_LAYERS
    crop: str | None = None
    store_dtype: str = "float32"

    def for_source(self, source) -> "Recipe":
        """This recipe with the source's own crop when it names none."""
        return self if self.crop else dataclasses.replace(self, crop=source.crop)

    def backbone_args(self) -> dict:
        """create_backbone's keyword arguments besides the name (the centre crop when none is named)."""
        return {"weights": self.weights, "image_size": self.image_size, "precision": self.precision,
                "layers": self.layers, "crop": self.crop or "center", "store_dtype": self.store_dtype}


@dataclass(frozen=True)
class StoreQuery:
    """Which store holds a dataset when several configurations embedded it: each setting given narrows the
    choice; None matches any store (find_dataset). ``weights`` (a file) matches by its fingerprint, as
    ``weights_sha256`` does; ``layers`` by recipe (``final``, ``stages``, ``grid`` or a comma list)."""

    backbone: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    image_size: int | None = None
    precision: str | None = None
    layers: str | None = None
    crop: str | None = None
    store_dtype: str | None = None

    @property
    def narrowed(self) -> bool:
        """Whether any setting narrows the choice (``auto`` precision does not)."""
        return any(v is not None for k, v in dataclasses.asdict(self).items() if k != "precision") or \
            self.precision not in (None, "auto")

    def recipe(self) -> Recipe:
        """The recipe that embeds a dataset into a store this query finds: its settings over the defaults."""
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "weights_sha256"}
        return Recipe(**given)


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input: resize the short side, centre-crop (or take the whole
    image, ``crop="full"``), normalise."""

    input_size: int
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop: str = "center"

    def __post_init__(self):
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {', '.join(CROPS)}, not {self.crop!r}")

    @property
    def resize_size(self) -> int:
        """Short side before the crop, as timm's eval transform computes it (the input size for ``full``)."""
        if self.crop == "full":
            return self.input_size
        return math.floor(self.input_size / self.crop_pct)


@dataclass(frozen=True)
class BackboneConfig:
    """Everything that determines a vector; its hash is the feature store's key."""

    name: str
    weights_sha256: str
    preprocess: PreprocessConfig
    dim: int
    precision: str = "fp32"
    pooling: str = "avg"
    layer: str = "pre_logits"  # what the FINAL layer is
    layers: tuple[str, ...] = (FINAL,)  # the taps concatenated into each vector, in order
    layer_dims: tuple[int, ...] = ()  # their widths; empty means one layer of ``dim``
    store_dtype: str = "float32"  # how the store keeps the vectors: rounding to float16 changes them
    calibration: str = ""  # int8: fingerprint of the images the quantisation was calibrated on

    def __post_init__(self):
        if self.store_dtype not in STORE_DTYPES:
            raise ValueError(f"store_dtype must be one of {', '.join(STORE_DTYPES)}, not {self.store_dtype!r}")
        widths = self.layer_dims or (self.dim,)
        if len(widths) != len(self.layers) or sum(widths) != self.dim:
            raise ValueError(f"layers {self.layers} with widths {widths} do not make {self.dim} dimensions")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        # Settings at their pre-recipe defaults are left out, so every store made before recipes
        # existed keeps its key (and its vectors stay found).
        if self.layers == (FINAL,):
            del d["layers"], d["layer_dims"]
        if self.preprocess.crop == "center":
            del d["preprocess"]["crop"]
        if self.store_dtype == "float32":
            del d["store_dtype"]
        if not self.calibration:
            del d["calibration"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneConfig":
        pre = d["preprocess"]
        pre = PreprocessConfig(**{**pre, "mean": tuple(pre["mean"]), "std": tuple(pre["std"])})
        extra = {"layers": tuple(d.get("layers", (FINAL,))), "layer_dims": tuple(d.get("layer_dims", ()))}
        return cls(**{**d, "preprocess": pre, **extra})

    def columns(self) -> dict[str, tuple[int, int]]:
        """Each stored layer's column range ``(start, stop)`` in the vectors, in order."""
        out, start = {}, 0
        for name, width in zip(self.layers, self.layer_dims or (self.dim,)):
            out[name] = (start, start + width)
            start += width
        return out

    def with_recipe(self, crop: str, store_dtype: str) -> "BackboneConfig":
        """This configuration with another crop and store dtype: what happens outside the network, so the
        network, and what it makes, stay the same (create_backbone sets both as given)."""
        return dataclasses.replace(self, preprocess=dataclasses.replace(self.preprocess, crop=crop),
                                   store_dtype=store_dtype)

    def network(self, precision: str | None = None) -> "BackboneConfig":
        """This configuration less what happens outside the network (the default crop and store dtype): what a
        converted model and auto's measured choice depend on, so recipes that differ only there share them.
        ``precision`` replaces the configuration's (a converted model is fp32 whatever runs it)."""
        return dataclasses.replace(self.with_recipe("center", "float32"), precision=precision or self.precision)

    def final_only(self) -> "BackboneConfig":
        """The configuration of the final layer's columns alone: the store ``--layers final`` embeds into."""
        if FINAL not in self.layers:
            raise ValueError(f"layers {self.layers} do not include the final features")
        start, stop = self.columns()[FINAL]
        return dataclasses.replace(self, dim=stop - start, layers=(FINAL,), layer_dims=())

    @property
    def recipe(self) -> str:
        """The layers and crop in a few words, e.g. ``final, center crop``."""
        layers = ", ".join(self.layers) if len(self.layers) <= 3 else f"{len(self.layers)} layers"
        cells = {split_grid(name)[1] for name in self.layers if name != FINAL}
        if len(self.layers) > 3 and len(cells) == 1 and max(cells) > 1:
            layers += f", stages over a {max(cells)}×{max(cells)} grid"
        return f"{layers}; {self.preprocess.crop} crop"

    @property
    def key(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def request(self, weights: str | None = None) -> Recipe:
        """The recipe that builds this configuration again (with ``weights``, the file its weights came from)."""
        return Recipe(self.name, weights, self.preprocess.input_size, self.precision, self.layers,
                      self.preprocess.crop, self.store_dtype)

    def refuse_unlike(self, made: "BackboneConfig", weights) -> None:
        """Raise BackboneError when ``made``, what this machine re-created from ``request()``, would not
        give this configuration's vectors (other weights, another library version's architecture…)."""
        if made.key == self.key:
            return
        hint = "" if weights else " It was embedded with other weights: pass them as weights=FILE."
        raise BackboneError(f"cannot re-create {self.describe()}: this machine gives {made.describe()}.{hint}",
                            params=("weights",))

    def describe(self) -> str:
        p = self.preprocess
        recipe = "" if self.layers == (FINAL,) and p.crop == "center" else f" ({self.recipe})"
        stored = "" if self.store_dtype == "float32" else f", stored as {self.store_dtype}"
        calibrated = f" (calibration {self.calibration[:12]})" if self.calibration else ""
        return f"{self.name} @ {p.input_size}px, {self.precision}{calibrated}{stored}, weights {self.weights_sha256[:12]}{recipe}"
