"""Which candidates go on and which one is recommended: forward passes, the screen's choice, the paired
comparison with the best, the recommendation."""

from __future__ import annotations

from typing import Sequence

from ..config import FINAL, GRID, STAGES
from .candidates import Candidate
from .probe import paired_difference, unpack_correct


def forward_passes(candidates: Sequence[Candidate]) -> dict[str, tuple]:
    """Each candidate's forward pass, ``(backbone, size, crop, precision, recipe)``: one per multi-layer
    recipe (stages, grid) of a backbone, size, crop and precision; a final-layer candidate rides on the
    grid's pass or else the stages' (their vectors end with the final columns), or has a pass of its own."""
    multi: dict[tuple, set[str]] = {}
    for c in candidates:
        if c.layers != FINAL:
            multi.setdefault(c.group, set()).add(c.layers)

    def recipe(c: Candidate) -> str | None:
        if c.layers != FINAL:
            return c.layers
        shared = multi.get(c.group, set())
        return GRID if GRID in shared else STAGES if STAGES in shared else None

    return {c.id: (*c.group, recipe(c)) for c in candidates}


def group_id(group: tuple) -> str:
    """A forward pass's name in the report's ``groups``."""
    backbone, size, crop, precision, recipe = group
    return f"{backbone}@{size}/{crop}/{precision}" + (f"/{recipe}" if recipe == GRID else "")


def forward_cost(record: dict) -> float | None:
    """What a group's forward pass costs per image, relatively: its network's weights times its image's pixels
    (a convolutional network's work grows with both); None before the group has been built."""
    if not record.get("params") or not record.get("image_size"):
        return None
    return float(record["params"]) * float(record["image_size"]) ** 2


def pass_costs(passes: dict[str, tuple], report: dict) -> dict[tuple, float | None]:
    """forward_cost of each forward pass, from the report's group records."""
    return {p: forward_cost(report["groups"].get(group_id(p), {})) for p in set(passes.values())}


def choose_contenders(screen: dict[str, dict], n: int, passes: dict[str, tuple] | None = None,
                      costs: dict[tuple, float | None] | None = None) -> list[str]:
    """The candidates the screen keeps: the best by the probe's accuracy and the best by LogME, nominated in turn
    until they span ``n`` forward passes (``passes``: candidate id → its forward pass; None: one each).

    Neither cheap score alone is trusted to put the eventual winner first (docs/results/rank.md: LogME
    ordered candidates better, the probe gives the accuracy), so each nominates its top in turn. What a round
    costs is its forward passes over more images, so ``n`` counts passes: a candidate nominated on a pass
    already kept (a final-layer candidate on its group's grid pass) is kept at no cost in embedding; one
    nominated after the ``n`` passes are filled is not (its probe would still cost seconds).

    With ``costs`` (forward pass → forward_cost), a candidate that would add a pass is passed over when one
    already kept costs no more per image and scored at least as well by both: it is dominated, and rank
    recommends the cheapest candidate the best cannot be told from, so it could only matter by beating the
    cheaper one clearly on more images after losing to it on both scores here.
    """
    pass_of = passes or {c: c for c in screen}
    by_probe = sorted(screen, key=lambda c: (-screen[c]["accuracy"], -screen[c]["logme"], c))
    by_logme = sorted(screen, key=lambda c: (-screen[c]["logme"], -screen[c]["accuracy"], c))
    chosen: list[str] = []
    spanned: set = set()
    for c in (c for pair in zip(by_probe, by_logme) for c in pair):
        if c in chosen:
            continue
        if pass_of[c] not in spanned:
            if len(spanned) == n:
                break
            if costs and dominated_by(c, chosen, screen, pass_of, costs):
                continue
            spanned.add(pass_of[c])
        chosen.append(c)
    return chosen


def dominated_by(c: str, kept, screen: dict[str, dict], passes: dict[str, tuple],
                 costs: dict[tuple, float | None]) -> str | None:
    """A candidate of ``kept`` whose forward pass costs no more than ``c``'s and that scored at least as well by
    the probe and by LogME; None when there is none (or a cost is not known)."""
    cost = costs.get(passes[c])
    if cost is None:
        return None
    return next((k for k in kept if k != c and costs.get(passes[k]) is not None and costs[passes[k]] <= cost
                 and screen[k]["accuracy"] >= screen[c]["accuracy"] and screen[k]["logme"] >= screen[c]["logme"]),
                None)


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
