"""The `featx` command line: each command parses, calls the library, prints."""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import FeatxError


class FeatxGroup(click.Group):
    """Turns library errors into ``Error: …`` with exit status 1 instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FeatxError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=FeatxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="featx")
def main() -> None:
    """Transfer learning from a frozen backbone: embed once, then train heads and search in seconds.

    \b
    Start with:
      featx backbones                      # what can embed, and whether it works offline
      featx embed digits                   # embed a dataset into the feature store (./cache)
      featx stores                         # what the store holds
      featx train digits                   # a logistic-regression head in seconds
      featx predict HEAD image.jpg         # classify new images with it
      featx search digits id:KEY           # what looks like this?
    """


cache_option = click.option("--cache", type=click.Path(file_okay=False), default=None, envvar="FEATX_CACHE",
                            help="Feature store root [default: ./cache, or $FEATX_CACHE].")


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=None, default=str))


def backbone_options(fn):
    """The options that choose a backbone configuration, and so a feature store."""
    for option in reversed(
        [
            click.option("--backbone", default="efficientnet_lite0", show_default=True,
                         help="Registered name (see `featx backbones`), timm:NAME or torchvision:NAME."),
            click.option("--weights", type=click.Path(dir_okay=False), default=None,
                         help="Local state dict or featx checkpoint to load instead of the default weights."),
            click.option("--image-size", type=int, default=None,
                         help="Input resolution in pixels [default: the backbone's native size]."),
            click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
                         show_default=True, help="auto: bf16 where the CPU/GPU runs it natively, else fp32."),
            cache_option,
        ]
    ):
        fn = option(fn)
    return fn


def selection_options(fn):
    """Options that pick which store holds a dataset, when several backbone configurations embedded it."""
    for option in reversed(
        [
            click.option("--backbone", default=None, help="Backbone of the store [default: the only store with DATASET]."),
            click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
                         help="Weights file the store was embedded with."),
            click.option("--image-size", type=int, default=None, help="Input size the store was embedded at."),
            click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
                         help="Precision the store was embedded at."),
            cache_option,
        ]
    ):
        fn = option(fn)
    return fn


def _select_store(dataset, backbone, weights, image_size, precision, cache):
    from .backbones import sha256_file
    from .store import find_dataset

    return find_dataset(dataset, cache, backbone, image_size=image_size, precision=precision,
                        weights_sha256=sha256_file(weights) if weights else None)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def backbones(as_json: bool) -> None:
    """List the backbones featx can embed with.

    'offline' says whether the weights are on this machine now; hub backbones
    (timm:NAME, torchvision:NAME) need a network or --weights FILE.

    \b
    Example:
      featx backbones --json
    """
    from .backbones import describe_backbones

    rows = describe_backbones()
    if as_json:
        _echo_json(rows)
        return
    click.echo(f"{'name':<22} {'dim':>5} {'size':>5}  {'offline':<8} description")
    for r in rows:
        dim = r["dim"] if r["dim"] is not None else "-"
        size = r["input_size"] if r["input_size"] is not None else "-"
        click.echo(f"{r['name']:<22} {dim:>5} {size:>5}  {'yes' if r['offline'] else 'no':<8} {r['description']}")


class _Bars:
    """tqdm bars for the library's progress callback; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars: dict = {}

    def __call__(self, stage: str, advance: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage not in self.bars:
            for bar in self.bars.values():
                bar.close()
            unit = "img"
            self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, unit_scale=False, file=sys.stderr,
                                    dynamic_ncols=True)
        self.bars[stage].update(advance)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


@main.command()
@click.argument("source")
@backbone_options
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per forward pass.")
@click.option("--workers", type=int, default=None,
              help="Decoding processes; 0 decodes in the main process [default: cores - 1].")
