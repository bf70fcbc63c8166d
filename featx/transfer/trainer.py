"""The fine-tuning loop: the images' reader (augmented crops), batches, AdamW steps with warm-up and cosine
decay, early stopping on validation, and prediction passes."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..backbones import Backbone
from ..data import Source, read_image
from ..data.images import random_resized_crop, resize_and_crop
from ..errors import ImageError, TrainingError
from ..hardware import Progress, default_workers, prepare_batch
from .settings import FinetuneSettings
from .subsets import LabelledSet
from .unfreeze import FinetuneNet


class Images(Dataset):
    """The reader: source items → uint8 crops (augmented for training) and class indices."""

    def __init__(self, source: Source, samples: LabelledSet, class_index: dict[str, int], preprocess, augment: bool):
        self.source, self.samples, self.preprocess, self.augment = source, samples, preprocess, augment
        self.targets = np.array([class_index[label] for label in samples.labels], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, j: int):
        i = int(self.samples.indices[j])
        try:
            img = read_image(self.source, i, self.preprocess)
        except ImageError as e:
            return None, self.targets[j], f"{self.source.items[i].path}: {e}"
        crop = random_resized_crop(img, self.preprocess) if self.augment else resize_and_crop(img, self.preprocess)
        return crop, self.targets[j], None


def collate(rows):
    good = [(c, t) for c, t, _ in rows if c is not None]
    failed = [reason for c, _, reason in rows if c is None]
    if not good:
        return None, None, failed
    return torch.from_numpy(np.stack([c for c, _ in good])), torch.tensor([t for _, t in good]), failed


class Trainer:
    """Runs the loops for one FinetuneNet: batches, mixed precision, evaluation passes."""

    def __init__(self, net: FinetuneNet, backbone: Backbone, settings: FinetuneSettings, in_memory: bool = False):
        self.net = net
        self.device = next(backbone.model.parameters()).device
        self.preprocess = backbone.config.preprocess
        self.bf16 = backbone.config.precision == "bf16"
        self.settings = settings
        # Pixel arrays in memory cost little to prepare: a worker process would cost more to start
        # (one per evaluation pass) than it saves. Files need decoding beside the training.
        default = 0 if in_memory else default_workers()
        self.workers = default if settings.workers is None else settings.workers
        self.failures: set[str] = set()

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _inputs(self, batch: torch.Tensor) -> torch.Tensor:
        return prepare_batch(batch, self.preprocess, self.device)

    def loader(self, dataset: Images, train: bool, generator: torch.Generator | None = None) -> DataLoader:
        s = self.settings
        sampler = None
        if train:
            n = max(len(dataset), s.min_steps_per_epoch * s.batch_size)
            sampler = RandomSampler(dataset, num_samples=n, generator=generator)
        return DataLoader(dataset, batch_size=s.batch_size if train else 2 * s.batch_size, sampler=sampler,
                          num_workers=self.workers, collate_fn=collate, persistent_workers=train and self.workers > 0,
                          pin_memory=self.device.type == "cuda", generator=generator)

    def step(self, batch, targets, optimizer, scheduler) -> tuple[float, int]:
        with self._autocast():
            logits = self.net(self._inputs(batch))
        loss = nn.functional.cross_entropy(logits.float(), targets.to(self.device),
                                           label_smoothing=self.settings.label_smoothing)
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss diverged ({loss.item()}); lower lr (now {self.settings.lr:g}).",
                                params=("lr",))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return float(loss.detach()), int((logits.detach().argmax(1).cpu() == targets).sum())

    def fit(self, train_set: Images, val_set: Images | None, generator: torch.Generator,
            progress: Progress | None) -> tuple[list[dict], int]:
        """AdamW with warm-up and cosine decay; early stopping on validation; the best epoch's weights
        are loaded back. Returns the per-epoch history and the best epoch (1-based)."""
        s, net = self.settings, self.net
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in net.extractor.parameters() if p.requires_grad], "lr": s.lr},
             {"params": list(net.head.parameters()), "lr": s.lr * s.head_lr_scale}],
            weight_decay=s.weight_decay,
        )
        loader = self.loader(train_set, train=True, generator=generator)
        total_steps = s.epochs * len(loader)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(total_steps, s.warmup_fraction))
        history: list[dict] = []
        best, best_score, best_epoch, waited = None, None, 0, 0
        for epoch in range(1, s.epochs + 1):
            net.train_mode()
            losses, correct, seen = [], 0, 0
            for batch, targets, failed in loader:
                self.failures.update(failed)
                if batch is not None:
                    loss, right = self.step(batch, targets, optimizer, scheduler)
                    losses.append(loss)
                    correct, seen = correct + right, seen + len(targets)
                if progress:
                    progress("train", 1, total_steps)
            row = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                   "train_accuracy_augmented": correct / seen if seen else None}
            if val_set is not None:
                p, t, val_loss = self.predict(val_set)
                row.update(val_accuracy=float(np.mean(p == t)) if len(t) else None, val_loss=val_loss)
                score = (row["val_accuracy"] or 0.0, -val_loss)
            else:  # nothing held out: the last epoch is the one kept
                score = (epoch, 0.0)
            history.append(row)
            if best_score is None or score > best_score:
                best_score, best_epoch, waited = score, epoch, 0
                best = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if waited >= s.patience:
                    if progress:
                        progress("train", (s.epochs - epoch) * len(loader), total_steps)
                    break
        net.load_state_dict(best)
        return history, best_epoch

    def predict(self, dataset: Images) -> tuple[np.ndarray, np.ndarray, float]:
        """Predicted and true class indices for every readable sample, and the mean loss."""
        self.net.eval()
        preds, truth, losses = [], [], []
        with torch.inference_mode(), self._autocast():
            for batch, targets, failed in self.loader(dataset, train=False):
                self.failures.update(failed)
                if batch is None:
                    continue
                logits = self.net(self._inputs(batch)).float()
                losses.append(float(nn.functional.cross_entropy(logits, targets.to(self.device), reduction="sum")))
                preds.append(logits.argmax(1).cpu().numpy())
                truth.append(targets.numpy())
        if not preds:
            return np.empty(0, np.int64), np.empty(0, np.int64), float("nan")
        p, t = np.concatenate(preds), np.concatenate(truth)
        return p, t, sum(losses) / len(t)


def cosine_schedule(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(round(total_steps * warmup_fraction)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
