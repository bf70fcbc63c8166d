"""`rank_candidates`: embed one shared sample per candidate group, score each candidate, recommend, resume."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..config import FINAL, GRID
from ..data import Source, SubsetSource, hash_source
from ..embed.decoders import DecoderPool, SubsetDecoders
from ..errors import DataError, FeatxError, ParameterError
from ..hardware import Progress, default_workers
from ..store import DEFAULT_CACHE, open_store
from ..store.columns import select_layers
from ..store.paths import rank_dir
from ..reporting import previous_report, write_json
from ..transfer.subsets import labelled_splits
from .candidates import SIZE_WORDS, Candidate, default_candidates, image_size, native_size
from .embedding import embed_group, feature_params, measure_speed
from .logme import logme
from .choice import choose_contenders, compare_to_best, forward_passes, recommend
from .probe import kfold_accuracy
from .report import summarize_validation, write_report
from .sample import stratified_sample
from .settings import RankSettings, screen_rounds, small_data_note
from .validate import validate_group

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


def _group_id(group: tuple) -> str:
    backbone, size, crop, precision, recipe = group
    return f"{backbone}@{size}/{crop}/{precision}" + (f"/{recipe}" if recipe == GRID else "")


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
    run = _Run(source, dataset, (keys, failures), sample, y, settings, cache, weights or {}, progress, decoders,
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
    for group, members in _by_group(alive, run.passes).items():
        need_score = [c for c in members if rows.get(c.id, {}).get("status") not in ("ok", "failed", "pruned")]
        need_test = [c for c in members if settings.validate and "test_accuracy" not in rows.get(c.id, {})]
        if need_score or need_test:
            _run_group(run, group, members, report, rows, need_score=need_score, need_test=need_test)
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


def _prune_in_rounds(run: "_Run", alive: list[Candidate], positions: list[np.ndarray], report: dict,
                     rows: dict[str, dict], save: Callable) -> list[Candidate]:
    """Score the candidates still in on each round's images and keep the round's best; returns the finalists
    (every candidate under --validate, which scores each round but prunes nothing)."""
    for r, where in enumerate(positions):
        scores = report["rounds"][r]["scores"]
        todo = [c for c in alive if c.id not in scores and rows.get(c.id, {}).get("status") != "failed"]
        for group, members in _by_group(todo, run.passes).items():
            _run_group(run, group, members, report, rows, screen=(where, scores))
            save("screen", len(members), len(todo))
        if run.settings.validate:
            continue
        kept = set(choose_contenders({c.id: scores[c.id] for c in alive if c.id in scores},
                                     report["rounds"][r]["keep"], run.passes))
        for c in alive:
            if c.id not in kept and c.id in scores and rows.get(c.id, {}).get("status") != "failed":
                rows[c.id] = _pruned(c, scores[c.id], len(where), report["groups"].get(_group_id(run.passes[c.id]), {}))
        alive = [c for c in alive if c.id in kept]
        run.keep_models(alive)
    return alive


@dataclass(frozen=True)
class _Run:
    """What every group of one rank shares: the source, the sample, the settings."""

    source: Source
    dataset: str
    hashes: tuple  # (keys, failures) of the whole source
    sample: object  # the labelled sample (transfer.subsets.Split)
    y: np.ndarray
    settings: RankSettings
    cache: object
    weights: dict
    progress: Progress | None
    decoders: DecoderPool  # one pool for every group, forked before any model was built
    passes: dict  # candidate id → its forward pass (forward_passes)
    models: dict = field(default_factory=dict)  # (group, layers) → the model, kept while the group has contenders

    def model(self, group: tuple, layers: str | None):
        if (group, layers) not in self.models:
            self.models[group, layers] = _create(group, layers, self.weights)
        return self.models[group, layers]

    def keep_models(self, alive: Sequence[Candidate]) -> None:
        """Let go of the models of groups that no candidate left alive needs."""
        groups = {c.group for c in alive}
        for key in [k for k in self.models if k[0] not in groups]:
            del self.models[key]

    def images(self, positions: np.ndarray | None) -> tuple[Source, tuple[list[str], dict], SubsetDecoders]:
        """The source of the sample's images (or only those at ``positions`` in it), their content keys, and
        the shared pool's decoding of them."""
        indices = self.sample.indices if positions is None else self.sample.indices[positions]
        keys = self.hashes[0]
        return (SubsetSource(self.source, indices, name=self.dataset), ([keys[i] for i in indices], {}),
                self.decoders.subset(indices))


def _by_group(candidates: Sequence[Candidate], passes: dict[str, tuple]) -> dict[tuple, list[Candidate]]:
    """Candidates by the forward pass they share (one backbone, size, crop, precision and layer recipe)."""
    out: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        out.setdefault(passes[c.id], []).append(c)
    return out


def _create(group: tuple, layers: str | None, weights: dict[str, str]):
    from ..backbones import create_backbone

    backbone, size, crop, precision = group
    pixels = image_size(size, native_size(backbone)) if size in SIZE_WORDS else int(size)
    return create_backbone(backbone, weights=weights.get(backbone), image_size=pixels, precision=precision,
                           layers=layers, crop=crop)


def _failed(c: Candidate, reason: str) -> dict:
    return {"id": c.id, **asdict(c), "status": "failed", "reason": reason}


