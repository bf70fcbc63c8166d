"""`rank_candidates`: one shared sample, candidates pruned in rounds (scored per group: groups.py), recommend, resume."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data import Source, hash_source
from ..embed.decoders import DecoderPool
from ..errors import DataError, ParameterError
from ..hardware import Progress, default_workers
from ..store import DEFAULT_CACHE
from ..store.paths import rank_dir
from ..reporting import previous_report, write_json
from ..transfer.subsets import labelled_splits
from .candidates import Candidate, default_candidates
from .choice import choose_contenders, compare_to_best, dominated_by, forward_passes, pass_costs, recommend
from .groups import Run, by_group, group_id, pruned_row, run_group
from .report import summarize_validation, write_report
from .sample import stratified_sample
from .settings import RankSettings, screen_rounds, small_data_note

REPORT_FORMAT = "featx-rank-2"  # 2: the screen in rounds
SAMPLE_SUFFIX = "-rank-sample"  # the sample's dataset name in each store: never the user's own dataset


def _resume_key(report: dict) -> str:
    s = {k: v for k, v in report["settings"].items() if k != "validate"}
    return json.dumps([report["dataset"], report["source"], report["sample"]["fingerprint"], s], sort_keys=True)


def _previous(out: Path, report: dict) -> tuple[dict[str, dict], dict[str, dict], list[dict]]:
    """Scored (or pruned) candidates, group records and the rounds' scores of an earlier, interrupted or smaller
    rank with the same sample and settings."""
    old = previous_report(out, report, _resume_key)
    if old is None:
        return {}, {}, []
    rows = {r["id"]: r for r in old.get("rows", []) if r.get("status") in ("ok", "pruned")}
    return rows, old.get("groups", {}), old.get("rounds", [])


def rank_candidates(
    source: Source,
    candidates: Sequence[Candidate] | None = None,
    settings: RankSettings = RankSettings(),
    *,
    cache: str | Path | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    weights: dict[str, str] | None = None,
    progress: Progress | None = None,
    notice: Callable[[str], None] | None = None,
) -> dict:
    """Score the candidates on one stratified sample of ``source``'s training split; write report.json/.md/.png.

    Candidates are pruned in rounds (successive halving): every candidate is first screened on a small
    part of the sample (``settings.screen`` images) by LogME and a k-fold probe, both cheap; the
    ``settings.contenders`` best (the top of each score in turn) go on to twice the images, where half of
    them are kept, and so on until ``settings.finalists`` embed the whole sample and get the full probe.
    The others are listed as pruned, with the scores of the round that pruned them. With ``validate``
    nothing is pruned: every candidate is scored in every round and tested, and the validation says
    whether the rounds would have kept the best.

    Parameters
    ----------
    source : a labelled source (as ``featx embed`` takes).
    candidates : what to compare [default: ``default_candidates()``, every offline backbone × recipe].
    settings : the sample's size, the probe's folds, the seed, the screen, and ``validate`` (also embed all
        of the train and test splits per candidate and report test accuracy, Kendall's tau and the regret).
    cache : the store root; the sample is embedded there, as dataset ``<name>-rank-sample``.
    out : the report folder [default: ``<cache>/rank/<name>``]; a rank interrupted there resumes.
    weights : backbone name → local weights file, for candidates not using their default weights.
    progress : optional ``progress(stage, advance, total)``; stages ``hash``, ``embed``, ``candidates``.
    notice : called with a sentence when ranking will cost about as much as embedding everything.

    Returns the report: ``rows`` (the table, best predicted first, then pruned and failed candidates),
    ``recommendation``, and with ``validate`` the ``validation`` summary.
    """
    settings.check()
    candidates = list(dict.fromkeys(candidates if candidates is not None else default_candidates()))
    if not candidates:
        raise ParameterError("candidates", "names no candidates.")
    # one decoding pool for every group, forked now while this process is small: each group forking its own from
    # a process grown by the models' activations made every later write to that memory a copy-on-write fault
    # (rank digits: 4.6 million of them, 64 s of system time in 150 s)
    with DecoderPool(source, default_workers()) as decoders:
        return _rank(source, candidates, settings, decoders, cache=cache, out=out, name=name, weights=weights,
                     progress=progress, notice=notice)


def _rank(source: Source, candidates: list[Candidate], settings: RankSettings, decoders: DecoderPool, *, cache, out,
          name, weights, progress, notice) -> dict:
    """rank_candidates' work, with the decoding pool it shares among the groups."""
    started = time.perf_counter()
    cache = cache or DEFAULT_CACHE
    dataset = name or source.name
    out = Path(out) if out else rank_dir(cache, dataset)
    keys, failures = hash_source(source, progress)
    splits = labelled_splits(source, keys, dataset)
    train = splits["train"]
    if len(np.unique(train.labels)) < 2:
        raise DataError(f"dataset {dataset!r} has a single class: ranking how well features separate classes "
                        "needs at least two labelled classes.")
    sample = train.take(stratified_sample(train.keys, train.labels, settings.sample,
                                          min_per_class=settings.folds, seed=settings.seed))
    prunes = settings.screen and len(candidates) > settings.finalists
    rounds = screen_rounds(len(sample), settings) if prunes else []
    # positions within the sample, nested: each round's images include the ones before
    positions: list[np.ndarray] = []
    for images, _ in rounds:
        picked = stratified_sample(sample.keys, sample.labels, images, min_per_class=settings.folds,
                                   seed=settings.seed)
        positions.append(np.union1d(picked, positions[-1]) if positions else picked)
    y = sample.labels.astype(str)
    run = Run(source, dataset, (keys, failures), sample, y, settings, cache, weights or {}, progress, decoders,
              forward_passes(candidates))
    report = {
        "format": REPORT_FORMAT, "dataset": dataset, "source": source.description,
        "settings": asdict(settings),
        "sample": {"n": len(sample), "of": len(train), "classes": len(sample.classes),
                   "per_class": sample.class_counts(), "fingerprint": sample.fingerprint(),
                   "dataset": dataset + SAMPLE_SUFFIX},
        "candidates": [c.id for c in candidates],
        "note": small_data_note(len(sample), len(train)),
        "groups": {}, "rounds": [], "rows": [], "complete": False,
    }
    if report["note"] and notice:
        notice(report["note"])
    out.mkdir(parents=True, exist_ok=True)
    done, old_groups, old_rounds = _previous(out, report)
    report["groups"].update(old_groups)
    for r, ((images, keep), where) in enumerate(zip(rounds, positions)):
        old = old_rounds[r]["scores"] if r < len(old_rounds) else {}
        report["rounds"].append({"images": len(where), "keep": keep,
                                 "scores": {c.id: old[c.id] for c in candidates if c.id in old}})
    setup_seconds = time.perf_counter() - started
    rows: dict[str, dict] = {c.id: done[c.id] for c in candidates if c.id in done}

    def save(stage: str, done: int, total: int) -> None:
        report["rows"] = _ordered(rows.values())
        write_json(report, out)  # after every group: an interrupted rank resumes from here
        if progress:
            progress(stage, done, total)

    alive = _prune_in_rounds(run, list(candidates), positions, report, rows, save)
    # the whole sample for the finalists (every candidate under --validate), and the validation
    for group, members in by_group(alive, run.passes).items():
        need_score = [c for c in members if rows.get(c.id, {}).get("status") not in ("ok", "failed", "pruned")]
        need_test = [c for c in members if settings.validate and "test_accuracy" not in rows.get(c.id, {})]
        if need_score or need_test:
            run_group(run, group, members, report, rows, need_score=need_score, need_test=need_test)
        save("candidates", len(members), len(alive))
    report["rows"] = _ordered(rows.values())
    compare_to_best(report["rows"], len(sample))
    report["recommendation"] = recommend(report["rows"])
    if report["recommendation"]:
        report["recommendation"]["embed"] = embed_command(source, next(
            r for r in report["rows"] if r["id"] == report["recommendation"]["id"]), weights or {})
    report["seconds"] = {"setup": round(setup_seconds, 3), **_costs(report)}
    if settings.validate:
        report["validation"] = summarize_validation(report)
    report["complete"] = True
    write_report(report, out)
    report["out"] = str(out)
    return report


def _prune_in_rounds(run: "Run", alive: list[Candidate], positions: list[np.ndarray], report: dict,
                     rows: dict[str, dict], save: Callable) -> list[Candidate]:
    """Score the candidates still in on each round's images and keep the round's best; returns the finalists
    (every candidate under --validate, which scores each round but prunes nothing)."""
    for r, where in enumerate(positions):
        scores = report["rounds"][r]["scores"]
        todo = [c for c in alive if c.id not in scores and rows.get(c.id, {}).get("status") != "failed"]
        for group, members in by_group(todo, run.passes).items():
            run_group(run, group, members, report, rows, screen=(where, scores))
            save("screen", len(members), len(todo))
        if run.settings.validate:
            continue
        costs = pass_costs(run.passes, report)
        kept = choose_contenders({c.id: scores[c.id] for c in alive if c.id in scores}, report["rounds"][r]["keep"],
                                 run.passes, costs)
        for c in alive:
            if c.id not in kept and c.id in scores and rows.get(c.id, {}).get("status") != "failed":
                record = report["groups"].get(group_id(run.passes[c.id]), {})
                rows[c.id] = pruned_row(c, scores[c.id], len(where), record,
                                        dominated_by(c.id, kept, scores, run.passes, costs))
        alive = [c for c in alive if c.id in kept]
        run.keep_models(alive)
    return alive


def _ordered(rows) -> list[dict]:
    """Scored candidates by predicted accuracy (best first), then the pruned ones (the last pruned first, then by
    the accuracy of their last round), then the
    failed ones."""
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (-r["accuracy"], r["id"]))
    pruned = sorted((r for r in rows if r["status"] == "pruned"),
                    key=lambda r: (-r["pruned_at"], -r["screen"]["accuracy"], r["id"]))
    return ok + pruned + sorted((r for r in rows if r["status"] == "failed"), key=lambda r: r["id"])


