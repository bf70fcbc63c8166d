"""`rank_candidates`: embed one shared sample per candidate group, score each candidate, recommend, resume."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import FINAL, STAGES
from ..data import Source, SubsetSource, hash_source
from ..errors import DataError, FeatxError, ParameterError
from ..hardware import Progress
from ..store import DEFAULT_CACHE, open_store
from ..store.atomic import name_stem
from ..store.columns import select_layers
from ..reporting import write_json
from ..transfer.subsets import labeled_splits
from .candidates import SIZE_WORDS, Candidate, default_candidates, image_size, native_size
from .embedding import embed_group, feature_params, measure_speed
from .logme import logme
from .probe import kfold_accuracy, paired_difference, unpack_correct
from .report import summarize_validation, write_report
from .sample import stratified_sample
from .validate import validate_group

REPORT_FORMAT = "featx-rank-1"
SAMPLE_SUFFIX = "-rank-sample"  # the sample's dataset name in each store: never the user's own dataset


@dataclass(frozen=True)
class RankSettings:
    """How candidates are scored: the sample's size, the folds of the probe, the seed; and whether to validate."""

    sample: int = 2000
    folds: int = 5
    seed: int = 0
    validate: bool = False

    def check(self) -> None:
        if self.folds < 2:
            raise ParameterError("folds", f"must be at least 2, not {self.folds}.")
        if self.sample < 2 * self.folds:
            raise ParameterError("sample", f"must be at least {2 * self.folds} images (twice --folds), "
                                 f"not {self.sample}.")


def _resume_key(report: dict) -> str:
    s = {k: v for k, v in report["settings"].items() if k != "validate"}
    return json.dumps([report["dataset"], report["source"], report["sample"]["fingerprint"], s], sort_keys=True)


def _previous(out: Path, report: dict) -> tuple[dict[str, dict], dict[str, dict]]:
    """Scored candidates and group records of an earlier, interrupted or smaller rank with the same sample."""
    try:
        old = json.loads((out / "report.json").read_text())
        if old.get("format") != REPORT_FORMAT or _resume_key(old) != _resume_key(report):
            return {}, {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}, {}
    rows = {r["id"]: r for r in old.get("rows", []) if r.get("status") == "ok"}
    return rows, old.get("groups", {})


def small_data_note(n_sample: int, n_train: int) -> str | None:
    """Rank saves time only when the sample is a small part of the data: say so when it is not."""
    if n_sample * 4 < n_train:
        return None
    return (f"the sample is {n_sample / n_train:.0%} of the {n_train:,} training images: scoring costs about as much "
            "as embedding everything, so `--validate` (the truth, not a prediction) costs little more here.")


