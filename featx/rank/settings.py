"""How rank scores its candidates (RankSettings), the rounds of its screen, and when ranking does not pay; no torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError


@dataclass(frozen=True)
class RankSettings:
    """How candidates are scored: the sample's size, the folds of the probe, the seed; and whether to validate."""

    sample: int = 2000
    folds: int = 5
    seed: int = 0
    validate: bool = False
    screen: int = 256  # images of the sample every candidate is screened on first; 0: no screening
    # forward passes the screen keeps, with every candidate on them (the rest are pruned). 4: replayed on a validated
    # digits rank of the grid recipe (benchmarks/replay_screen.py, 3 seeds), 4 passes recommended candidates 0.52 /
    # 0.26 / 0.26 points below the test's best where 8 did 0.52 / 0.52 / 0.52, for 27-47 s of forward passes
    # instead of 52-62 s.
    contenders: int = 4
    # passes scored on the whole sample: below ``contenders``, rounds of twice the images halve them. Not by
    # default: on digits, halving 8 → 4 after 512 images pruned the full grid's winner for 3 of 3 screen seeds
    # (the stages recipe, where every candidate was its own pass).
    finalists: int = 4

    def check(self) -> None:
        if self.folds < 2:
            raise ParameterError("folds", f"must be at least 2, not {self.folds}.")
        if self.sample < 2 * self.folds:
            raise ParameterError("sample", f"must be at least {2 * self.folds} images (twice folds=), "
                                 f"not {self.sample}.", also=("folds",))
        if self.screen and self.screen < 2 * self.folds:
            raise ParameterError("screen", f"must be 0 (no screening) or at least {2 * self.folds} images "
                                 f"(twice folds=), not {self.screen}.", also=("folds",))
        if self.contenders < 1:
            raise ParameterError("contenders", f"must be at least 1, not {self.contenders}.")
        if self.finalists < 1:
            raise ParameterError("finalists", f"must be at least 1, not {self.finalists}.")


def screen_rounds(n_sample: int, settings: RankSettings) -> list[tuple[int, int]]:
    """(images, candidates kept) of each round before the whole sample, as in successive halving (Jamieson &
    Talwalkar 2016): the screen keeps ``contenders``; each further round scores the survivors on twice the
    images and keeps half of them, until ``finalists`` are left for the whole sample."""
    rounds, images, keep = [], settings.screen, settings.contenders
    while images < n_sample:
        rounds.append((images, keep))
        if keep <= settings.finalists:
            break
        images, keep = images * 2, max(settings.finalists, keep // 2)
    return rounds


def small_data_note(n_sample: int, n_train: int) -> str | None:
    """Rank saves time only when the sample is a small part of the data: say so when it is not."""
    if n_sample * 4 < n_train:
        return None
    return (f"the sample is {n_sample / n_train:.0%} of the {n_train:,} training images: the contenders' scores cost "
            "about as much as embedding them fully, so `--validate` (the truth, not a prediction) costs little more "
            "here, and `--sample` smaller than the data makes rank cheaper.")