@click.option("--name", default=None, help="Dataset name in the store [default: folder, file or built-in name].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with Fashion-MNIST's IDX files [default: /usr/share/datasets/fashion-mnist].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the run's counts and speed.")
def embed(source, backbone, weights, image_size, precision, cache, batch_size, workers, name, data_dir, as_json):
    """Embed a dataset into the feature store, reusing every vector already there.

    SOURCE is a folder of images (class sub-folders give labels), a CSV manifest
    with columns path,label[,split] (paths relative to the CSV), or a built-in
    dataset: digits, fashion-mnist. Vectors are keyed by image content, so rerunning
    embeds only new files, and an interrupted run resumes where it stopped. Files
    that cannot be decoded are skipped, recorded and listed at the end.

    \b
    Examples:
      featx embed digits
      featx embed ./photos --name holidays --json
      featx embed fashion-mnist --backbone efficientnet_lite1 --batch-size 128
    """
    from .backbones import create_backbone
    from .embed import embed_source
    from .sources import open_source
    from .store import open_store

    src = open_source(source, name=name, data_dir=data_dir)
    model = create_backbone(backbone, weights=weights, image_size=image_size, precision=precision)
    bars = _Bars(enabled=sys.stderr.isatty())
    with open_store(model.config, cache) as store:
        try:
            result = embed_source(src, model, store, name=name, batch_size=batch_size, workers=workers,
                                  progress=bars)
        finally:
            bars.close()
    if as_json:
        _echo_json(result.to_dict())
        return
    speed = f"{result.images_per_second:.1f} images/s" if result.n_embedded else "nothing new to embed"
    click.echo(
        f"{result.dataset}: {result.n_total} images, {result.n_embedded} embedded, {result.n_reused} reused, "
        f"{result.n_failed} failed in {result.seconds:.1f}s ({speed})"
    )
    click.echo(f"store: {result.store} ({result.backbone}, dim {result.dim})")
    if result.failures:
        click.echo(f"skipped {len(result.failures)} file(s) that could not be used:", err=True)
        for f in result.failures:
            click.echo(f"  {f['path']}: {f['reason']}", err=True)


@main.command()
@cache_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of stores with their datasets.")
def stores(cache, as_json) -> None:
    """List the feature stores and the datasets in each.

    \b
    Example:
      featx stores --json
    """
    from .store import default_cache, list_stores

    rows = []
    for s in list_stores(cache):
        with s:
            rows.append(
                {
                    "store": str(s.path),
                    "key": s.key,
                    "backbone": s.config.name,
                    "dim": s.dim,
                    "input_size": s.config.preprocess.input_size,
                    "precision": s.config.precision,
                    "n_vectors": s.n_vectors(),
                    "bytes": s.size_bytes(),
                    "datasets": [
                        {"name": d.name, "n": d.n, "splits": d.splits, "labeled": d.labeled,
                         "n_failed": d.n_failed, "source": d.source}
                        for d in s.datasets()
                    ],
                }
            )
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"no feature stores under {cache or default_cache()}; create one with `featx embed SOURCE`.")
        return
    for r in rows:
        click.echo(f"{r['store']}  {r['backbone']} @ {r['input_size']}px {r['precision']}, dim {r['dim']}, "
                   f"{r['n_vectors']} vectors, {r['bytes'] / 1e6:.1f} MB")
        for d in r["datasets"]:
            splits = ", ".join(f"{k} {v}" for k, v in d["splits"].items())
            failed = f", {d['n_failed']} failed" if d["n_failed"] else ""
            click.echo(f"  {d['name']:<20} {d['n']:>7} images ({splits}){failed}")


def _echo_metrics(m, verbose: bool) -> None:
    worst = sorted(m.per_class_recall.items(), key=lambda kv: kv[1])
    click.echo("per-class recall: " + ", ".join(f"{k} {v:.1%}" for k, v in worst))
    if verbose:
        width = max(len(label) for label in m.labels)
        click.echo("confusion matrix (rows: true, columns: predicted, in the order above):")
        for label, row in zip(m.labels, m.confusion):
            click.echo(f"  {label:>{width}}  " + " ".join(f"{v:>5}" for v in row))