def _group_id(group: tuple) -> str:
    backbone, size, crop, precision = group
    return f"{backbone}@{size}/{crop}/{precision}"


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
) -> dict:
    """Score every candidate on one stratified sample of ``source``'s training split; write report.json/.md/.png.

    Parameters
    ----------
    source : a labeled source (as ``featx embed`` takes).
    candidates : what to compare [default: ``default_candidates()``, every offline backbone × recipe].
    settings : the sample's size, the probe's folds, the seed, and ``validate`` (also embed all of the
        train and test splits per candidate and report test accuracy, Kendall's tau and the regret).
    cache : the store root; the sample is embedded there, as dataset ``<name>-rank-sample``.
    out : the report folder [default: ``<cache>/rank/<name>``]; a rank interrupted there resumes.
    weights : backbone name → local weights file, for candidates not using their default weights.
    progress : optional ``progress(stage, advance, total)``; stages ``hash``, ``embed``, ``candidates``.

    Returns the report: ``rows`` (the table, best predicted first), ``recommendation``, and with
    ``validate`` the ``validation`` summary.
    """
    settings.check()
    candidates = list(dict.fromkeys(candidates if candidates is not None else default_candidates()))
    if not candidates:
        raise ParameterError("candidates", "names no candidates.")
    started = time.perf_counter()
    cache = cache or DEFAULT_CACHE
    dataset = name or source.name
    out = Path(out) if out else Path(cache) / "rank" / name_stem(dataset)
    keys, failures = hash_source(source, progress)
    splits = labeled_splits(source, keys, dataset)
    train = splits["train"]
    if len(np.unique(train.labels)) < 2:
        raise DataError(f"dataset {dataset!r} has a single class: ranking how well features separate classes needs at "
                        "least two labelled classes.")
    sample = train.take(stratified_sample(train.keys, train.labels, settings.sample,
                                          min_per_class=settings.folds, seed=settings.seed))
    sample_source = SubsetSource(source, sample.indices, name=dataset)
    sample_hashes = ([keys[i] for i in sample.indices], {})
    y = sample.labels.astype(str)
    report = {
        "format": REPORT_FORMAT, "dataset": dataset, "source": source.description,
        "settings": asdict(settings),
        "sample": {"n": len(sample), "of": len(train), "classes": len(sample.classes),
                   "per_class": sample.class_counts(), "fingerprint": sample.fingerprint(),
                   "dataset": dataset + SAMPLE_SUFFIX},
        "candidates": [c.id for c in candidates],
        "note": small_data_note(len(sample), len(train)),
        "groups": {}, "rows": [], "complete": False,
    }
    out.mkdir(parents=True, exist_ok=True)
    done, old_groups = _previous(out, report)
    setup_seconds = time.perf_counter() - started
    by_group: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        by_group.setdefault(c.group, []).append(c)
    rows: dict[str, dict] = {}
    for group, members in by_group.items():
        gid = _group_id(group)
        need_score = [c for c in members if c.id not in done]
        need_test = [c for c in members if settings.validate and "test_accuracy" not in done.get(c.id, {})]
        rows.update({c.id: done[c.id] for c in members if c.id in done})
        if gid in old_groups:
            report["groups"][gid] = old_groups[gid]
        if need_score or need_test:
            _run_group(group, members, need_score, need_test, report, rows, source, sample_source, sample_hashes,
                       y, (keys, failures), dataset, settings, cache, weights or {}, progress)
        report["rows"] = _ordered(rows.values())
        write_json(report, out)  # after every group: an interrupted rank resumes from here
        if progress:
            progress("candidates", len(members), len(candidates))
    report["rows"] = _ordered(rows.values())
    compare_to_best(report["rows"], len(sample))
    report["recommendation"] = recommend(report["rows"])
    report["seconds"] = {"setup": round(setup_seconds, 3), **_costs(report)}
    if settings.validate:
        report["validation"] = summarize_validation(report)
    report["complete"] = True
    write_report(report, out)
    report["out"] = str(out)
    return report


def _create(group: tuple, layers: str | None, weights: dict[str, str]):
    from ..backbones import create_backbone

    backbone, size, crop, precision = group
    pixels = image_size(size, native_size(backbone)) if size in SIZE_WORDS else int(size)
    return create_backbone(backbone, weights=weights.get(backbone), image_size=pixels, precision=precision,
                           layers=layers, crop=crop)


def _failed(c: Candidate, reason: str) -> dict:
    return {"id": c.id, **asdict(c), "status": "failed", "reason": reason}


def _reason(e: BaseException) -> str:
    return str(e) if isinstance(e, FeatxError) else f"{type(e).__name__}: {e}"


def _run_group(group, members, need_score, need_test, report, rows, source, sample_source, sample_hashes, y,
               hashes, dataset, settings, cache, weights, progress) -> None:
    """Embed the sample once for the group's candidates, score those not yet scored, validate if asked."""
    gid = _group_id(group)
    wanted = {c.layers for c in members}
    try:
        model = _create(group, STAGES if STAGES in wanted else None, weights)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # missing weights, a hub model offline, a model without stage taps
        for c in {*need_score, *need_test}:
            rows[c.id] = _failed(c, _reason(e))
        return
    record = dict(report["groups"].get(gid, {}))
    try:
        embedded = embed_group(sample_source, model, report["sample"]["dataset"], cache=cache,
                               keep_final=FINAL in wanted, hashes=sample_hashes, progress=progress)
        if not record.get("sample_embedded") or embedded.n_embedded:  # keep the run that did the work
            record.update(sample_seconds=embedded.seconds, sample_embedded=embedded.n_embedded,
                          sample_reused=embedded.n_reused)
        started = time.perf_counter()
        record["images_per_second"] = round(measure_speed(model, sample_source), 2)
        record["speed_seconds"] = round(time.perf_counter() - started, 3)
        record["params"] = feature_params(model)
        record["image_size"] = model.config.preprocess.input_size
        record["precision"] = model.config.precision
        with open_store(model.config, cache) as store:
            X_all = store.vectors(sample_hashes[0])
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        for c in {*need_score, *need_test}:
            rows[c.id] = _failed(c, _reason(e))
        return
    report["groups"][gid] = record
    for c in need_score:
        rows[c.id] = _score(c, model.config, X_all, y, record, settings)
    if need_test:
        todo = [c for c in need_test if rows.get(c.id, {}).get("status") == "ok"]
        try:
            tested, full = validate_group(source, model, todo, dataset, hashes, cache=cache, seed=settings.seed,
                                          progress=progress)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            for c in todo:
                rows[c.id] = {**rows[c.id], "test_accuracy": None, "test_reason": _reason(e)}
            return
        record.update(full)
        for c in todo:
            rows[c.id] = {**rows[c.id], **tested[c.id]}