def embed_command(source: Source, row: dict, weights: dict[str, str]) -> str:
    """The `featx embed` command that embeds all of ``source`` with a scored candidate's recipe."""
    import shlex

    where = shlex.quote(source.spec) if source.spec else "SOURCE"
    file = weights.get(row["backbone"])
    return (f"featx embed {where} --backbone {shlex.quote(row['backbone'])} --image-size {row['image_size']} "
            f"--crop {row['crop']} --layers {row['layers']} --precision {row['precision']}"
            + (f" --weights {shlex.quote(str(file))}" if file else ""))


def _costs(report: dict) -> dict:
    """Seconds rank spent (sample embedding, speed probes, scoring) and, after --validate, the full embeddings."""
    groups = report["groups"].values()
    rank = sum(g.get("sample_seconds", 0) + g.get("speed_seconds", 0) for g in groups)
    rank += sum(r.get("score_seconds", 0) for r in report["rows"])
    rank += sum(s.get("seconds", 0) for r in report.get("rounds", []) for s in r["scores"].values())
    out = {"rank": round(rank, 3)}
    if any("full_seconds" in g for g in groups):
        # Embedding every candidate fully = the sample (embedded by rank) plus the rest (by validation).
        out["full_embedding"] = round(sum(g.get("sample_seconds", 0) + g.get("full_seconds", 0) for g in groups), 3)
    return out
