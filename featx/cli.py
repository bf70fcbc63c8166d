"""The `featx` command line: each command parses, calls the library, prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
      featx compare digits                 # frozen heads against fine-tuning, same subsets
    """


cache_option = click.option("--cache", type=click.Path(file_okay=False), default=None, envvar="FEATX_CACHE",
                            help="Feature store root [default: ./cache, or $FEATX_CACHE].")


precision_option = click.option(
    "--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
    help="auto: bfloat16 where the CPU/GPU runs it natively, else fp32.")
name_option = click.option("--name", default=None,
                           help="Dataset name in the store [default: folder, file or built-in name].")
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                               help="Folder with Fashion-MNIST's IDX files [default: /usr/share/datasets/fashion-mnist].")


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
            precision_option,
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
            unit = {"train": "step", "runs": "run"}.get(stage, "img")
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
@name_option
@data_dir_option
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine. ray: decode and run the model on Ray actors (pip install 'featx[ray]').")
@click.option("--address", default=None,
              help="With --engine ray: the cluster to join (e.g. 10.0.0.5:6379) [default: start a local Ray].")
@click.option("--num-workers", type=int, default=None,
              help="With --engine ray: backbone actors, one CPU each [default: the cluster's CPUs].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the run's counts and speed.")
def embed(source, backbone, weights, image_size, precision, cache, batch_size, workers, name, data_dir, engine,
          address, num_workers, as_json):
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
      featx embed /shared/photos --engine ray --address 10.0.0.5:6379 --cache /shared/cache
    """
    from .backbones import create_backbone
    from .embed import embed_source
    from .sources import open_source
    from .store import open_store

    if engine == "local" and (address or num_workers):
        raise click.UsageError("--address and --num-workers go with --engine ray.")
    src = open_source(source, name=name, data_dir=data_dir)
    model = create_backbone(backbone, weights=weights, image_size=image_size, precision=precision)
    runner = None
    if engine == "ray":
        from .ray_engine import RayEngine

        runner = RayEngine(model.config, weights, address=address, num_workers=num_workers)
    bars = _Bars(enabled=sys.stderr.isatty())
    with open_store(model.config, cache) as store:
        try:
            result = embed_source(src, model, store, name=name, batch_size=batch_size, workers=workers,
                                  progress=bars, engine=runner)
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


def training_options(fn):
    """The options finetune and compare share: the backbone, the input, the training budget, the data."""
    for option in reversed([
        click.option("--backbone", default="efficientnet_lite0", show_default=True,
                     help="Registered name (see `featx backbones`), timm:NAME or torchvision:NAME."),
        click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="Start from these weights instead of the backbone's pretrained ones."),
        click.option("--image-size", type=int, default=None,
                     help="Input resolution [default: 96 on CPU, the backbone's native size on GPU]."),
        precision_option,
        click.option("--epochs", type=int, default=None, help="Most epochs; early stopping may end sooner [default: 10]."),
        click.option("--lr", type=float, default=1e-4, show_default=True,
                     help="Peak learning rate of the unfrozen layers (AdamW, warm-up then cosine); the head uses 10x."),
        click.option("--batch-size", type=int, default=None, help="Images per step [default: 32 on CPU, 64 on GPU]."),
        name_option,
        data_dir_option,
        cache_option,
    ]):
        fn = option(fn)
    return fn


def _training_backbone(backbone, weights, image_size, precision):
    """The backbone and the settings defaults for this hardware (a GPU trains at the native size)."""
    from .backbones import create_backbone, default_device
    from .finetune import device_defaults

    defaults = device_defaults(default_device())
    size = image_size or defaults["image_size"]

    def make():
        return create_backbone(backbone, weights=weights, image_size=size, precision=precision)

    return make, defaults


@main.command()
@click.argument("source")
@click.option("--unfreeze", default="last-1", show_default=True,
              help="Layer groups to train: last-1 (the last stage), last-N, or all.")
@training_options
@click.option("--shots", type=int, default=None, help="Train on K images per class of the train split [default: all].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the subset, the split and training.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the checkpoint [default: <cache>/finetuned].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the metrics and checkpoint path.")
def finetune(source, unfreeze, backbone, weights, image_size, precision, epochs, lr, batch_size, name, data_dir,
             cache, shots, seed, out, as_json):
    """Fine-tune a backbone with a new linear head on a dataset's train split.

    SOURCE is what `featx embed` takes (a folder, a CSV manifest, digits,
    fashion-mnist). A validation split carved from the training data (20%,
    stratified) drives early stopping and picks the checkpoint kept. Reports
    test accuracy, macro-F1, the train/validation accuracy gap, seconds and peak
    memory. The checkpoint works as a backbone: embed with it using --weights.

    \b
    Examples:
      featx finetune digits --shots 10 --epochs 5
      featx finetune fashion-mnist --unfreeze all --json
      featx embed digits --weights cache/finetuned/digits-efficientnet_lite0-last-1-seed0.pt --image-size 96
    """
    from .embed import hash_source
    from .finetune import FinetuneSettings, default_checkpoint_path, finetune as run_finetune
    from .sources import open_source
    from .store import default_cache
    from .subsets import draw_shots, labeled_splits

    src = open_source(source, name=name, data_dir=data_dir)
    make, defaults = _training_backbone(backbone, weights, image_size, precision)
    settings = FinetuneSettings(unfreeze=unfreeze, epochs=epochs or FinetuneSettings.epochs, lr=lr,
                                batch_size=batch_size or defaults["batch_size"], seed=seed)
    settings.check()
    keys, _ = hash_source(src)
    splits = labeled_splits(src, keys, name or src.name)
    train = draw_shots(splits["train"], shots, seed) if shots else splits["train"]
    model = make()
    path = default_checkpoint_path(Path(out) if out else Path(cache or default_cache()) / "finetuned",
                                   name or src.name, backbone, settings, shots)
    bars = _Bars(enabled=sys.stderr.isatty())
    try:
        result = run_finetune(model, src, train, splits["test"], settings, dataset=name or src.name, out=path,
                              progress=bars)
    finally:
        bars.close()
    if as_json:
        _echo_json(result.to_dict())
        return
    gap = (f", validation {result.val_accuracy:.2%}" if result.val_accuracy is not None else ", no validation split")
    click.echo(f"{result.dataset}: fine-tuned {result.backbone} ({result.unfreeze}, {result.n_trainable:,} weights) "
               f"at {result.image_size} px on {result.device}: {result.epochs_run} epoch(s), best {result.best_epoch}")
    click.echo(f"test accuracy {result.accuracy:.2%}, macro-F1 {result.macro_f1:.4f} ({result.n_test} test images)")
    click.echo(f"train accuracy {result.train_accuracy:.2%}{gap} ({result.n_train} train, {result.n_val} validation)")
    click.echo(f"{result.seconds:.1f}s ({result.train_seconds:.1f}s training), peak memory {result.peak_rss_mb:.0f} MB"
               + (f" ({result.added_rss_mb:.0f} MB for training)" if result.added_rss_mb is not None else ""))
    if result.failures:
        click.echo(f"skipped {result.n_failed} image(s) that could not be read:", err=True)
        for f in result.failures:
            click.echo(f"  {f}", err=True)
    click.echo(f"saved: {result.path}")
    click.echo(f"embed with it: featx embed {source} --backbone {backbone} --weights {result.path} "
               f"--image-size {result.image_size}")


@main.command()
@click.argument("source")
@click.option("--shots", default="1,5,10,50,100", show_default=True, help="Training images per class, comma-separated.")
@click.option("--seeds", type=int, default=3, show_default=True, help="Subsets drawn per shots value (seeds 0..N-1).")
@click.option("--methods", default="logreg,knn,finetune-last,finetune-all", show_default=True,
              help="Comma-separated: frozen heads (logreg, ridge, linear-svm, knn) and finetune-last, finetune-all.")
@training_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report folder [default: <cache>/compare/<dataset>-<size>px].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary rows as JSON.")
def compare(source, shots, seeds, methods, backbone, weights, image_size, precision, epochs, lr, batch_size, name,
            data_dir, cache, out, as_json):
    """Compare frozen-feature heads with fine-tuning on the same few-shot subsets.

    For each shots-per-class value and seed, one training subset is drawn from
    the train split and given to every method; all are scored on the same test
    split. The dataset is embedded once (cached; its time is shown apart).
    Writes report.json (every run), report.md (tables) and report.png (accuracy
    and seconds against shots). A run that fails is recorded with its reason;
    rerunning with the same budget reuses finished runs.

    \b
    Examples:
      featx compare digits --shots 1,5,10 --seeds 2
      featx compare fashion-mnist --methods logreg,finetune-last --epochs 5
    """
    from .compare import CompareSettings, parse_methods, parse_shots, run_compare
    from .report import render_markdown, summarize
    from .sources import open_source
    from .store import default_cache, open_store, safe_name

    make, defaults = _training_backbone(backbone, weights, image_size, precision)
    settings = CompareSettings(shots=parse_shots(shots), seeds=seeds, methods=parse_methods(methods),
                               epochs=epochs or CompareSettings.epochs, batch_size=batch_size or defaults["batch_size"],
                               lr=lr)
    settings.check()
    src = open_source(source, name=name, data_dir=data_dir)
    model = make()
    dataset = name or src.name
    out = Path(out) if out else (Path(cache or default_cache()) / "compare"
                                 / f"{safe_name(dataset)}-{model.config.preprocess.input_size}px")
    bars = _Bars(enabled=sys.stderr.isatty())
    with open_store(model.config, cache) as store:
        try:
            report = run_compare(src, model, store, settings, out=out, make_backbone=make, name=dataset,
                                 progress=bars)
        finally:
            bars.close()
    if as_json:
        _echo_json({"out": str(out), "rows": summarize(report["runs"], settings.methods, settings.shots)})
        return
    click.echo(render_markdown(report))
    click.echo(f"saved: {out / 'report.json'}, {out / 'report.md'}, {out / 'report.png'}")


@main.command()
@click.option("--dataset", default=None, help="Stored dataset to search (POST /search); its index if built.")
@click.option("--head", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Head bundle from `featx train` for POST /predict; its backbone configuration is used.")
@click.option("--backbone", default=None,
              help="Backbone when neither --head nor --dataset decides it [default: efficientnet_lite0].")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Local weights (e.g. a `featx finetune` checkpoint) for the backbone.")
@click.option("--image-size", type=int, default=None, help="Input resolution [default: the backbone's native size].")
@precision_option
@cache_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; the default takes connections from this machine only.")
@click.option("--port", type=int, default=8000, show_default=True, help="TCP port.")
@click.option("--token", envvar="FEATX_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on every endpoint but /health [env: FEATX_TOKEN].")
@click.option("--max-upload-mb", type=float, default=20.0, show_default=True,
              help="Largest request body; bigger ones get 413.")
@click.option("--max-batch", type=int, default=32, show_default=True,
              help="Most images in one shared forward pass.")
@click.option("--max-wait-ms", type=float, default=5.0, show_default=True,
              help="How long a request waits for others to share its forward pass.")
def serve(dataset, head, backbone, weights, image_size, precision, cache, host, port, token, max_upload_mb,
          max_batch, max_wait_ms):
    """Serve embedding, classification and similarity search over HTTP.

    \b
    Endpoints (OpenAPI docs at /docs, schema at /openapi.json):
      POST /embed    images (multipart field 'files') -> vectors and store key
      POST /predict  images -> top-k classes from --head       (?top_k=3)
      POST /search   an image ('file') or a stored 'key' -> neighbours in --dataset (?k=10)
      GET  /health   liveness;   GET /info  what is loaded
    Concurrent requests share forward passes (micro-batching). SIGTERM or
    Ctrl-C finishes the requests in flight, then stops.

    \b
    Examples:
      featx serve --head cache/demo/digits-logreg.npz --dataset digits
      curl -F files=@photo.jpg http://127.0.0.1:8000/predict
      curl -F key=3f9a1c0e2b7d http://127.0.0.1:8000/search?k=5
    """
    from .service import create_app, open_resources, serve as run

    if max_upload_mb <= 0 or max_batch < 1 or max_wait_ms < 0:
        raise click.BadParameter("--max-upload-mb must be > 0, --max-batch >= 1 and --max-wait-ms >= 0.")
    resources = open_resources(dataset=dataset, head=head, backbone=backbone, weights=weights,
                               image_size=image_size, precision=precision, cache=cache)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.echo(f"warning: serving on {host} without --token; anyone who can reach it can use it.", err=True)
    loaded = [resources.backbone.config.describe()]
    if resources.bundle is not None:
        loaded.append(f"head {resources.bundle.head_name} ({len(resources.bundle.classes)} classes)")
    if resources.index is not None:
        loaded.append(f"dataset {dataset} ({resources.index.kind} index, {resources.index.n} vectors)")
    click.echo("featx serve: " + "; ".join(loaded), err=True)
    try:
        run(create_app(resources, token=token, max_upload_mb=max_upload_mb, max_batch=max_batch,
                       max_wait_ms=max_wait_ms), host=host, port=port)
    finally:
        resources.close()


if __name__ == "__main__":
    main()