def _score(c: Candidate, config, X_all: np.ndarray, y: np.ndarray, record: dict, settings: RankSettings) -> dict:
    from ..search.flat import normalize

    try:
        selection = select_layers(config, [FINAL] if c.layers == FINAL else None)
        X = selection.take(X_all)
        started = time.perf_counter()
        probe = kfold_accuracy(X, y, folds=settings.folds, blocks=selection.blocks, seed=settings.seed)
        evidence = logme(normalize(X, blocks=selection.blocks), y)
        seconds = time.perf_counter() - started
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        return _failed(c, _reason(e))
    return {
        "id": c.id, **asdict(c), "status": "ok",
        "image_size": record["image_size"], "precision_used": record["precision"],
        "accuracy": round(probe.accuracy, 5), "low": round(probe.low, 5), "high": round(probe.high, 5),
        "fold_accuracies": [round(a, 5) for a in probe.folds], "correct": probe.packed(),
        "logme": round(evidence, 5),
        "images_per_second": record["images_per_second"], "dim": selection.dim,
        "bytes_per_image": selection.dim * 4, "params": record["params"], "score_seconds": round(seconds, 3),
    }


def _ordered(rows) -> list[dict]:
    """Scored candidates by predicted accuracy (best first), then the failed ones."""
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (-r["accuracy"], r["id"]))
    return ok + sorted((r for r in rows if r["status"] != "ok"), key=lambda r: r["id"])


def compare_to_best(rows: Sequence[dict], n: int) -> None:
    """Give every scored row ``vs_best``: its accuracy minus the best one's on the shared sample, with a
    95% paired bootstrap interval (points of accuracy, as fractions)."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return
    best = unpack_correct(max(ok, key=lambda r: r["accuracy"])["correct"], n)
    for r in ok:
        r["vs_best"] = [round(v, 5) for v in paired_difference(unpack_correct(r["correct"], n), best)]


def _cheapest(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: (-r["images_per_second"], r["bytes_per_image"], -r["accuracy"]))


def recommend(rows: Sequence[dict], *, paired: bool = True) -> dict | None:
    """The cheapest candidate (fastest to embed, then smallest vectors) that the sample cannot tell from the best.

    ``paired`` (the default) asks whether the paired interval of its difference from the best
    (``vs_best``) reaches zero; every candidate saw the same images, so this is the test that
    fits. ``paired=False`` asks only whether its own interval overlaps the best one's, which
    admits candidates a few points worse (kept to measure the difference in ``--validate``).
    """
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return None
    best = max(ok, key=lambda r: r["accuracy"])
    if paired:
        near = [r for r in ok if r["vs_best"][2] >= 0]
        rule = "are not significantly worse (paired 95% interval of the difference reaches 0)"
    else:
        near = [r for r in ok if r["high"] >= best["low"]]
        rule = f"have intervals that reach {best['low']:.1%}"
    pick = _cheapest(near)
    return {"id": pick["id"], "best": best["id"], "n_within_interval": len(near),
            "why": (f"the best predicted accuracy is {best['accuracy']:.1%} ({best['id']}); {len(near)} candidate(s) "
                    f"{rule}, and this is the cheapest of them")}


def _costs(report: dict) -> dict:
    """Seconds rank spent (sample embedding, speed probes, scoring) and, after --validate, the full embeddings."""
    groups = report["groups"].values()
    rank = sum(g.get("sample_seconds", 0) + g.get("speed_seconds", 0) for g in groups)
    rank += sum(r.get("score_seconds", 0) for r in report["rows"])
    out = {"rank": round(rank, 3)}
    if any("full_seconds" in g for g in groups):
        # Embedding every candidate fully = the sample (embedded by rank) plus the rest (by validation).
        out["full_embedding"] = round(sum(g.get("sample_seconds", 0) + g.get("full_seconds", 0) for g in groups), 3)
    return out
