"""The command that ranks backbones and recipes for a dataset before anything is embedded in full: rank."""

from __future__ import annotations

import click

from .options import cache_option, data_dir_option, json_option, name_option
from .output import Bars, echo_json, printable


@click.command()
@click.argument("source")
@click.option("--candidates", "spec", default=None, metavar="SPEC|FILE",
              help="What to compare: AXIS=VALUES separated by spaces, e.g. 'backbone=efficientnet_lite0 "
                   "size=native,160 crop=full layers=final,stages precision=auto' (axes left out take the "
                   "default grid), or a file with one such line per grid [default: every offline backbone × "
                   "layers final and the default (grid) × crop center,full × size native,small].")
@click.option("--sample", type=click.IntRange(min=4), default=2000, show_default=True,
              help="Training images scored per candidate (stratified; the same images for every candidate).")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds of the k-fold probe; every class needs this many images in the sample.")
@click.option("--screen", type=click.IntRange(min=0), default=256, show_default=True,
              help="Images of the sample every candidate is screened on first (k-fold accuracy and LogME); only "
                   "the --contenders best go on. 0 scores every candidate on all of it.")
@click.option("--contenders", type=click.IntRange(min=1), default=4, show_default=True,
              help="Forward passes the screen keeps, the best candidates' by each score in turn (a backbone at a "
                   "size and crop is one pass: its final-layer and grid candidates share it).")
@click.option("--finalists", type=click.IntRange(min=1), default=4, show_default=True,
              help="Forward passes scored on the whole sample. Fewer than --contenders adds rounds (successive "
                   "halving): each scores the survivors on twice the images and keeps half, down to this many; "
                   "cheaper, but riskier for the winner.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample, the folds and the heads.")
@click.option("--validate", is_flag=True,
              help="Also embed all of the train and test splits per candidate, train on all of it, and report "
                   "test accuracy, Kendall's tau against the prediction, and the recommendation's regret.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report folder [default: <cache>/rank/<dataset>]; an interrupted rank there resumes.")
@cache_option
@name_option
@data_dir_option
@json_option
def rank(source, spec, sample, screen, contenders, finalists, folds, seed, validate, out, cache, name, data_dir,
         as_json):
    """Rank backbones and recipes by how well they will transfer to SOURCE.

    Every candidate is screened on a few hundred images of one stratified
    sample of the training split (k-fold accuracy of the default logreg head
    and LogME); the best (with --finalists below --contenders, after rounds
    of twice the images, each keeping half) embed the whole sample (through the store, so a
    rerun, or a later `featx embed` of the winner, reuses the vectors) and
    are scored by the k-fold accuracy with a 95% interval, and by LogME. Cost
    is measured too: images/s, vector size, model size. The recommendation
    is the cheapest contender the sample cannot tell from the best. Writes
    report.json, report.md and report.png. --validate prunes nothing: it
    embeds and tests every candidate.

    \b
    Examples:
      featx rank digits --sample 500
      featx rank photos/ --candidates 'backbone=efficientnet_lite0,efficientnet_lite2 layers=stages'
      featx rank fashion-mnist --candidates 'size=small' --validate --json
    """
    from ..data import open_source
    from ..rank import RankSettings, parse_candidates, rank_candidates
    from ..rank.report import cost_line, rounds_line, table_lines

    settings = RankSettings(sample=sample, folds=folds, seed=seed, validate=validate, screen=screen,
                            contenders=contenders, finalists=finalists)
    settings.check()
    candidates = parse_candidates(spec)
    src = open_source(source, name=name, data_dir=data_dir)
    with Bars() as bars:
        report = rank_candidates(src, candidates, settings, cache=cache, out=out, name=name, progress=bars,
                                 notice=None if as_json else lambda text: click.echo(f"note: {text}", err=True))
    rec = report["recommendation"]
    command = rec["embed"] if rec else None
    if as_json:
        rows = [{k: v for k, v in r.items() if k != "correct"} for r in report["rows"]]
        return echo_json({"out": report["out"], "rows": rows, "recommendation": rec, "embed": command,
                          "validation": report.get("validation"), "seconds": report["seconds"],
                          "note": report.get("note"),
                          "sample": {k: v for k, v in report["sample"].items() if k != "fingerprint"}})
    click.echo("\n".join(table_lines(report)))
    pruned = rounds_line(report)
    if pruned:
        click.echo(f"\npruned: {pruned}; listed with the scores of their last round in report.md")
    for r in report["rows"]:
        if r["status"] == "failed":
            click.echo(f"failed: {r['id']}: {printable(r['reason'])}", err=True)
    if rec:
        click.echo(f"\nrecommended: {rec['id']} ({rec['why']})")
        click.echo(f"embed it all: {command}")
    v = report.get("validation")
    if v and v.get("n"):
        p = v["predictors"]
        click.echo(f"validation: Kendall's tau {p['probe']['tau']} (k-fold probe), {p['logme']['tau']} (LogME); "
                   f"regret of the recommendation {v['recommended']['regret']:.2f} points" if "recommended" in v
                   else "validation: no candidate could be tested")
    click.echo(cost_line(report))
    click.echo(f"saved: {report['out']}/report.json, report.md, report.png")
