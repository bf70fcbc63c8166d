"""Fine-tuning a backbone (its last layer groups, or all of it) with a new linear head: one run, its result and
its checkpoint (the network in unfreeze.py, the loop in trainer.py)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..backbones import Backbone
from ..data import ArraySource, Source
from ..errors import DataError
from ..heads import score_predictions
from ..hardware import Progress, keep_freed_memory
from .measure import Measure
from .settings import FinetuneSettings
from .subsets import LabelledSet, carve_validation
from .trainer import Images, Trainer
from .unfreeze import FinetuneNet, layer_groups, unfreeze

__all__ = ["FinetuneNet", "FinetuneResult", "FinetuneSettings", "device_defaults", "finetune", "layer_groups",
           "unfreeze"]


def device_defaults(device: torch.device) -> dict:
    """Defaults that fit the hardware: the native resolution on a GPU, 96 px and small batches on a CPU."""
    if device.type == "cuda":
        return {"image_size": None, "batch_size": 64}
    return {"image_size": 96, "batch_size": FinetuneSettings.batch_size}


@dataclass
class FinetuneResult:
    """One fine-tuning run; ``to_dict()`` is the CLI's ``--json`` object."""

    dataset: str
    backbone: str
    unfreeze: str
    image_size: int
    device: str
    n_train: int
    n_val: int
    n_test: int
    n_trainable: int
    epochs_run: int
    best_epoch: int
    accuracy: float | None
    macro_f1: float | None
    train_accuracy: float | None
    val_accuracy: float | None
    seconds: float
    train_seconds: float
    predict_seconds: float
    peak_rss_mb: float | None
    added_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    path: str | None = None
    n_failed: int = 0
    failures: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def finetune(
    backbone: Backbone,
    source: Source,
    train: LabelledSet,
    test: LabelledSet | None = None,
    settings: FinetuneSettings = FinetuneSettings(),
    *,
    dataset: str | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Fine-tune ``backbone`` (in place) with a new linear head on ``train``; score it on ``test``.

    Parameters
    ----------
    backbone : a freshly created backbone; its weights change.
    source : where the samples' images are read from.
    train, test : labelled samples (see featx.subsets); a validation split is carved from ``train``
        for early stopping, unless some class has a single example.
    settings : the optimisation (FinetuneSettings).
    dataset : the name recorded in the result and the checkpoint.
    out : checkpoint path (``.pt``); nothing is written when None.
    progress : optional ``progress(stage, advance, total)`` callback; the stage is ``"train"``.
    """
    settings.check()
    classes = train.classes
    if len(classes) < 2:
        raise DataError(f"fine-tuning needs at least two classes in the training data, not {classes}.")
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    fit, val = carve_validation(train, settings.val_fraction, settings.seed)
    unfreeze(backbone.model, settings.unfreeze)
    net = FinetuneNet(backbone, len(classes)).to(next(backbone.model.parameters()).device)
    trainer = Trainer(net, backbone, settings, in_memory=isinstance(source, ArraySource))
    if trainer.device.type == "cpu":
        keep_freed_memory()
    index = {c: i for i, c in enumerate(classes)}
    pre = backbone.config.preprocess
    train_set = Images(source, fit, index, pre, augment=True)
    val_set = Images(source, val, index, pre, augment=False) if val is not None else None

    with Measure(trainer.device) as measured:
        started = time.perf_counter()
        history, best_epoch = trainer.fit(train_set, val_set, generator, progress)
        # Accuracy on un-augmented training images beside validation's: the gap is the overfitting.
        train_eval = Images(source, fit.take(_sample(len(fit), 2000, settings.seed)), index, pre, augment=False)
        p, t, _ = trainer.predict(train_eval)
        train_accuracy = float(np.mean(p == t)) if len(t) else None
        val_accuracy = history[best_epoch - 1].get("val_accuracy")
        train_seconds = time.perf_counter() - started
        accuracy = macro_f1 = None
        started = time.perf_counter()
        if test is not None:
            p, t, _ = trainer.predict(Images(source, test, index, pre, augment=False))
            metrics = score_predictions(np.array(classes)[t], np.array(classes)[p])
            accuracy, macro_f1 = metrics.accuracy, metrics.macro_f1
        predict_seconds = time.perf_counter() - started

    name = dataset or source.name
    result = FinetuneResult(
        dataset=name, backbone=backbone.name, unfreeze=settings.unfreeze, image_size=pre.input_size,
        device=str(trainer.device), n_train=len(fit), n_val=len(val) if val is not None else 0,
        n_test=len(test) if test is not None else 0, n_trainable=sum(p.numel() for p in net.parameters()
                                                                      if p.requires_grad),
        epochs_run=len(history), best_epoch=best_epoch, accuracy=accuracy, macro_f1=macro_f1,
        train_accuracy=train_accuracy, val_accuracy=val_accuracy, seconds=round(measured.seconds, 3),
        train_seconds=round(train_seconds, 3), predict_seconds=round(predict_seconds, 3),
        peak_rss_mb=measured.peak_rss_mb, added_rss_mb=measured.added_rss_mb,
        peak_gpu_mb=measured.peak_gpu_mb, n_failed=len(trainer.failures),
        failures=sorted(trainer.failures), history=history,
    )
    if out is not None:
        from .checkpoints import save_checkpoint

        result.path = str(save_checkpoint(out, backbone, net, classes, result, settings))
    return result


def _sample(n: int, at_most: int, seed: int) -> np.ndarray:
    if n <= at_most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=at_most, replace=False))
