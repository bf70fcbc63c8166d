"""Commands for classifier heads: train, evaluate, predict."""

from __future__ import annotations

import click

from ..heads.registry import HEAD_NAMES
from .options import cache_option, json_option, runtime_option, selection_options, use_layers_option
from .output import echo_json, echo_metrics, printable


@click.command()
@click.argument("dataset")
@selection_options
@click.option("--head", "head", type=click.Choice(sorted(HEAD_NAMES)), default="logreg", show_default=True,
              help="Classifier: logistic regression, ridge, linear SVM, FAISS k-NN, or mlp: one hidden layer, "
                   "stopped early on held-out data (slower; +0.5-0.9 points on Fashion-MNIST).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Bundle file to write [default: <store>/heads/<dataset>-<head>.npz].")
@use_layers_option
@click.option("--verbose", "-v", is_flag=True, help="Also print the confusion matrix.")
@json_option
def train(dataset, store_query, cache, head, out, use_layers, verbose, as_json):
    """Train a classifier head on a stored dataset's vectors, in seconds.

    Fits on the train split, choosing the regularisation (logreg/linear-svm C,
    ridge alpha, k-NN k) on data held out from it, refits, reports accuracy,
    macro-F1 and per-class recall on the test split, and saves the head.
    Under 500 training images logreg and linear-svm take C=1 instead: a fifth
    of so few is too small to choose on.

    \b
    Examples:
      featx train digits
      featx train fashion-mnist --head knn --json
      featx train fashion-mnist --head mlp
      featx train fashion-mnist --layers stages --use-layers blocks.4,blocks.6
    """
    from ..heads import train_head
    from ..store import find_dataset

    with find_dataset(dataset, cache, store_query) as store:
        result = train_head(store, dataset, head, out, use_layers=use_layers)
    if as_json:
        return echo_json(result.to_dict())
    chosen = ", ".join(f"{k.rstrip('_')}={v:g}" for k, v in result.params.items() if k.endswith("_")
                       and k not in ("n_iter_", "temperature_"))
    if result.test is None:
        click.echo(f"{head} on {printable(dataset)}: trained on {result.n_train} in {result.train_seconds:.2f}s ({chosen}); "
                   "no test split to score on")
    else:
        click.echo(f"{head} on {printable(dataset)}: test accuracy {result.accuracy:.2%}, macro-F1 {result.macro_f1:.4f} "
                   f"({result.n_train} train, {result.n_test} test; trained in {result.train_seconds:.2f}s, {chosen})")
        echo_metrics(result.test.to_dict(), verbose)
    click.echo(f"saved: {result.path}")


@click.command()
@click.argument("head", type=click.Path(dir_okay=False))
@click.argument("dataset")
@click.option("--split", default="test", show_default=True, help="Split to score: train, val or test.")
@cache_option
@click.option("--verbose", "-v", is_flag=True, help="Also print the confusion matrix.")
@json_option
def evaluate(head, dataset, split, cache, verbose, as_json):
    """Score a saved head on a dataset embedded with the head's backbone configuration.

    \b
    Example:
      featx evaluate cache/efficientnet_lite0-71905dea1f0d/heads/digits-logreg.npz digits --split train
    """
    from ..heads import evaluate_bundle

    m = evaluate_bundle(head, dataset, split, cache)
    if as_json:
        return echo_json(m)
    click.echo(f"{m['head']} on {printable(dataset)} ({split}, {m['n']} images): accuracy {m['accuracy']:.2%}, "
               f"macro-F1 {m['macro_f1']:.4f}")
    echo_metrics(m, verbose)


@click.command()
@click.argument("head", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True)
@click.option("--top-k", type=int, default=3, show_default=True, help="Classes to show per image.")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The weights file the head's backbone used, when it was not the default.")
@cache_option
@runtime_option
@json_option
def predict(head, images, top_k, weights, cache, runtime, as_json):
    """Classify image files or folders with a saved head.

    New images are embedded with the head's backbone configuration; images
    already in the store are not embedded again. Images that cannot be read
    are listed on stderr and the others are predicted; the exit status is 1
    only when no image could be read. --json prints {"results", "failures"}.

    \b
    Example:
      featx predict cache/efficientnet_lite0-71905dea1f0d/heads/pets-logreg.npz photo.jpg more/ --top-k 2
    """
    from ..heads import predict_images

    answer = predict_images(head, images, top_k, weights=weights, cache=cache, runtime=runtime)
    if as_json:
        return echo_json(answer)
    for r in answer["results"]:
        preds = ", ".join(f"{printable(p['label'])} {p['probability']:.1%}" for p in r["predictions"])
        click.echo(f"{printable(r['path'])}: {preds}")
    if answer["failures"]:
        click.echo(f"skipped {len(answer['failures'])} image(s) that could not be read:", err=True)
        for f in answer["failures"]:
            click.echo(f"  {printable(f['path'])}: {printable(f['reason'])}", err=True)
