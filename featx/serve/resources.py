"""What a service serves, loaded once at start-up: the backbone on its runtime, a head bundle, a dataset's store and index."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from ..config import FINAL, StoreQuery
from ..heads import HeadBundle, load_bundle
from ..runtimes import Runtime, load_runtime, runtime_for
from ..search import VectorIndex, open_index
from ..search.query import member_info
from ..store import DEFAULT_CACHE, FeatureStore, find_dataset, store_for_config
from ..store.paths import audit_report


@dataclass
class Resources:
    """What the service serves: a backbone on its runtime, and optionally a head and a dataset to search."""

    runtime: Runtime
    bundle: HeadBundle | None = None
    store: FeatureStore | None = None
    dataset: str | None = None
    index: VectorIndex | None = None
    unindexed: int | None = None
    members: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)
    audit_report: str | None = None  # where `featx audit` writes this dataset's report

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def open_resources(
    *, dataset: str | None = None, head: str | None = None, store_query: StoreQuery = StoreQuery(),
    cache: str | os.PathLike | None = None, runtime: str = "auto",
) -> Resources:
    """Load the head (its backbone configuration wins), the dataset's store (the one ``store_query`` narrows it to) and
    index, and the backbone on ``runtime`` (chosen as ``featx embed`` chooses it: see
    featx.runtimes.load_runtime). With neither a head nor a dataset, ``store_query`` names the backbone to serve (its
    final layer; default: the default backbone)."""
    bundle = load_bundle(head) if head else None
    store = None
    if dataset and bundle is not None:
        store = store_for_config(bundle.config, cache, dataset)
    elif dataset:
        store = find_dataset(dataset, cache, store_query)
    try:
        config = bundle.config if bundle is not None else store.config if store is not None else None
        if config is not None:
            model = runtime_for(config, runtime=runtime, weights=store_query.weights, cache=cache)
        else:
            model = load_runtime(replace(store_query.recipe(), layers=FINAL), runtime=runtime, cache=cache)
        resources = Resources(runtime=model, bundle=bundle, store=store, dataset=dataset)
        if store is not None:
            resources.index, resources.unindexed = open_index(store, dataset)
            resources.members = member_info(store, dataset)
            resources.audit_report = str(audit_report(cache or DEFAULT_CACHE, dataset))
    except BaseException:
        if store is not None:
            store.close()
        raise
    return resources
