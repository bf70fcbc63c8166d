"""Commands for backbones and the feature store: backbones, embed, stores."""

from __future__ import annotations

import click

from ..config import Recipe
from ..embed import ENGINES
from .options import (backbone_options, cache_option, data_dir_option, gathered, json_option, name_option,
                      recipe_options, runtime_option)
from .output import Bars, echo_json, printable


@click.command()
@click.option("--layers", "layers_of", metavar="NAME", default=None,
              help="List the layers NAME can embed from (for `featx embed --layers`) instead.")
@json_option
def backbones(layers_of: str | None, as_json: bool) -> None:
    """List the backbones featx can embed with, or one backbone's layers.

    'offline' says whether the weights are on this machine now; hub backbones
    (timm:NAME, torchvision:NAME) need a network or --weights FILE.

    \b
    Examples:
      featx backbones --json
      featx backbones --layers efficientnet_lite0
    """
    if layers_of is not None:
        return _echo_layers(layers_of, as_json)
    from ..backbones import describe_backbones

    rows = describe_backbones()
    if as_json:
        return echo_json(rows)
    click.echo(f"{'name':<22} {'dim':>5} {'size':>5}  {'offline':<8} description")
    for r in rows:
        dim = r["dim"] if r["dim"] is not None else "-"
        size = r["image_size"] if r["image_size"] is not None else "-"
        click.echo(f"{r['name']:<22} {dim:>5} {size:>5}  {'yes' if r['offline'] else 'no':<8} {r['description']}")


def _echo_layers(name: str, as_json: bool) -> None:
    from ..backbones import backbone_taps

    rows = [{"name": t.name, "channels": t.channels, "reduction": t.reduction} for t in backbone_taps(name)]
    if as_json:
        return echo_json(rows)
    click.echo(f"{'layer':<16} {'dims':>6} {'stride':>6}")
    for r in rows:
        stride = r["reduction"] or "-"
        click.echo(f"{r['name']:<16} {r['channels'] or '-':>6} {stride:>6}")
    click.echo("stages = all of them; each stage's output is average-pooled to its channel count.")


@click.command()
@click.argument("source")
@backbone_options
@runtime_option
@recipe_options
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per forward pass.")
@click.option("--workers", type=int, default=None,
              help="Local engine: decoding processes, 0 decodes in the main process [default: cores - 1]. "
                   "Ray engine: backbone actors, one CPU each [default: the cluster's CPUs].")


@name_option
@data_dir_option
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: this machine. ray: decode and run the model on Ray actors (pip install 'featx[ray]').")


@click.option("--address", default=None,
              help="With --engine ray: the cluster to join (e.g. 10.0.0.5:6379) [default: start a local Ray].")


@json_option
@gathered("recipe", Recipe)
def embed(source, recipe, runtime, cache, batch_size, workers, name, data_dir, engine, address, as_json):
    """Embed a dataset into the feature store, reusing every vector already there.

    SOURCE is a folder of images (class sub-folders give labels), a CSV manifest
    with columns path,label[,split] (paths relative to the CSV), or a built-in
    dataset: digits, fashion-mnist. Vectors are keyed by image content, so rerunning
    embeds only new files, and an interrupted run resumes where it stopped. Files
    that cannot be decoded are skipped, recorded and listed at the end.

    \b
    Examples:
      featx embed digits
      featx embed fashion-mnist --layers stages
      featx embed ./photos --name holidays --json
      featx embed fashion-mnist --backbone efficientnet_lite1 --batch-size 128
      featx embed ./photos --runtime openvino --precision int8
      featx embed /shared/photos --engine ray --address 10.0.0.5:6379 --cache /shared/cache
    """
    from ..data import open_source
    from ..embed.runner import embed_into_store

    src = open_source(source, name=name, data_dir=data_dir)
    with Bars() as bars:
        result = embed_into_store(src, recipe, runtime=runtime, cache=cache, name=name, batch_size=batch_size,
                                  workers=workers, engine=engine, address=address, progress=bars)
    if as_json:
        return echo_json(result.to_dict())
    speed = f"{result.images_per_second:.1f} images/s" if result.n_embedded else "nothing new to embed"
    click.echo(f"{printable(result.dataset)}: {result.n_total} images, {result.n_embedded} embedded, {result.n_reused} reused, "
               f"{result.n_failed} failed in {result.seconds:.1f}s ({speed})")
    click.echo(f"store: {result.store} ({result.backbone}, dim {result.dim})")
    click.echo(f"recipe: layers {', '.join(result.layers)}; {result.crop} crop; {result.precision}")
    click.echo(f"runtime: {_runtime_line(result.runtime)}")
    if result.failures:
        click.echo(f"skipped {len(result.failures)} file(s) that could not be used:", err=True)
        for f in result.failures:
            click.echo(f"  {printable(f['path'])}: {printable(f['reason'])}", err=True)


