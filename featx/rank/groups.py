"""One rank's groups: the models and images they share (Run), and scoring the candidates of one forward pass."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from ..config import FINAL, Recipe
from ..data import Source, SubsetSource
from ..embed.decoders import DecoderPool, SubsetDecoders
from ..errors import FeatxError
from ..hardware import Progress
from ..store import open_store
from ..store.columns import select_layers
from .candidates import SIZE_WORDS, Candidate, image_size, native_size
from .choice import group_id
from .embedding import embed_group, feature_params, measure_speed
from .logme import logme
from .probe import kfold_accuracy
from .settings import RankSettings
from .validate import validate_group


@dataclass(frozen=True)
class Run:
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
            self.models[group, layers] = create_model(group, layers, self.weights)
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


def by_group(candidates: Sequence[Candidate], passes: dict[str, tuple]) -> dict[tuple, list[Candidate]]:
    """Candidates by the forward pass they share (one backbone, size, crop, precision and layer recipe)."""
    out: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        out.setdefault(passes[c.id], []).append(c)
    return out


def create_model(group: tuple, layers: str | None, weights: dict[str, str]):
    from ..backbones import backbone_from

    backbone, size, crop, precision = group
    pixels = image_size(size, native_size(backbone)) if size in SIZE_WORDS else int(size)
    return backbone_from(Recipe(backbone, weights.get(backbone), pixels, precision, layers, crop))


def failed_row(c: Candidate, reason: str) -> dict:
    return {"id": c.id, **asdict(c), "status": "failed", "reason": reason}


def pruned_row(c: Candidate, screened: dict, images: int, record: dict, dominated_by: str | None = None) -> dict:
    reason = (f"ranked below the candidates kept after {images} images" if dominated_by is None else
              f"{dominated_by} costs no more per image and scored at least as well by both scores after {images} "
              "images")
    return {"id": c.id, **asdict(c), "status": "pruned", "screen": screened, "pruned_at": images,
            "images_per_second": record.get("images_per_second"), "image_size": record.get("image_size"),
            "reason": reason, **({"dominated_by": dominated_by} if dominated_by else {})}


def reason_of(e: BaseException) -> str:
    return str(e) if isinstance(e, FeatxError) else f"{type(e).__name__}: {e}"


def run_group(run: Run, group, members, report, rows, *, screen=None, need_score=(), need_test=()) -> None:
    """Embed the images the group's candidates need once, then score them: on a round's images
    (``screen``: their positions in the sample and the round's scores to fill), on the whole sample
    (``need_score``), and on the test split (``need_test``, --validate)."""
    gid = group_id(group)
    need_screen = members if screen is not None else []
    wanted = {c.layers for c in members}
    try:
        model = run.model(group[:4], group[4])
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # missing weights, a hub model offline, a model without stage taps
        for c in {*need_screen, *need_score, *need_test}:
            rows[c.id] = failed_row(c, reason_of(e))
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
            rows[c.id] = failed_row(c, reason_of(e))
        return
    report["groups"][gid] = record
    for c in need_screen:
        where, scores = screen
        screened = score_candidate(c, model.config, X_all[where] if whole else X_all, run.y[where], run.settings)
        if "reason" in screened:
            rows[c.id] = failed_row(c, screened["reason"])
        else:  # the round's figures only: its per-image answers are not compared pairwise
            scores[c.id] = {k: v for k, v in screened.items() if k not in ("correct", "fold_accuracies")}
    for c in need_score:
        scored = score_candidate(c, model.config, X_all, run.y, run.settings)
        rows[c.id] = failed_row(c, scored["reason"]) if "reason" in scored else scored_row(c, scored, record)
    if need_test:
        todo = [c for c in need_test if rows.get(c.id, {}).get("status") == "ok"]
        try:
            tested, full = validate_group(run.source, model, todo, run.dataset, run.hashes, cache=run.cache,
                                          seed=run.settings.seed, decoders=run.decoders, progress=run.progress)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            for c in todo:
                rows[c.id] = {**rows[c.id], "test_accuracy": None, "test_reason": reason_of(e)}
            return
        record.update(full)
        for c in todo:
            rows[c.id] = {**rows[c.id], **tested[c.id]}


def score_candidate(c: Candidate, config, X_all: np.ndarray, y: np.ndarray, settings: RankSettings) -> dict:
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
        return {"reason": reason_of(e)}
    return {"accuracy": round(probe.accuracy, 5), "low": round(probe.low, 5), "high": round(probe.high, 5),
            "fold_accuracies": [round(a, 5) for a in probe.folds], "correct": probe.packed(),
            "logme": round(evidence, 5), "dim": selection.dim, "n": len(y),
            "seconds": round(time.perf_counter() - started, 3)}


def scored_row(c: Candidate, scored: dict, record: dict) -> dict:
    """A scored candidate's row of the table."""
    return {
        "id": c.id, **asdict(c), "status": "ok",
        "image_size": record["image_size"], "precision_used": record["precision"],
        **{k: scored[k] for k in ("accuracy", "low", "high", "fold_accuracies", "correct", "logme")},
        "images_per_second": record["images_per_second"], "dim": scored["dim"],
        "bytes_per_image": scored["dim"] * 4, "params": record["params"], "score_seconds": scored["seconds"],
    }
