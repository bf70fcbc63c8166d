"""The command that lays a dataset out in 2-D for the page's map ahead of time: map."""

from __future__ import annotations

import time

import click

from .options import json_option, selection_options
from .output import Bars, echo_json, printable


@click.command("map")
@click.argument("dataset")
@selection_options
@json_option
def map_(dataset, store_query, cache, as_json):
    """Compute DATASET's 2-D map (PCA to 50 dimensions, then UMAP) and keep it beside its store.

    `featx serve --dataset DATASET` shows it on its page; computing it here
    first spares the page's first visitor the wait. It is computed again only
    when the dataset's images change.

    \b
    Examples:
      featx map fashion-mnist
      featx map digits --json
    """
    from ..maps import dataset_map, map_path
    from ..store import find_dataset

    started = time.perf_counter()
    with find_dataset(dataset, cache, store_query) as store, Bars() as bars:
        layout, computed = dataset_map(store, dataset, progress=bars, must_save=True)
        path = map_path(store, dataset)
    result = {"dataset": dataset, "n": len(layout.keys), "method": layout.method, "computed": computed,
              "seconds": round(time.perf_counter() - started, 2), "path": str(path)}
    if as_json:
        return echo_json(result)
    click.echo(f"{printable(dataset)}: {result['n']:,} points ({layout.method}), "
               + (f"computed in {result['seconds']:.1f}s" if computed else "unchanged since it was computed")
               + f"; saved: {path}")