def _runtime_line(choice: dict) -> str:
    from ..runtimes import RuntimeChoice

    return RuntimeChoice(**choice).describe()


@click.command()
@cache_option
@json_option
def stores(cache, as_json) -> None:
    """List the feature stores and the datasets in each.

    \b
    Example:
      featx stores --json
    """
    from ..store import describe_stores

    rows = describe_stores(cache)
    if as_json:
        return echo_json(rows)
    if not rows:
        click.echo(f"no feature stores under {cache}; create one with `featx embed SOURCE`.")
    for r in rows:
        stored = "" if r["store_dtype"] == "float32" else f" stored as {r['store_dtype']}"
        click.echo(f"{r['store']}  {r['backbone']} @ {r['image_size']}px {r['precision']}, dim {r['dim']}{stored}, "
                   f"{r['n_vectors']} vectors, {r['bytes'] / 1e6:.1f} MB")
        click.echo(f"  recipe: layers {', '.join(r['layers'])}; {r['crop']} crop")
        for d in r["datasets"]:
            splits = ", ".join(f"{k} {v}" for k, v in d["splits"].items())
            failed = f", {d['n_failed']} failed" if d["n_failed"] else ""
            click.echo(f"  {printable(d['name']):<20} {d['n']:>7} images ({splits}){failed}")


@click.command()
@cache_option
@click.option("--repair", is_flag=True,
              help="Forget damaged shards, so the next `featx embed` of each dataset re-embeds their images.")
@json_option
def verify(cache, repair, as_json) -> None:
    """Check every store: the catalog's integrity and each shard's size, header and checksum.

    Exits 1 when something is damaged that --repair did not mend: a damaged
    shard without --repair, or any damage to a catalog (which nothing but
    embedding again can mend).

    \b
    Examples:
      featx verify
      featx verify --repair --json
    """
    from ..store import verify_cache

    reports = verify_cache(cache, repair)
    if as_json:
        echo_json(reports)
    for r in reports if not as_json else ():
        state = "ok" if r["ok"] else ("repaired" if r["repaired"] else "DAMAGED")
        shards = "catalog unreadable" if r["unreadable"] else (
            "shards not checked" if r["n_shards"] is None else f"{r['n_shards']} shards")
        click.echo(f"{r['store']}: {state} ({shards})")
        for problem in r["catalog_problems"]:
            click.echo(f"  catalog: {printable(problem)}")
        if r["catalog_problems"]:
            click.echo("  move this folder aside (its vectors cannot be trusted) and embed its datasets again")
        for d in r["damaged_shards"]:
            click.echo(f"  shard {d['file']} ({d['n']} vectors) {d['problem']}")
        if r["repaired"]:
            click.echo(f"  forgot {r['vectors_forgotten']} vectors; `featx embed` each dataset again to restore them")
    if any(not r["ok"] and not r["repaired"] for r in reports):
        raise SystemExit(1)
