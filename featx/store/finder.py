"""Finding stores under a cache root: list and describe them, and pick the one that holds a dataset."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..config import FINAL, STAGES, STORED_PRECISIONS, BackboneConfig, layer_names
from ..errors import DamagedStoreError, StoreError
from .store import CATALOG, DEFAULT_CACHE, FeatureStore, store_dir


class DamagedStoreWarning(UserWarning):
    """A store under the cache could not be opened and was skipped; the others still work."""


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


def find_dataset(
    dataset: str,
    cache: str | os.PathLike | None = None,
    backbone: str | None = None,
    *,
    image_size: int | None = None,
    precision: str | None = None,
    weights: str | os.PathLike | None = None,
    weights_sha256: str | None = None,
    layers: str | None = None,
    crop: str | None = None,
    store_dtype: str | None = None,
) -> FeatureStore:
    """The one store under ``cache`` holding ``dataset``, among those matching the given settings.

    ``weights`` (a file) selects by its fingerprint, as ``weights_sha256`` does; ``layers`` (``final``,
    ``stages`` or a comma list) and ``crop`` by recipe; ``store_dtype`` (``float32``/``float16``) by how
    the vectors are kept. Raises StoreError naming the candidates when
    there are none or several.
    """
    if weights is not None:
        from ..backbones.weights import sha256_file

        weights_sha256 = sha256_file(weights)

    def matches(c: BackboneConfig) -> bool:
        return ((backbone is None or c.name == backbone)
                and (image_size is None or c.preprocess.input_size == image_size)
                and (precision in (None, "auto") or c.precision == precision)
                and (weights_sha256 is None or c.weights_sha256 == weights_sha256)
                and (layers is None or recipe_has_layers(c, layers))
                and (crop is None or c.preprocess.crop == crop)
                and (store_dtype is None or c.store_dtype == store_dtype))

    stores = list_stores(cache)
    hits = [s for s in stores if matches(s.config) and _holds(s, dataset)]
    for s in stores:
        if len(hits) != 1 or s is not hits[0]:
            s.close()
    if len(hits) == 1:
        return hits[0]
    if not hits:
        where = str(cache or DEFAULT_CACHE)
        narrowed = (any((backbone, image_size, weights_sha256, layers, crop, store_dtype))
                    or precision not in (None, "auto"))
        raise StoreError(
            f"no dataset {dataset!r} in the feature stores under {where!r}"
            + (" with those backbone settings" if narrowed else "")
            + f". Embed it first (name={dataset!r}), or pass cache=DIR.",
            params=("name", "cache"),
        )
    names = "; ".join(h.config.describe() for h in hits)
    raise StoreError(
        f"dataset {dataset!r} is in several stores ({names}); choose one with backbone=NAME, image_size=PIXELS, "
        f"precision={'|'.join(STORED_PRECISIONS)}, layers=final|stages, crop=center|full or "
        "store_dtype=float32|float16.",
        params=("backbone", "image_size", "precision", "layers", "crop", "store_dtype"),
    )


def recipe_has_layers(config: BackboneConfig, layers: str) -> bool:
    """Whether ``config``'s recipe is the one ``--layers`` names (``stages``: every stage tap plus final)."""
    if layers == STAGES:
        return len(config.layers) > 1 and config.layers[-1] == FINAL
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
