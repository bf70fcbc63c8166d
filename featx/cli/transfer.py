"""Commands that train the backbone itself: finetune, compare."""

from __future__ import annotations

import click

from ..config import Recipe
from ..transfer.settings import DEFAULT_METHODS
from .options import backbone_options, gathered, json_option, training_options
from .output import Bars, echo_json, printable

DEFAULT_METHODS_TEXT = ",".join(DEFAULT_METHODS)


def _overrides(**values) -> dict:
    """The options the user gave (not None): the rest keep the library's defaults."""
    return {k: v for k, v in values.items() if v is not None}


@click.command()
@click.argument("source")
@click.option("--unfreeze", default="last-1", show_default=True,
              help="Layer groups to train: last-1 (the last stage), last-N, or all.")
@backbone_options
@training_options
@click.option("--shots", type=click.IntRange(min=1), default=None,
              help="Train on K images per class of the train split [default: all].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the subset, the split and training.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the checkpoint [default: <cache>/finetuned].")
@json_option
@gathered("recipe", Recipe)
def finetune(source, unfreeze, recipe, cache, epochs, lr, batch_size, name, data_dir, shots, seed, out, as_json):
    """Fine-tune a backbone with a new linear head on a dataset's train split.

    SOURCE is what `featx embed` takes (a folder, a CSV manifest, digits,
    fashion-mnist). A validation split carved from the training data (20%,
    stratified) drives early stopping and picks the checkpoint kept. Reports
    test accuracy, macro-F1, the train/validation accuracy gap, seconds and peak
    memory. Trains at 96 px on a CPU unless --image-size says otherwise. The
    checkpoint works as a backbone: embed with it using --weights.

    \b
    Examples:
      featx finetune digits --shots 10 --epochs 5
      featx finetune fashion-mnist --unfreeze all --json
      featx embed digits --weights cache/finetuned/digits-efficientnet_lite0-last-1-seed0.pt --image-size 96
    """
    from ..data import open_source
    from ..transfer import FinetuneSettings, finetune_source

    settings = FinetuneSettings(unfreeze=unfreeze, seed=seed, **_overrides(epochs=epochs, lr=lr))
    src = open_source(source, name=name, data_dir=data_dir)
    with Bars() as bars:
        result = finetune_source(src, recipe, settings=settings, batch_size=batch_size, shots=shots, name=name,
                                 out=out, cache=cache, progress=bars)
    if as_json:
        return echo_json(result.to_dict())
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
            click.echo(f"  {printable(f)}", err=True)
    click.echo(f"saved: {result.path}")
    click.echo(f"embed with it: featx embed {source} --backbone {recipe.backbone} --weights {result.path} "
               f"--image-size {result.image_size}")


@click.command()
@click.argument("source")
@click.option("--shots", default="1,5,10,50,100", show_default=True, help="Training images per class, comma-separated.")
@click.option("--seeds", type=int, default=3, show_default=True, help="Subsets drawn per shots value (seeds 0..N-1).")
@click.option("--methods", default=None,
              help="Comma-separated: frozen heads (logreg, ridge, linear-svm, knn) on the final layer, the same "
                   "with -stages (on every stage's output too) or -grid (every stage over a 2x2 grid; not both in "
                   "one run), finetune-last, finetune-all "
                   f"[default: {DEFAULT_METHODS_TEXT}].")
@backbone_options
@training_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report folder [default: <cache>/compare/<dataset>-<size>px].")
@json_option
@gathered("recipe", Recipe)
def compare(source, shots, seeds, methods, recipe, cache, epochs, lr, batch_size, name, data_dir, out, as_json):
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
    from ..data import open_source
    from ..transfer import CompareSettings, compare_source, parse_methods, parse_shots
    from ..transfer.report import render_markdown, summarize

    settings = CompareSettings(shots=parse_shots(shots), seeds=seeds,
                               methods=parse_methods(methods or DEFAULT_METHODS_TEXT),
                               **_overrides(epochs=epochs, lr=lr))
    settings.check()
    src = open_source(source, name=name, data_dir=data_dir)
    with Bars() as bars:
        report, folder = compare_source(src, recipe, settings=settings, batch_size=batch_size, name=name, out=out,
                                        cache=cache, progress=bars)
    if as_json:
        return echo_json({"out": str(folder), "rows": summarize(report["runs"], settings.methods, settings.shots)})
    click.echo(render_markdown(report))
    click.echo(f"saved: {folder / 'report.json'}, {folder / 'report.md'}, {folder / 'report.png'}")
