"""The command that chooses which images to label first: select."""

from __future__ import annotations

import click

from ..select.runner import STRATEGIES
from .options import data_dir_option, json_option, selection_options, use_layers_option
from .output import Bars, echo_json, printable


@click.command()
@click.argument("dataset")
@click.option("--budget", type=int, required=True, help="How many images to choose (the labels you can afford now).")
@click.option("--split", default=None, help="Choose from this split only (train, val, test) [default: every image].")
@click.option("--exclude", type=click.Path(dir_okay=False), default=None,
              help="A CSV of images already labelled (a 'path' or 'key' column; an earlier round's filled-in file): "
                   "never chosen again, and its 'label' column counts as known labels.")
@click.option("--head", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A head saved by `featx train` whose uncertainty picks the images [default: one fitted on the "
                   "known labels, if any].")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto", show_default=True,
              help="typical: the image nearest the centre of each of BUDGET clusters (TypiClust's loop); coverage: "
                   "images whose neighbourhoods cover the most (ProbCover); uncertain: where a head hesitates, spread "
                   "over its confusions; random; auto: uncertain once 2 labels per class are known (or --head is "
                   "given); before that typical, or coverage when the budget is over a fiftieth of the images.")
@click.option("--out", type=click.Path(dir_okay=False), default="to-label.csv", show_default=True,
              help="The CSV to fill in: path,label,suggested_label,score,reason.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the clustering (same seed, same picks).")
@use_layers_option
@selection_options
@data_dir_option
@json_option
def select(dataset, budget, split, exclude, head, strategy, out, seed, use_layers, store_query, cache, data_dir,
           as_json):
    """Choose which images of DATASET to label first.

    DATASET is a stored dataset's name, or a folder, CSV or built-in not yet
    embedded: it is then embedded first, with the default recipe or the one
    the options name.

    With no labels yet, it picks typical images of different kinds (the
    common cases, each once: TypiClust, Hacohen et al. 2022), which teach a
    head far more per label than random picks. Once labels are known (from
    the dataset, or an earlier round passed with --exclude), it picks the
    images a head is least sure of, spread over its confusions.

    Fill in the label column of the CSV it writes and embed it: every vector
    is reused (the store is content-addressed), so `featx train` runs at once.

    \b
    Examples:
      featx select ./photos --budget 50
      featx embed to-label.csv && featx train to-label
      featx select ./photos --budget 50 --exclude to-label.csv --out round2.csv
      featx select fashion-mnist --budget 20 --split train --json
    """
    from ..select import select_images

    with Bars() as bars:
        report = select_images(dataset, budget, cache=cache, store_query=store_query, use_layers=use_layers,
                               split=split, exclude=exclude, head=head, strategy=strategy, out=out, seed=seed,
                               data_dir=data_dir, progress=bars)
    if as_json:
        return echo_json(report)
    if report["embedded"]:
        e = report["embedded"]
        click.echo(f"note: {printable(dataset)!r} was in no store: embedded it first ({e['n_embedded']:,} images, "
                   f"{e['recipe']}, {e['seconds']:.1f} s) as dataset {printable(e['dataset'])!r}", err=True)
    for note in report["notes"]:
        click.echo(f"note: {note}", err=True)
    known = f"; {report['known']:,} labels known" if report["known"] else ""
    click.echo(f"{printable(dataset)}: chose {len(report['picks']):,} of {report['pool']:,} images "
               f"({report['strategy']}{known}) in {report['seconds']:.1f} s")
    for pick in report["picks"][:10]:
        suggested = f" [{printable(pick['suggested_label'])}?]" if pick["suggested_label"] else ""
        click.echo(f"  {printable(pick['path'])}{suggested}: {pick['reason']}")
    if len(report["picks"]) > 10:
        click.echo(f"  … {len(report['picks']) - 10:,} more in the CSV")
    click.echo(f"saved: {report['out']} (fill in its label column, then: featx embed {printable(report['out'])})")
