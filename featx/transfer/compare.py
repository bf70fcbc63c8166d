"""Frozen transfer against fine-tuning on the same K-shot subsets and test split: the runs and their record."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..config import FINAL
from ..data import Source, hash_source
from ..embed import embed_source
from ..heads import score_predictions
from ..heads.registry import HEAD_NAMES
from ..hardware import Progress
from ..store import FeatureStore
from ..store.columns import select_layers
from .measure import Measure, measured_runs
from .settings import DEFAULT_METHODS  # noqa: F401 (the library's default, named here too)
from .settings import FINETUNE_METHODS, GRID_SUFFIX, STAGES_SUFFIX, CompareSettings, FinetuneSettings
from ..reporting import previous_report, write_json
from .report import write_report
from .subsets import LabelledSet, check_shots, draw_shots, labelled_splits, splits_from_members

if TYPE_CHECKING:
    from ..backbones import Backbone

REPORT_FORMAT = "featx-compare-1"


@dataclass
class Experiment:
    """What every run of one experiment shares: the data, the store, and how to make a fresh backbone."""

    source: Source
    store: FeatureStore
    dataset: str
    train: LabelledSet
    test: LabelledSet
    settings: CompareSettings
    make_backbone: Callable[[], Backbone]
    _test_vectors: np.ndarray | None = field(default=None, repr=False)

    def test_vectors(self) -> np.ndarray:
        if self._test_vectors is None:
            self._test_vectors = self.store.vectors(self.test.keys)
        return self._test_vectors


def run_frozen_head(exp: Experiment, head: str, train: LabelledSet, seed: int, layers: str | None = FINAL) -> dict:
    """A classical head on the cached vectors of ``train`` (``layers``: their columns; None: all the
    store's layers, normalised block by block): fit, then predict the test split."""
    selection = select_layers(exp.store.config, layers)
    X = selection.take(exp.store.vectors(train.keys))
    Xt = selection.take(exp.test_vectors())
    with Measure() as measured:
        from ..heads.registry import HEADS

        estimator = HEADS[head](random_state=seed, layer_widths=selection.layer_widths)
        started = time.perf_counter()
        estimator.fit(X, train.labels.astype(str))
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        predicted = estimator.predict(Xt)
        predict_seconds = time.perf_counter() - started
    metrics = score_predictions(exp.test.labels.astype(str), predicted)
    return {
        "accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1,
        "train_accuracy": float(np.mean(estimator.predict(X) == train.labels.astype(str))),
        "val_accuracy": None, "epochs_run": None,
        "seconds": measured.seconds, "train_seconds": train_seconds, "predict_seconds": predict_seconds,
        "peak_rss_mb": measured.peak_rss_mb, "added_rss_mb": measured.added_rss_mb,
    }


def run_finetuned(exp: Experiment, unfreeze: str, train: LabelledSet, seed: int) -> dict:
    """Fine-tune a fresh backbone on ``train`` (validation carved from it) and score it on the test split."""
    s = exp.settings
    from .finetune import finetune  # torch: only a fine-tuning arm needs it

    result = finetune(exp.make_backbone(), exp.source, train, exp.test,
                      FinetuneSettings(unfreeze=unfreeze, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, seed=seed),
                      dataset=exp.dataset)
    keep = ("accuracy", "macro_f1", "train_accuracy", "val_accuracy", "epochs_run", "seconds", "train_seconds",
            "predict_seconds", "peak_rss_mb", "added_rss_mb", "peak_gpu_mb", "n_failed")
    return {k: getattr(result, k) for k in keep}


def _frozen(head: str, layers: str | None = FINAL):
    return lambda exp, train, seed: run_frozen_head(exp, head, train, seed, layers)


def _finetuned(unfreeze: str):
    return lambda exp, train, seed: run_finetuned(exp, unfreeze, train, seed)


# method name → run(experiment, train subset, seed) → measurements
METHODS: dict[str, Callable[[Experiment, LabelledSet, int], dict]] = {
    **{h: _frozen(h) for h in HEAD_NAMES},
    **{h + STAGES_SUFFIX: _frozen(h, None) for h in HEAD_NAMES},
    **{h + GRID_SUFFIX: _frozen(h, None) for h in HEAD_NAMES},
    **{m: _finetuned(u) for m, u in FINETUNE_METHODS.items()},
}


def _resume_key(report: dict) -> str:
    s = {k: v for k, v in report["settings"].items() if k not in ("shots", "seeds", "methods")}
    return json.dumps([report.get("store_key"), report.get("dataset"), s], sort_keys=True)


def _previous_runs(out: Path, report: dict) -> dict[tuple, dict]:
    """Finished runs of an earlier, interrupted or smaller experiment with the same budget in ``out``."""
    old = previous_report(out, report, _resume_key)
    if old is None:
        return {}
    return {(r["method"], r["shots"], r["seed"]): r for r in old.get("runs", []) if r.get("status") == "ok"}


def run_compare(
    source: Source,
    backbone: Backbone,
    store: FeatureStore,
    settings: CompareSettings = CompareSettings(),
    *,
    out: str | Path,
    make_backbone: Callable[[], Backbone],
    name: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Embed ``source`` once, then run every method on the same K-shot subsets; write report.json/.md/.png.

    Parameters
    ----------
    source : a labelled dataset with train and test splits.
    backbone : the frozen backbone that embeds it (its configuration is the store's).
    store : the feature store for ``backbone``; vectors already there are reused.
    settings : shots, seeds, methods and the fine-tuning budget.
    out : folder for the reports; finished runs of an earlier experiment there are reused.
    make_backbone : returns a fresh copy of ``backbone`` for each fine-tuning run.
    progress : optional ``progress(stage, advance, total)``; stages ``hash``, ``embed``, ``runs``.
    """
    settings.check()
    out = Path(out)
    name = name or source.name
    started = time.perf_counter()
    # Refuse an impossible request before spending minutes embedding: hashes give the splits.
    hashes = hash_source(source, progress)
    check_shots(labelled_splits(source, hashes[0], name)["train"], max(settings.shots))
    embedded = embed_source(source, backbone, store, name=name, progress=progress, hashes=hashes)
    splits = splits_from_members(source, store.members(name), name)
    train, test = splits["train"], splits["test"]
    check_shots(train, max(settings.shots))  # again: images that failed to decode are not members
    exp = Experiment(source, store, name, train, test, settings, make_backbone)
    pre = backbone.config.preprocess
    report = {
        "format": REPORT_FORMAT,
        "dataset": name,
        "source": source.description,
        "backbone": backbone.name,
        "store_key": store.key,
        "image_size": pre.input_size,
        "precision": backbone.config.precision,
        "crop": pre.crop,
        "layers": list(backbone.config.layers),
        "device": str(backbone.device),
        "settings": {**asdict(settings), "shots": list(settings.shots), "methods": list(settings.methods)},
        "classes": train.classes,
        "n_train_split": len(train),
        "n_test": len(test),
        "embedding": {"n_images": embedded.n_total, "n_embedded": embedded.n_embedded,
                      "n_reused": embedded.n_reused, "n_failed": embedded.n_failed, "seconds": embedded.seconds,
                      "images_per_second": embedded.images_per_second},
        "subsets": {},
        "runs": [],
        "complete": False,
    }
    out.mkdir(parents=True, exist_ok=True)
    done = _previous_runs(out, report)
    total = len(settings.shots) * settings.seeds * len(settings.methods)
    with measured_runs():
        for shots in settings.shots:
            for seed in range(settings.seeds):
                subset = draw_shots(train, shots, seed)
                report["subsets"][f"{shots}/{seed}"] = {"fingerprint": subset.fingerprint(),
                                                        "keys": list(subset.keys)}
                for method in settings.methods:
                    run = done.get((method, shots, seed)) or _run_one(exp, method, subset, shots, seed)
                    report["runs"].append(run)
                    write_json(report, out)  # after every run: an interrupted experiment resumes from here
                    if progress:
                        progress("runs", 1, total)
    report["complete"] = True
    report["seconds"] = round(time.perf_counter() - started, 3)
    write_report(report, out)
    return report


def _run_one(exp: Experiment, method: str, subset: LabelledSet, shots: int, seed: int) -> dict:
    run = {"method": method, "shots": shots, "seed": seed, "n_train": len(subset), "subset": subset.fingerprint()}
    try:
        measured = METHODS[method](exp, subset, seed)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # out of memory, a diverging loss: recorded, and the experiment goes on
        return {**run, "status": "failed", "reason": f"{type(e).__name__}: {e}"}
    return {**run, "status": "ok", **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in measured.items()}}
