"""`select_images`: the images of a stored dataset worth labelling first, written as the CSV the user fills in."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import StoreQuery
from ..errors import DataError, DatasetNotStoredError, ParameterError, SourceError
from ..store import DEFAULT_CACHE, find_dataset
from ..store.atomic import atomic_write
from ..store.view import VectorView
from .strategies import Picks, coverage, random_picks, typical, uncertain

STRATEGIES = ("auto", "typical", "coverage", "uncertain", "random")
# auto turns to uncertain picks once this many images per class are labelled: on digits, five rounds of 20 that
# turned at 2 a class reached 90.2 / 93.9 / 95.3 / 96.7% after 40-100 labels, against 88.4 / 90.7 / 93.8 / 95.9%
# turning at 5 (benchmarks/bench_select.py, docs/results/select.md)
UNCERTAIN_FROM_PER_CLASS = 2
# auto's cold start: typical while the budget leaves clusters of this many images or more on average, coverage
# beyond. On digits' 1,414 images typical picks won at 10 and 20 picks (141 and 71 images a pick: 86.7 / 89.1%
# against coverage's 77.8 / 81.2%) and coverage from 50 picks (28 a pick: 96.1 / 96.9 / 97.7 / 99.0% at 50 / 100 /
# 200 / 500 against 94.0 / 95.1 / 96.8 / 93.6%); on Fashion-MNIST's 60,000, typical at every budget up to 500 (120 a
# pick: 81.1 against 80.7%). 50 lies between the crossings (docs/results/select.md).
TYPICAL_CLUSTER = 50
COLUMNS = ("path", "label", "suggested_label", "score", "reason")


def cold_start(pool: int, picks: int) -> str:
    """auto's strategy before a head can be trusted, for a pool of ``pool`` images and ``picks`` picks and known
    labels: typical while that leaves TYPICAL_CLUSTER images or more a pick, coverage beyond."""
    return "typical" if pool >= TYPICAL_CLUSTER * picks else "coverage"


def auto_strategy(pool: int, picks: int, per_class: float, head_ready: bool, head_given: bool = False) -> str:
    """What ``strategy="auto"`` uses: uncertain once a head can be trusted (``head_ready``: one was given or can be
    fitted on known labels of two classes or more; given, or UNCERTAIN_FROM_PER_CLASS known labels a class), else
    ``cold_start``."""
    if head_ready and (head_given or per_class >= UNCERTAIN_FROM_PER_CLASS):
        return "uncertain"
    return cold_start(pool, picks)


@dataclass
class Known:
    """What is labelled already: stored keys and their labels (from the dataset or the excluded CSV)."""

    keys: list[str]
    labels: list[str]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))


def select_images(dataset: str, budget: int, *, cache: str | Path | None = None,
                  store_query: StoreQuery = StoreQuery(), use_layers: str | None = None, split: str | None = None,
                  exclude: str | Path | None = None, head: str | Path | None = None, strategy: str = "auto",
                  out: str | Path | None = "to-label.csv", seed: int = 0, data_dir: str | None = None,
                  progress=None) -> dict:
    """Choose ``budget`` images of ``dataset`` to label first (``choose_in_store``) and write them to ``out``: a CSV of
    ``path,label,suggested_label,score,reason`` to fill in and embed (every vector is reused).

    ``dataset`` is a stored dataset, or a folder, CSV or built-in not yet embedded: it is embedded first (as audit
    does), and ``report["embedded"]`` says so. ``exclude``: a CSV of images already labelled (a ``path`` or ``key``
    column, such as an earlier round's filled-in file): never chosen, and its ``label`` column counts as known.
    """
    check_choice(budget, strategy, seed)
    started = time.perf_counter()
    cache = cache or DEFAULT_CACHE
    embedded = None
    try:
        found = find_dataset(dataset, cache, store_query)
    except DatasetNotStoredError as missing:  # a folder, CSV or built-in named for the first time: embed it first
        from ..embed import embed_missing

        dataset, embedded = embed_missing(dataset, missing, cache, store_query, data_dir, progress)
        found = find_dataset(dataset, cache, store_query)
    with found as store:
        excluded, known = read_exclude(exclude, store.members(dataset)) if exclude else (set(), Known([], []))
        report = choose_in_store(store, dataset, budget, use_layers=use_layers, split=split, excluded=excluded,
                                 known=known, head=head, strategy=strategy, seed=seed)
    report["embedded"] = embedded
    report["seconds"] = round(time.perf_counter() - started, 3)
    if out:
        report["out"] = str(write_csv(report["picks"], out))
    return report


def check_choice(budget: int, strategy: str, seed: int = 0) -> None:
    if seed < 0:
        raise ParameterError("seed", f"must be 0 or more, not {seed}.")
    if strategy not in STRATEGIES:
        raise ParameterError("strategy", f"must be one of {', '.join(STRATEGIES)}, not {strategy!r}.")
    if budget < 1:
        raise ParameterError("budget", f"must be at least 1 image, not {budget}.")


def choose_in_store(store, dataset: str, budget: int, *, use_layers: str | None = None, split: str | None = None,
                    excluded: set[str] = frozenset(), known: Known | None = None, head: str | Path | None = None,
                    strategy: str = "auto", seed: int = 0) -> dict:
    """The ``budget`` images of a stored dataset worth labelling first: the report (``picks``, best first, each with
    its key, path, suggested label, score and reason; ``strategy``, ``pool``, ``known``, ``notes``).

    The pool is the dataset's unlabelled images (all of them when none is labelled: the labels are then hidden, as in
    a simulation), in ``split`` when given, less the ``excluded`` keys and those ``known`` labels. Strategies:
    ``typical`` (TypiClust), ``coverage`` (ProbCover), ``uncertain`` (a head's margins, made diverse; the head is
    ``head``, a saved bundle, or a logistic regression fitted on the known labels), ``random``; ``auto`` takes
    uncertain once UNCERTAIN_FROM_PER_CLASS images per class are known (or a head is given), before that typical while
    the pool holds TYPICAL_CLUSTER images or more per pick and label, coverage beyond.
    """
    check_choice(budget, strategy, seed)
    started = time.perf_counter()
    known = known or Known([], [])
    notes = []
    members = store.members(dataset)
    if split is not None:
        splits = sorted({m.split for m in members})
        if split not in splits:
            raise ParameterError("split", f"dataset {dataset!r} has no {split!r} split (splits: "
                                          f"{', '.join(splits) or 'none'}).")
    labelled = [m for m in members if m.label is not None]
    if labelled and len(labelled) < len(members):
        known = Known(known.keys + [m.key for m in labelled], known.labels + [m.label for m in labelled])
        candidates = [m for m in members if m.label is None]
    else:
        candidates = members
        if labelled:
            notes.append(f"every image of {dataset!r} is labelled: chose as if none were (the labels hidden)")
    first, taken = {}, set(excluded) | set(known.keys)
    for m in candidates:
        if (split is None or m.split == split) and m.key not in taken:
            first.setdefault(m.key, m)
    pool = list(first.values())
    if not pool:
        raise DataError(f"no image of {dataset!r} is left to choose from" + (f" in split {split!r}" if split else "")
                        + (" once the excluded ones are left out" if excluded else "") + ".")
    if budget > len(pool):
        raise ParameterError("budget", f"asks for {budget} images, but only {len(pool)} are left to choose from; "
                                       "ask for fewer.")
    view = VectorView(store, dataset, use_layers)
    keys = [m.key for m in pool]
    X = view.normalised(keys)
    labelled_X = view.normalised(known.keys) if known.keys else None
    used = strategy
    proba = classes = None
    if strategy in ("auto", "uncertain"):
        proba, classes = head_probabilities(store, view, keys, known, head, seed)
        if strategy == "uncertain" and proba is None:
            raise DataError("uncertain picks need a head: pass head=HEAD.npz (a saved head), or label images of at "
                            "least two classes first and pass them as exclude=LABELLED.csv with their labels.",
                            params=("head", "exclude"))
        if strategy == "auto":
            per_class = len(known.keys) / max(len(known.classes), 1)
            used = auto_strategy(len(pool), budget + len(known.keys), per_class, proba is not None, bool(head))
    if used == "typical":
        picks = typical(X, budget, labelled_X, seed)
    elif used == "coverage":
        picks = coverage(X, budget, labelled_X, seed)
    elif used == "uncertain":
        picks = uncertain(X, proba, classes, budget, seed)
    else:
        picks = random_picks(len(X), budget, seed)
    if picks.suggested is None and known.keys:
        picks.suggested = nearest_labels(X[picks.rows], labelled_X, known.labels)
    return {"dataset": dataset, "strategy": used, "strategy_asked": strategy, "budget": budget, "pool": len(pool),
            "known": len(known.keys), "classes_known": len(known.classes), "excluded": len(excluded),
            "split": split, "seed": seed, "notes": notes, "picks": pick_rows(picks, pool),
            "seconds": round(time.perf_counter() - started, 3)}


def read_exclude(path: str | Path, members) -> tuple[set[str], Known]:
    """The keys an exclude CSV names (by path, as the dataset's members are recorded, or by a ``key`` column) and
    the labels it gives them."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in (reader.fieldnames or [])]
            reader.fieldnames = fields
            rows = list(reader)
    except FileNotFoundError:
        raise SourceError(f"the exclude file {str(path)!r} does not exist.", params=("exclude",)) from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise SourceError(f"the exclude file {str(path)!r} is not a readable CSV ({e}).", params=("exclude",)) from None
    if "path" not in fields and "key" not in fields:
        raise SourceError(f"the exclude file {str(path)!r} has neither a 'path' nor a 'key' column (columns: "
                          f"{', '.join(fields) or 'none'}).", params=("exclude",))
    by_path = {m.path: m.key for m in members}
    base = path.resolve().parent
    excluded, known = set(), Known([], [])
    for row in rows:
        key = (row.get("key") or "").strip()
        if not key:
            given = (row.get("path") or "").strip()
            key = by_path.get(given) or by_path.get(str((base / given).resolve())) if given else None
        if not key:
            continue
        excluded.add(key)
        label = (row.get("label") or "").strip()
        if label:
            known.keys.append(key)
            known.labels.append(label)
    return excluded, known


def head_probabilities(store, view: VectorView, keys: list[str], known: Known, head, seed: int):
    """(probabilities, classes) of the pool from ``head`` (a saved bundle), else from a logistic regression fitted
    on the known labels; (None, None) without either (fewer than two classes known)."""
    if head:
        from ..heads.bundles import load_bundle

        bundle = load_bundle(head)
        bundle.check_config(store.config)
        X = bundle.features(store.vectors(keys))
        return bundle.head.predict_proba(X), np.asarray(bundle.classes)
    if len(known.classes) < 2:
        return None, None
    from ..heads import LogisticHead

    fitted = LogisticHead(C=1.0, layer_widths=view.layer_widths, random_state=seed)
    fitted.fit(view.vectors(known.keys), np.asarray(known.labels))
    return fitted.predict_proba(view.vectors(keys)), np.asarray(fitted.classes_).astype(str)


def nearest_labels(X: np.ndarray, labelled: np.ndarray, labels: list[str]) -> list[str]:
    """The label of each row's most similar labelled image."""
    return [labels[i] for i in np.argmax(X @ labelled.T, axis=1)]


def pick_rows(picks: Picks, pool) -> list[dict]:
    suggested = picks.suggested or [None] * len(picks.rows)
    return [{"key": pool[r].key, "path": pool[r].path, "split": pool[r].split, "suggested_label": s,
             "score": float(score), "reason": reason}
            for r, score, reason, s in zip(picks.rows.tolist(), picks.scores, picks.reasons, suggested)]


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """The chosen images as ``path,label,suggested_label,score,reason``, ``label`` left for the user, written whole."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    writer.writerows([(r["path"], "", r["suggested_label"] or "", f"{r['score']:.6g}", r["reason"]) for r in rows])
    with atomic_write(Path(path)) as f:
        f.write(buf.getvalue().encode())
    return Path(path)