def _pruned(c: Candidate, screened: dict, images: int, record: dict) -> dict:
    return {"id": c.id, **asdict(c), "status": "pruned", "screen": screened, "pruned_at": images,
            "images_per_second": record.get("images_per_second"), "image_size": record.get("image_size"),
            "reason": f"ranked below the candidates kept after {images} images"}


def _reason(e: BaseException) -> str:
    return str(e) if isinstance(e, FeatxError) else f"{type(e).__name__}: {e}"


def _run_group(run: _Run, group, members, report, rows, *, screen=None, need_score=(), need_test=()) -> None:
    """Embed the images the group's candidates need once, then score them: on a round's images
    (``screen``: their positions in the sample and the round's scores to fill), on the whole sample
    (``need_score``), and on the test split (``need_test``, --validate)."""
    gid = _group_id(group)
    need_screen = members if screen is not None else []
    wanted = {c.layers for c in members}
    try:
        model = run.model(group[:4], group[4])
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # missing weights, a hub model offline, a model without stage taps
        for c in {*need_screen, *need_score, *need_test}:
            rows[c.id] = _failed(c, _reason(e))
        return
    record = dict(report["groups"].get(gid, {}))
    whole = bool(need_score or need_test)
    images, hashes, decoders = run.images(None if whole else screen[0])
    try:
        embedded = embed_group(images, model, report["sample"]["dataset"], cache=run.cache,
                               keep_final=FINAL in wanted, hashes=hashes, decoders=decoders, progress=run.progress)
        if not record.get("sample_embedded") or embedded.n_embedded:  # keep the run that did the work
            record.update(sample_seconds=record.get("sample_seconds", 0) + embedded.seconds,
                          sample_embedded=record.get("sample_embedded", 0) + embedded.n_embedded)
            # found in the store: the images held now, less those rank embedded (in an earlier round, say)
            record["sample_reused"] = max(0, embedded.n_embedded + embedded.n_reused - record["sample_embedded"])
        if "images_per_second" not in record and whole:  # what a pruned group costs matters to no one
            started = time.perf_counter()
            record["images_per_second"] = round(measure_speed(model, images), 2)
            record["speed_seconds"] = round(time.perf_counter() - started, 3)
        record["params"] = feature_params(model)
        record["image_size"] = model.config.preprocess.input_size
        record["precision"] = model.config.precision
        with open_store(model.config, run.cache) as store:
            X_all = store.vectors(hashes[0])
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        for c in {*need_screen, *need_score, *need_test}:
            rows[c.id] = _failed(c, _reason(e))
        return
    report["groups"][gid] = record
    for c in need_screen:
        where, scores = screen
        screened = _score(c, model.config, X_all[where] if whole else X_all, run.y[where], run.settings)
        if "reason" in screened:
            rows[c.id] = _failed(c, screened["reason"])
        else:  # the round's figures only: its per-image answers are not compared pairwise
            scores[c.id] = {k: v for k, v in screened.items() if k not in ("correct", "fold_accuracies")}
    for c in need_score:
        scored = _score(c, model.config, X_all, run.y, run.settings)
        rows[c.id] = _failed(c, scored["reason"]) if "reason" in scored else _row(c, scored, record)
    if need_test:
        todo = [c for c in need_test if rows.get(c.id, {}).get("status") == "ok"]
        try:
            tested, full = validate_group(run.source, model, todo, run.dataset, run.hashes, cache=run.cache,
                                          seed=run.settings.seed, decoders=run.decoders, progress=run.progress)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            for c in todo:
                rows[c.id] = {**rows[c.id], "test_accuracy": None, "test_reason": _reason(e)}
            return
        record.update(full)
        for c in todo:
            rows[c.id] = {**rows[c.id], **tested[c.id]}


def _score(c: Candidate, config, X_all: np.ndarray, y: np.ndarray, settings: RankSettings) -> dict:
    """The k-fold probe and LogME of one candidate on the given vectors; ``{"reason": ...}`` when it fails."""
    from ..store.view import normalize

    try:
        selection = select_layers(config, [FINAL] if c.layers == FINAL else None)
        X = selection.take(X_all)
        started = time.perf_counter()
        probe = kfold_accuracy(X, y, folds=settings.folds, layer_widths=selection.layer_widths, seed=settings.seed)
        evidence = logme(normalize(X, layer_widths=selection.layer_widths), y)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        return {"reason": _reason(e)}
    return {"accuracy": round(probe.accuracy, 5), "low": round(probe.low, 5), "high": round(probe.high, 5),
            "fold_accuracies": [round(a, 5) for a in probe.folds], "correct": probe.packed(),
            "logme": round(evidence, 5), "dim": selection.dim, "n": len(y),
            "seconds": round(time.perf_counter() - started, 3)}


def _row(c: Candidate, scored: dict, record: dict) -> dict:
    """A scored candidate's row of the table."""
    return {
        "id": c.id, **asdict(c), "status": "ok",
        "image_size": record["image_size"], "precision_used": record["precision"],
        **{k: scored[k] for k in ("accuracy", "low", "high", "fold_accuracies", "correct", "logme")},
        "images_per_second": record["images_per_second"], "dim": scored["dim"],
        "bytes_per_image": scored["dim"] * 4, "params": record["params"], "score_seconds": scored["seconds"],
    }


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
