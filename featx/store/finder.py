"""Finding stores under a cache root: list and describe them, and pick the one that holds a dataset."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..config import (DEFAULT_BACKBONE, DEFAULT_LAYERS, FINAL, GRID, STAGES, STORED_PRECISIONS, BackboneConfig,
                      StoreQuery, layer_names, split_grid)
from ..errors import BackboneError, DamagedStoreError, DatasetNotStoredError, StoreError
from .store import CATALOG, DEFAULT_CACHE, FeatureStore, store_dir


class DamagedStoreWarning(UserWarning):
    """A store under the cache could not be opened and was skipped; the others still work."""


class ChosenStoreNotice(UserWarning):
    """A dataset is in several stores and the one of the default recipe was taken: which, and how to name another."""

    label = "note"


def store_folders(cache: str | os.PathLike | None = None) -> list[Path]:
    """Every folder under ``cache`` with a catalog, readable or not, oldest name first."""
    root = Path(cache or DEFAULT_CACHE)
    if not root.is_dir():
        return []
    return [d for d in sorted(root.iterdir()) if (d / CATALOG).is_file()]


def list_stores(cache: str | os.PathLike | None = None) -> list[FeatureStore]:
    """Every readable store under ``cache``, oldest directory name first.

    Each store is opened and its catalog quick-checked on its own (see catalog.quick_check); one that
    cannot be read is skipped with a DamagedStoreWarning naming it, so one damaged store never takes
    down the others.
    """
    stores = []
    for d in store_folders(cache):
        try:
            store = FeatureStore(d)
        except StoreError as e:
            skip_damaged(e)
            continue
        problems = store.catalog_problems(force=False)
        if problems:
            store.close()
            skip_damaged(DamagedStoreError(d, "; ".join(problems[:3])))
            continue
        stores.append(store)
    return stores


def skip_damaged(error: StoreError) -> None:
    warnings.warn(f"skipped: {error}", DamagedStoreWarning, stacklevel=3)


def describe_stores(cache: str | os.PathLike | None = None) -> list[dict]:
    """One summary per store under ``cache`` (see FeatureStore.describe), without loading any vector."""
    rows = []
    for store in list_stores(cache):
        with store:
            try:
                rows.append(store.describe())
            except DamagedStoreError as e:
                skip_damaged(e)
    return rows


def _holds(store: FeatureStore, dataset: str) -> bool:
    """Whether ``store`` records ``dataset``; a store whose catalog fails while answering is skipped."""
    try:
        return bool(store.datasets(dataset))
    except DamagedStoreError as e:
        skip_damaged(e)
        return False


def find_dataset(dataset: str, cache: str | os.PathLike | None = None,
                 query: StoreQuery = StoreQuery()) -> FeatureStore:
    """The store under ``cache`` holding ``dataset``, among those ``query`` matches (StoreQuery: any by default).

    When several stores match, the one closest to the default recipe on the settings the query leaves open
    is taken (``default_recipe_store``) and a ChosenStoreNotice says which. Raises StoreError naming the
    candidates when none matches, or when the defaults do not settle it.
    """
    q = query
    weights_sha256 = q.weights_sha256
    if q.weights is not None:
        from ..backbones.weights import sha256_file

        weights_sha256 = sha256_file(q.weights)

    def matches(c: BackboneConfig) -> bool:
        return ((q.backbone is None or c.name == q.backbone)
                and (q.image_size is None or c.preprocess.input_size == q.image_size)
                and (q.precision in (None, "auto") or c.precision == q.precision)
                and (weights_sha256 is None or c.weights_sha256 == weights_sha256)
                and (q.layers is None or recipe_has_layers(c, q.layers))
                and (q.crop is None or c.preprocess.crop == q.crop)
                and (q.store_dtype is None or c.store_dtype == q.store_dtype))

    stores = list_stores(cache)
    hits = [s for s in stores if matches(s.config) and _holds(s, dataset)]
    given = {"backbone": q.backbone, "image_size": q.image_size, "layers": q.layers, "store_dtype": q.store_dtype,
             "precision": None if q.precision == "auto" else q.precision}
    chosen = default_recipe_store([s.config for s in hits], given) if len(hits) > 1 else None
    if chosen is not None:
        def short(c: BackboneConfig) -> str:
            stored = "" if c.store_dtype == "float32" else f", stored as {c.store_dtype}"
            return f"{c.name} @ {c.preprocess.input_size}px ({c.recipe}{stored})"

        others = "; ".join(short(h.config) for h in hits if h.config is not chosen)
        warnings.warn(f"dataset {dataset!r} is in {len(hits)} stores: using {short(chosen)}, the nearest to the "
                      f"default recipe (also there: {others}); name another by its backbone, image size, layers, "
                      "crop or store dtype.", ChosenStoreNotice, stacklevel=2)
        hits = [h for h in hits if h.config is chosen]
    for s in stores:
        if len(hits) != 1 or s is not hits[0]:
            s.close()
    if len(hits) == 1:
        return hits[0]
    if not hits:
        where = str(cache or DEFAULT_CACHE)
        raise DatasetNotStoredError(
            f"no dataset {dataset!r} in the feature stores under {where!r}"
            + (" with those backbone settings" if q.narrowed else "")
            + f". Embed it first (name={dataset!r}), or pass cache=DIR.",
            params=("name", "cache"),
        )
    names = "; ".join(h.config.describe() for h in hits)
    raise StoreError(
        f"dataset {dataset!r} is in several stores ({names}); choose one with backbone=NAME, image_size=PIXELS, "
        f"precision={'|'.join(STORED_PRECISIONS)}, layers=final|stages|grid, crop=center|full or "
        "store_dtype=float32|float16.",
        params=("backbone", "image_size", "precision", "layers", "crop", "store_dtype"),
    )


def default_recipe_store(configs: list[BackboneConfig], given: dict) -> BackboneConfig | None:
    """Of several stores' configurations, the one that keeps the most defaults on the settings not ``given``
    (the default backbone, its native input size, the default layers, not int8, float32 vectors); None when
    two keep as many (the defaults do not settle it)."""
    from ..backbones.registry import get_backbone_spec

    def native(c: BackboneConfig) -> bool:
        try:
            return c.preprocess.input_size == get_backbone_spec(c.name).input_size
        except BackboneError:  # a hub backbone: its native size is not known without timm
            return False

    def kept(c: BackboneConfig) -> int:
        checks = {"backbone": c.name == DEFAULT_BACKBONE, "image_size": native(c),
                  "layers": recipe_has_layers(c, DEFAULT_LAYERS), "store_dtype": c.store_dtype == "float32",
                  "precision": c.precision != "int8"}
        return sum(ok for axis, ok in checks.items() if given.get(axis) is None)

    scores = [kept(c) for c in configs]
    best = max(scores)
    return configs[scores.index(best)] if scores.count(best) == 1 else None


def recipe_has_layers(config: BackboneConfig, layers: str) -> bool:
    """Whether ``config``'s recipe is the one ``--layers`` names (``stages``: every stage tap, average-pooled,
    plus final; ``grid``: every stage tap pooled over a 2×2 grid, plus final)."""
    if layers in (STAGES, GRID):
        stages = config.layers[:-1]
        cells = 2 if layers == GRID else 1
        return (bool(stages) and config.layers[-1] == FINAL
                and all(split_grid(name)[1] == cells for name in stages))
    return set(config.layers) == set(layer_names(layers))


def store_for_config(config: BackboneConfig, cache: str | os.PathLike | None = None,
                     dataset: str | None = None) -> FeatureStore:
    """The existing store of ``config`` (a head's backbone configuration) under ``cache``.

    With ``dataset``, the store must hold it (the error names the datasets there).
    """
    path = store_dir(config, cache)
    if not (path / CATALOG).is_file():
        what = f"embed {dataset!r} with it first" if dataset else "embed a dataset with it first"
        raise StoreError(f"no store for the head's backbone configuration ({config.describe()}) under "
                         f"{str(path.parent)!r}; "
                         f"{what}.")
    store = FeatureStore(path)
    if dataset is not None:
        try:
            store.dataset(dataset)
        except BaseException:
            store.close()
            raise
    return store
