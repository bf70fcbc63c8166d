"""The command that checks a labelled dataset for wrong labels, leaks across splits and outliers: audit."""

from __future__ import annotations

import click

from ..audit.leaks import LEAK_THRESHOLD
from .options import data_dir_option, json_option, selection_options, use_layers_option
from .output import Bars, echo_json, printable


@click.command()
@click.argument("dataset")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds of the out-of-fold probabilities (fewer, with a note, when a class is smaller).")
@click.option("--head", type=click.Choice(["logreg", "ridge", "linear-svm", "knn"]), default="logreg",
              show_default=True, help="Head that gives the out-of-fold probabilities.")
@click.option("--ranking", type=click.Choice(["self_confidence", "normalized_margin"]), default="self_confidence",
              show_default=True, help="How label issues are ordered (lowest label quality first).")
@click.option("--leak-threshold", type=float, default=LEAK_THRESHOLD, show_default=True,
              help="Cosine similarity from which a test/val image and a training image count as near-twins.")
@click.option("-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Outliers are ranked by the distance to their k-th nearest neighbour.")
@click.option("--neighbours", type=click.IntRange(min=0), default=10, show_default=True,
              help="A flagged label stands only when fewer than half of the image's nearest labelled images "
                   "(this many) share it; 0 keeps every flag of confident learning.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report folder [default: <cache>/audit/<dataset>].")
@click.option("--export-csv", "export", type=click.Path(dir_okay=False), default=None,
              help="Also write a manifest (path,label,split,suggested_label) to edit and embed again.")
@use_layers_option
@selection_options
@data_dir_option
@json_option
def audit(dataset, folds, head, ranking, leak_threshold, k, neighbours, out, export, use_layers, store_query, cache,
          data_dir, as_json):
    """Find likely wrong labels, train/test leaks and outliers in a dataset.

    DATASET is a stored dataset's name, or a folder, CSV or built-in not yet
    embedded: it is then embedded first, with the default recipe (every stage, 2x2 grid)
    or the one the options name, and reused from the store afterwards.

    Label issues come from out-of-fold probabilities (K folds of a fast head,
    each image scored by a head that never saw it) and confident learning
    (Northcutt et al., 2021), kept where the image's nearest neighbours
    mostly carry another label. Leaks are images in a test or val split whose
    near-twin, or the very same image, is in train; outliers are far from
    every other image. Writes report.json (every finding), report.md and a
    contact sheet, report.png. Nothing in the store changes.

    \b
    Examples:
      featx audit digits
      featx audit ./photos --image-size 160
      featx audit pets --export-csv pets-reviewed.csv --json
      featx audit fashion-mnist --leak-threshold 0.98 --head knn
    """
    from ..audit import audit_dataset

    with Bars() as bars:
        report = audit_dataset(dataset, cache=cache, store_query=store_query, use_layers=use_layers, folds=folds,
                               head=head, ranking=ranking, leak_threshold=leak_threshold, k=k, neighbours=neighbours,
                               out=out, export=export, data_dir=data_dir, progress=bars)
    if as_json:
        return echo_json({"out": report["out"], "summary": report["summary"], "note": report["note"],
                          "recipe_note": report["recipe_note"], "embedded": report["embedded"],
                          "noise_rate": report["noise_rate"], "confused_pairs": report["confused_pairs"],
                          "top_label_issues": report["label_issues"][:20], "seconds": report["seconds"],
                          "export": report.get("export")})
    s = report["summary"]
    if report["embedded"]:
        e = report["embedded"]
        click.echo(f"note: {printable(dataset)!r} was in no store: embedded it first ({e['n_embedded']:,} images, "
                   f"{e['recipe']}, {e['seconds']:.1f} s) as dataset {printable(e['dataset'])!r}", err=True)
    for note in (report["note"], report["recipe_note"]):
        if note:
            click.echo(f"note: {note}", err=True)
    click.echo(f"{printable(dataset)}: {s['images']:,} images, {s['classes']} classes ({report['settings']['folds']} folds of "
               f"{head})")
    click.echo(f"likely label issues: {s['label_issues']:,}; leaks: {s['exact_leaks']:,} identical and "
               f"{s['near_leaks']:,} near-twins across splits; {s['conflicting_labels']:,} images with two labels; "
               f"{s['outliers_z_over_5']:,} outliers")
    for f in report["label_issues"][:10]:
        click.echo(f"  {printable(f['path'])}: {printable(f['given'])} → {printable(f['suggested'])} "
                   f"(quality {f['quality']:.3f})")
    if s["label_issues"] > 10:
        click.echo(f"  … {s['label_issues'] - 10:,} more in the report")
    click.echo(f"saved: {report['out']}/report.json, report.md, report.png"
               + (f"; manifest: {report['export']}" if report.get("export") else ""))
