"""How safe is rank's screen? Replay it with other seeds on the vectors of a validated rank.

Reads the report of a ``featx rank DATASET --validate`` (every candidate scored on the whole sample
and tested) and the cache it embedded into; for each seed, draws the screen's images from the sample
as ``rank_candidates`` does, scores every candidate there (k-fold probe and LogME, from the stored
vectors: nothing is embedded) and says whether the contenders kept would include the candidate the
full grid ranks first (probe) and the best on the test split. Needs the same --sample the rank used.

    .venv/bin/featx rank digits --validate --cache /tmp/rk
    .venv/bin/python benchmarks/replay_screen.py digits /tmp/rk --contenders 6 8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from featx.data import hash_source, open_source
from featx.hardware import set_threads
from featx.rank.candidates import Candidate
from featx.rank.runner import RankSettings, _create, _score, choose_contenders
from featx.rank.sample import stratified_sample
from featx.store import open_store
from featx.transfer.subsets import labeled_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("cache", type=Path)
    parser.add_argument("--report", type=Path, help="report.json [default: CACHE/rank/DATASET/report.json]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--screen", type=int, default=256)
    parser.add_argument("--contenders", type=int, nargs="+", default=[6, 8])
    args = parser.parse_args()
    set_threads()
    report = json.loads((args.report or args.cache / "rank" / args.dataset / "report.json").read_text())
    rows = {r["id"]: r for r in report["rows"] if r["status"] == "ok" and r.get("test_accuracy") is not None}
    probe_best = max(rows.values(), key=lambda r: r["accuracy"])["id"]
    test_best = max(rows.values(), key=lambda r: r["test_accuracy"])["id"]
    settings = RankSettings(**report["settings"])
    source = open_source(args.dataset)
    keys, _ = hash_source(source, None)
    train = labeled_splits(source, keys, args.dataset)["train"]
    print(f"full grid's first: {probe_best}; best on the test split: {test_best}")
    for seed in args.seeds:
        sample = train.take(stratified_sample(train.keys, train.labels, settings.sample,
                                              min_per_class=settings.folds, seed=seed))
        screen = stratified_sample(sample.keys, sample.labels, args.screen, min_per_class=settings.folds, seed=seed)
        screen_keys = [sample.keys[i] for i in screen]
        scores = {}
        for cid, r in rows.items():
            c = Candidate(r["backbone"], r["size"], r["crop"], r["layers"], r["precision"])
            config = _create(c.group, "stages", {}).config  # the group's store holds the stages' columns
            with open_store(config, args.cache) as store:
                X = store.vectors(screen_keys)
            scores[cid] = _score(c, config, X, sample.labels.astype(str)[screen], settings)
        for n in args.contenders:
            kept = choose_contenders(scores, n)
            best_kept = max(rows[c]["test_accuracy"] for c in kept)
            print(f"seed {seed}, {n} contenders: first kept {probe_best in kept}, test-best kept {test_best in kept}, "
                  f"best test accuracy kept {best_kept:.2%}", flush=True)


if __name__ == "__main__":
    main()
