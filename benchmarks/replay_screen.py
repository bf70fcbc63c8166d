"""How safe are rank's rounds? Replay them with other seeds on the vectors of a validated rank.

Reads the report of a ``featx rank DATASET --validate`` (every candidate scored on the whole sample
and tested) and the cache it embedded into; for each seed and each (contenders, finalists) setting,
draws each round's images from the sample as ``rank_candidates`` does, scores the survivors there
(k-fold probe and LogME, from the stored vectors: nothing is embedded), keeps the best as rank would,
and says whether the finalists include the candidate the full grid ranks first (probe) and the best
on the test split, and what the rounds cost in forward passes (images × the group's seconds per image).
Needs the same --sample the rank used.

    .venv/bin/featx rank digits --validate --cache /tmp/rk
    .venv/bin/python benchmarks/replay_screen.py digits /tmp/rk --settings 8:8 4:4 --dominance both
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from featx.data import hash_source, open_source
from featx.hardware import set_threads
from featx.rank.candidates import Candidate
from featx.rank.choice import choose_contenders, compare_to_best, forward_passes, pass_costs, recommend
from featx.rank.groups import create_model, score_candidate
from featx.rank.settings import RankSettings, screen_rounds
from featx.rank.sample import stratified_sample
from featx.store import open_store
from featx.transfer.subsets import labelled_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("cache", type=Path)
    parser.add_argument("--report", type=Path, help="report.json [default: CACHE/rank/DATASET/report.json]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--screen", type=int, default=256)
    parser.add_argument("--settings", nargs="+", default=["8:8", "8:4"],
                        help="CONTENDERS:FINALISTS pairs (forward passes) to replay (8:8 is one round: the screen alone)")
    parser.add_argument("--dominance", choices=("on", "off", "both"), default="both",
                        help="pass over dominated candidates (a cheaper kept one scored as well by both), as rank does")
    args = parser.parse_args()
    set_threads()
    report = json.loads((args.report or args.cache / "rank" / args.dataset / "report.json").read_text())
    rows = {r["id"]: r for r in report["rows"] if r["status"] == "ok" and r.get("test_accuracy") is not None}
    probe_best = max(rows.values(), key=lambda r: r["accuracy"])["id"]
    test_best = max(rows.values(), key=lambda r: r["test_accuracy"])["id"]
    base = {k: v for k, v in report["settings"].items() if k in RankSettings.__dataclass_fields__}
    source = open_source(args.dataset)
    keys, _ = hash_source(source, None)
    train = labelled_splits(source, keys, args.dataset)["train"]
    candidates = {cid: Candidate(r["backbone"], r["size"], r["crop"], r["layers"], r["precision"])
                  for cid, r in rows.items()}
    passes = forward_passes(list(candidates.values()))
    passes = {cid: passes[c.id] for cid, c in candidates.items()}
    groups = {c.group for c in candidates.values()}
    recipe = {p[:4]: p[4] for p in passes.values()}  # the group's forward pass reads this recipe
    # seconds per image of each group's forward pass, as rank measured it on the sample
    per_image = {g: 1.0 / next(rows[cid]["images_per_second"] for cid, c in candidates.items() if c.group == g)
                 for g in groups}
    costs = pass_costs(passes, report)  # rank's own estimate, so the replay chooses as rank would
    vectors = {}
    print(f"full grid's first: {probe_best}; best on the test split: {test_best}")
    for seed in args.seeds:
        settings = RankSettings(**{**base, "seed": seed, "screen": args.screen})
        sample = train.take(stratified_sample(train.keys, train.labels, settings.sample,
                                              min_per_class=settings.folds, seed=seed))
        y = sample.labels.astype(str)
        for g in groups:
            config = create_model(g, recipe[g], {}).config  # the group's store holds its recipe's columns
            with open_store(config, args.cache) as store:
                vectors[g] = (config, store.vectors(list(sample.keys)))
        dominance = {"on": [True], "off": [False], "both": [False, True]}[args.dominance]
        for pair, dominated in ((p, d) for p in args.settings for d in dominance):
            contenders, finalists = map(int, pair.split(":"))
            s = RankSettings(**{**asdict(settings), "contenders": contenders, "finalists": finalists})
            alive, where, cost, seen = list(rows), None, 0.0, {g: 0 for g in groups}
            for images, keep in screen_rounds(len(sample), s):
                picked = stratified_sample(sample.keys, sample.labels, images, min_per_class=s.folds, seed=seed)
                where = picked if where is None else np.union1d(picked, where)
                scores = {}
                for cid in alive:
                    config, X = vectors[candidates[cid].group]
                    scores[cid] = score_candidate(candidates[cid], config, X[where], y[where], s)
                for g in {candidates[c].group for c in alive}:
                    cost += (len(where) - seen[g]) * per_image[g]
                    seen[g] = len(where)
                alive = choose_contenders(scores, keep, passes, costs if dominated else None)
            for g in {candidates[c].group for c in alive}:
                cost += (len(sample) - seen[g]) * per_image[g]
            best_kept = max(rows[c]["test_accuracy"] for c in alive)
            # the recommendation among the finalists, from their scores on the whole (validated) sample
            finalists_rows = [dict(rows[c]) for c in alive]
            compare_to_best(finalists_rows, report["sample"]["n"])
            pick = rows[recommend(finalists_rows)["id"]]
            regret = 100 * (rows[test_best]["test_accuracy"] - pick["test_accuracy"])
            print(f"seed {seed}, {contenders}:{finalists}{' dominance' if dominated else ''}: first kept {probe_best in alive}, test-best kept "
                  f"{test_best in alive}, best test accuracy kept {best_kept:.2%}, recommends {pick['id']} "
                  f"(regret {regret:.2f} points), forward passes {cost:.0f} s", flush=True)


if __name__ == "__main__":
    main()