@main.command()
@click.argument("dataset")
@selection_options
@click.option("--head", "head", type=click.Choice(["logreg", "ridge", "linear-svm", "knn"]), default="logreg",
              show_default=True, help="Classifier: logistic regression, ridge, linear SVM, or FAISS k-NN.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Bundle file to write [default: <store>/heads/<dataset>-<head>.npz].")
@click.option("--verbose", "-v", is_flag=True, help="Also print the confusion matrix.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the metrics and the bundle path.")
def train(dataset, backbone, weights, image_size, precision, cache, head, out, verbose, as_json):
    """Train a classifier head on a stored dataset's vectors, in seconds.

    Fits on the train split, choosing the regularisation (logreg/linear-svm C,
    ridge alpha, k-NN k) on data held out from it, refits, reports accuracy,
    macro-F1 and per-class recall on the test split, and saves the head.

    \b
    Examples:
      featx train digits
      featx train fashion-mnist --head knn --json
    """
    from .classify import train_head

    with _select_store(dataset, backbone, weights, image_size, precision, cache) as store:
        result = train_head(store, dataset, head, out)
    if as_json:
        _echo_json(result.to_dict())
        return
    chosen = ", ".join(f"{k.rstrip('_')}={v:g}" for k, v in result.params.items() if k.endswith("_")
                       and k not in ("n_iter_", "temperature_"))
    if result.test is None:
        click.echo(f"{head} on {dataset}: trained on {result.n_train} in {result.train_seconds:.2f}s ({chosen}); "
                   "no test split to score on")
    else:
        click.echo(f"{head} on {dataset}: test accuracy {result.accuracy:.2%}, macro-F1 {result.macro_f1:.4f} "
                   f"({result.n_train} train, {result.n_test} test; trained in {result.train_seconds:.2f}s, {chosen})")
        _echo_metrics(result.test, verbose)
    click.echo(f"saved: {result.path}")


@main.command()
@click.argument("head", type=click.Path(dir_okay=False))
@click.argument("dataset")
@click.option("--split", default="test", show_default=True, help="Split to score: train, val or test.")
@cache_option
@click.option("--verbose", "-v", is_flag=True, help="Also print the confusion matrix.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the metrics.")
def evaluate(head, dataset, split, cache, verbose, as_json):
    """Score a saved head on a dataset embedded with the head's backbone configuration.

    \b
    Example:
      featx evaluate cache/efficientnet_lite0-71905dea1f0d/heads/digits-logreg.npz digits --split train
    """
    from .bundles import load_bundle
    from .classify import evaluate_head
    from .store import FeatureStore, store_dir

    bundle = load_bundle(head)
    path = store_dir(bundle.config, cache)
    if not path.is_dir():
        raise click.ClickException(
            f"no store for the head's backbone configuration ({bundle.config.describe()}) under {path.parent}; "
            f"embed {dataset} with it first.")
    with FeatureStore(path) as store:
        m = evaluate_head(bundle, store, dataset, split)
    if as_json:
        _echo_json({"head": bundle.head_name, "dataset": dataset, "split": split, **m.to_dict()})
        return
    click.echo(f"{bundle.head_name} on {dataset} ({split}, {m.n} images): accuracy {m.accuracy:.2%}, "
               f"macro-F1 {m.macro_f1:.4f}")
    _echo_metrics(m, verbose)


@main.command()
@click.argument("head", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True)
@click.option("--top-k", type=int, default=3, show_default=True, help="Classes to show per image.")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The weights file the head's backbone used, when it was not the default.")
@cache_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, predictions}.")
def predict(head, images, top_k, weights, cache, as_json):
    """Classify image files or folders with a saved head.

    New images are embedded with the head's backbone configuration; images
    already in the store are not embedded again.

    \b
    Example:
      featx predict cache/efficientnet_lite0-71905dea1f0d/heads/pets-logreg.npz photo.jpg more/ --top-k 2
    """
    from .backbones import create_backbone_for
    from .bundles import load_bundle
    from .classify import predict_files
    from .store import open_store

    bundle = load_bundle(head)
    backbone = create_backbone_for(bundle.config, weights)
    with open_store(backbone.config, cache) as store:
        results = predict_files(bundle, list(images), backbone, store, top_k)
    if as_json:
        _echo_json(results)
        return
    for r in results:
        preds = ", ".join(f"{p['label']} {p['probability']:.1%}" for p in r["predictions"])
        click.echo(f"{r['path']}: {preds}")


