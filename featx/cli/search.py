"""Commands for similarity search: index, search, duplicates."""

from __future__ import annotations

import click

from ..search import KINDS
from .options import json_option, runtime_option, selection_options, use_layers_option
from .output import echo_json, printable


@click.command()
@click.argument("dataset")
@selection_options
@click.option("--kind", type=click.Choice(KINDS), default="auto", show_default=True,
              help="auto: exact search for small collections, HNSW tuned to recall@10 >= 0.95 for large ones.")
@click.option("--max-memory", metavar="SIZE", default=None,
              help="Choose the index to fit this much memory (e.g. 256MB, 1.5GB): the most faithful of flat, "
                   "HNSW, IVF with scalar or product quantisation that fits and reaches --target-recall, else "
                   "the best recall it allows.")
@click.option("--target-recall", type=click.FloatRange(0.0, 1.0), default=0.95, show_default=True,
              help="The recall@10 to reach: what --max-memory chooses for, and what tuning aims at.")
@click.option("--rebuild", is_flag=True,
              help="Build the index anew instead of adding the new vectors to it (worth it when featx index says so).")
@use_layers_option
@json_option
def index(dataset, store_query, cache, kind, max_memory, target_recall, rebuild, use_layers, as_json):
    """Build (or update) a FAISS index over a dataset for fast similarity search.

    Vectors are L2-normalised, so scores are cosine similarities. Approximate
    indexes are tuned and report their recall@10 against exact search on up to
    1,000 sampled queries. Run it again after embedding new files: they are
    added to the index; up to 1,000 removed files stay in it, left out of its
    answers (beyond that, or with --rebuild, it is built anew; an index chosen
    under --max-memory is chosen again under the same budget).

    \b
    Examples:
      featx index fashion-mnist
      featx index photos --kind hnsw --json
      featx index photos --max-memory 256MB --target-recall 0.9
    """
    from ..search import index_dataset
    from ..store import find_dataset

    progress = None if as_json else (lambda message: click.echo(f"{message}…", err=True))
    with find_dataset(dataset, cache, store_query) as store:
        report = index_dataset(store, dataset, kind, use_layers, max_memory=max_memory, target_recall=target_recall,
                               rebuild=rebuild, progress=progress)
    if as_json:
        return echo_json(report.to_dict())
    if report.choices:
        click.echo(f"{'index':<26} {'MB':>9} {'recall@10':>9} {'setting':<12} {'queries/s':>9} "
                   f"{'store kB/query':>14}  outcome")
        for c in report.choices:
            size = c["bytes"] if c["bytes"] is not None else c["estimated_bytes"]
            recall = f"{c['recall_at_10']:.3f}" if c["recall_at_10"] is not None else "-"
            qps = f"{c['queries_per_second']:,.0f}" if c["queries_per_second"] else "-"
            reads = f"{c['store_bytes_per_query'] / 1e3:,.0f}" if c.get("store_bytes_per_query") else "-"
            click.echo(f"{c['factory']:<26} {size / 1e6:>9,.1f} {recall:>9} {c['search'] or '-':<12} {qps:>9} "
                       f"{reads:>14}  {c['outcome']}")
    if report.note:  # the library names its parameters; this says them as flags
        note = report.note.replace("rebuild=True", "--rebuild").replace("max_memory=", "--max-memory")
        click.echo(f"note: {printable(note)}")
    params = ", ".join(f"{k}={v}" for k, v in report.params.items())
    click.echo(f"{printable(report.dataset)}: {report.kind} index of {report.n} vectors ({report.action}) in "
               f"{report.build_seconds:.2f}s, {report.bytes / 1e6:.1f} MB, recall@10 {report.recall_at_10:.3f}"
               + (f" ({params})" if params else ""))
    click.echo(f"saved: {report.path}")


@click.command()
@click.argument("dataset")
@click.argument("queries", nargs=-1, required=True)
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours per query.")
@selection_options
@use_layers_option
@runtime_option
@json_option
def search(dataset, queries, k, store_query, cache, use_layers, runtime, as_json):
    """Find the images in DATASET that look most like each query.

    A QUERY is an image file, a folder of images, or id:KEY for a stored sample.
    New images are embedded with the dataset's backbone configuration (through
    the cache). Uses the dataset's index when `featx index` built one, exact
    search otherwise.

    \b
    Examples:
      featx search fashion-mnist my-shoe.jpg -k 5
      featx search photos id:3f9a1c0e2b7d --json
    """
    from ..search.query import search_stored

    answer = search_stored(dataset, list(queries), k, cache=cache, store_query=store_query, use_layers=use_layers,
                           runtime=runtime)
    if as_json:
        return echo_json(answer.results)
    if answer.exact:
        click.echo("(exact search: no index yet; `featx index DATASET` builds one)", err=True)
    elif answer.unindexed:
        click.echo(f"({answer.unindexed} vectors added since the index was built are searched exactly beside it; "
                   "`featx index` adds them to it)", err=True)
    for q in answer.results:
        click.echo(f"{printable(q['query'])}:")
        for r in q["results"]:
            label = f"  [{r['label']}]" if r["label"] is not None else ""
            click.echo(f"  {r['rank']:>3}. {r['similarity']:.4f}  {printable(r['path'])}{printable(label)}")


@click.command()
@click.argument("dataset")
@click.option("--threshold", type=float, default=0.95, show_default=True,
              help="Cosine similarity at or above which two images count as near-duplicates.")
@selection_options
@use_layers_option
@json_option
def duplicates(dataset, threshold, store_query, cache, use_layers, as_json):
    """List groups of near-duplicate images in a dataset.

    Finds re-encoded, resized or lightly cropped copies through the index (exact
    search without one). Identical files are always grouped.

    \b
    Example:
      featx duplicates photos --threshold 0.9
    """
    from ..search import find_duplicates
    from ..store import find_dataset

    with find_dataset(dataset, cache, store_query) as store:
        groups = find_duplicates(store, dataset, threshold, use_layers=use_layers)
    if as_json:
        return echo_json(groups)
    if not groups:
        click.echo(f"no near-duplicates at similarity >= {threshold}")
    for n, g in enumerate(groups, start=1):
        click.echo(f"group {n}: {g['size']} images (similarity >= {g['min_similarity']:.4f})")
        for item in g["items"]:
            click.echo(f"  {printable(item['path'])}")
