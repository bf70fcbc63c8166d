"""The command that starts the HTTP service: serve."""

from __future__ import annotations

import os

import click

from ..config import PRECISIONS, StoreQuery
from .options import cache_option, gathered, runtime_option, stack

# Here the backbone options narrow the store of --dataset; alone, they choose the backbone to embed with.
serve_backbone_options = stack(
    click.option("--backbone", default=None,
                 help="Backbone when neither --head nor --dataset decides it [default: efficientnet_lite0]."),
    click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
                 help="Local weights (e.g. a `featx finetune` checkpoint) for the backbone."),
    click.option("--image-size", type=int, default=None, help="Input resolution [default: the backbone's native size]."),
    click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                 help="auto: bfloat16 where native (or, with --dataset, whichever the store has)."),
    runtime_option,
    cache_option,
)


@click.command()
@click.option("--dataset", default=None, help="Stored dataset to search (POST /search); its index if built.")
@click.option("--head", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Head bundle from `featx train` for POST /predict; its backbone configuration is used.")
@serve_backbone_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; the default takes connections from this machine only.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--token", envvar="FEATX_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on every endpoint but /health [env: FEATX_TOKEN].")
@click.option("--max-upload-mb", type=float, default=20.0, show_default=True,
              help="Largest request body; bigger ones get 413.")
@click.option("--max-batch", type=int, default=32, show_default=True,
              help="Most images in one shared forward pass.")
@click.option("--max-wait-ms", type=float, default=5.0, show_default=True,
              help="How long a request waits for others to share its forward pass.")
@click.option("--log-level", envvar="FEATX_LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug", "trace"]),
              help="uvicorn's log level [env: FEATX_LOG_LEVEL].")
@gathered("store_query", StoreQuery)
def serve(dataset, head, store_query, runtime, cache, host, port, token, max_upload_mb, max_batch, max_wait_ms, log_level):
    """Serve embedding, classification and similarity search over HTTP.

    \b
    Endpoints (OpenAPI docs at /docs, schema at /openapi.json):
      POST /embed    images (multipart field 'files') -> vectors and store key
      POST /predict  images ('files') -> top-k classes from --head    (?top_k=3)
      POST /search   images ('files') or a stored 'key' -> neighbours in --dataset (?k=10)
      GET  /map      the dataset's 2-D map (?format=binary: packed; /map/point/{i})
      GET  /health   liveness;   GET /info  what is loaded
    Concurrent requests share forward passes (micro-batching). SIGTERM or
    Ctrl-C finishes the requests in flight, then stops.

    \b
    Examples:
      featx serve --head cache/demo/digits-logreg.npz --dataset digits
      curl -F files=@photo.jpg http://127.0.0.1:8000/predict
      curl -F key=3f9a1c0e2b7d http://127.0.0.1:8000/search?k=5
    """
    from ..serve import create_app, open_resources, serve as run
    from ..serve.app import check_limits

    check_limits(max_upload_mb, max_batch, max_wait_ms)
    if token is None and os.environ.get("FEATX_TOKEN") is not None:
        token = os.environ["FEATX_TOKEN"]  # click reads an empty variable as unset: it must be refused, not ignored
    if token is not None and not token.strip():
        raise click.BadParameter("an empty token would turn authentication off; give a real one, or leave "
                                 "--token and FEATX_TOKEN unset.", param_hint="--token")
    resources = open_resources(dataset=dataset, head=head, store_query=store_query, cache=cache, runtime=runtime)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.echo(f"warning: serving on {host} without --token; anyone who can reach it can use it.", err=True)
    loaded = [resources.runtime.config.describe(), f"runtime {resources.runtime.choice.describe()}"]
    if resources.bundle is not None:
        loaded.append(f"head {resources.bundle.head_name} ({len(resources.bundle.classes)} classes)")
    if resources.index is not None:
        loaded.append(f"dataset {dataset} ({resources.index.kind} index, {resources.index.n} vectors)")
    click.echo("featx serve: " + "; ".join(loaded), err=True)
    try:
        run(create_app(resources, token=token, max_upload_mb=max_upload_mb, max_batch=max_batch,
                       max_wait_ms=max_wait_ms), host=host, port=port, log_level=log_level)
    finally:
        resources.close()