@main.command()
@click.argument("dataset")
@selection_options
@click.option("--kind", type=click.Choice(["auto", "flat", "ivf", "hnsw"]), default="auto", show_default=True,
              help="auto: exact search for small collections, HNSW tuned to recall@10 >= 0.95 for large ones.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object describing the index.")
def index(dataset, backbone, weights, image_size, precision, cache, kind, as_json):
    """Build (or update) a FAISS index over a dataset for fast similarity search.

    Vectors are L2-normalised, so scores are cosine similarities. Approximate
    indexes are tuned and report their recall@10 against exact search on up to
    1,000 sampled queries. Run it again after embedding new files: they are
    added to the index (rebuilt when files were removed).

    \b
    Examples:
      featx index fashion-mnist
      featx index photos --kind hnsw --json
    """
    from .index import index_dataset

    with _select_store(dataset, backbone, weights, image_size, precision, cache) as store:
        report = index_dataset(store, dataset, kind)
    if as_json:
        _echo_json(report.to_dict())
        return
    params = ", ".join(f"{k}={v}" for k, v in report.params.items())
    click.echo(f"{report.dataset}: {report.kind} index of {report.n} vectors ({report.action}) in "
               f"{report.build_seconds:.2f}s, {report.bytes / 1e6:.1f} MB, recall@10 {report.recall_at_10:.3f}"
               + (f" ({params})" if params else ""))
    click.echo(f"saved: {report.path}")


@main.command()
@click.argument("dataset")
@click.argument("queries", nargs=-1, required=True)
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours per query.")
@selection_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list: one {query, results} per query.")
def search(dataset, queries, k, backbone, weights, image_size, precision, cache, as_json):
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
    from .backbones import create_backbone_for
    from .search import search_dataset

    with _select_store(dataset, backbone, weights, image_size, precision, cache) as store:
        model = None
        if any(not q.startswith("id:") for q in queries):
            model = create_backbone_for(store.config, weights)
        answer = search_dataset(store, dataset, list(queries), k, model)
    if as_json:
        _echo_json(answer.results)
        return
    if answer.exact:
        click.echo("(exact search: no index yet; `featx index DATASET` builds one)", err=True)
    elif answer.unindexed:
        click.echo(f"({answer.unindexed} vectors added since the index was built are not searched; "
                   "run `featx index` again)", err=True)
    for q in answer.results:
        click.echo(f"{q['query']}:")
        for r in q["results"]:
            label = f"  [{r['label']}]" if r["label"] is not None else ""
            click.echo(f"  {r['rank']:>3}. {r['score']:.4f}  {r['path']}{label}")


@main.command()
@click.argument("dataset")
@click.option("--threshold", type=float, default=0.95, show_default=True,
              help="Cosine similarity at or above which two images count as near-duplicates.")
@selection_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of groups.")
def duplicates(dataset, threshold, backbone, weights, image_size, precision, cache, as_json):
    """List groups of near-duplicate images in a dataset.

    Finds re-encoded, resized or lightly cropped copies through the index (exact
    search without one). Identical files are always grouped.

    \b
    Example:
      featx duplicates photos --threshold 0.9
    """
    from .search import find_duplicates

    with _select_store(dataset, backbone, weights, image_size, precision, cache) as store:
        groups = find_duplicates(store, dataset, threshold)
    if as_json:
        _echo_json(groups)
        return
    if not groups:
        click.echo(f"no near-duplicates at similarity >= {threshold}")
    for n, g in enumerate(groups, start=1):
        click.echo(f"group {n}: {g['size']} images (similarity >= {g['min_score']:.4f})")
        for item in g["items"]:
            click.echo(f"  {item['path']}")


if __name__ == "__main__":
    main()
