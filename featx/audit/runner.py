"""`audit_dataset`: label issues, leaks and outliers of one embedded dataset, and the report they make."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from ..config import FINAL, StoreQuery
from ..errors import DataError, DatasetNotStoredError, ParameterError
from ..hardware import Progress
from ..store import DEFAULT_CACHE, find_dataset
from ..store.atomic import atomic_write
from ..store.paths import audit_dir
from ..store.view import VectorView
from .confident import RANKINGS, confused_pairs, find_label_issues, neighbour_agreement
from .leaks import LEAK_THRESHOLD, find_leaks
from .oof import out_of_fold_probabilities
from .outliers import find_outliers, nearest_neighbours
from .report import write_report

REPORT_FORMAT = "featx-audit-1"
# Confident learning's flags are kept when fewer than this share of an image's nearest neighbours carry its
# label: on 5% mixed and 8% partner-class flips, precision 0.58 → 0.62 and 0.61 → 0.67 on Fashion-MNIST,
# 0.81 → 0.85 and 0.74 → 0.82 on digits, recall within 0.02 (README "Does audit find wrong labels?").
NEIGHBOUR_AGREEMENT = 0.5
# Up to this, the distinct vectors are normalised into one copy, read fastest; past it (1M × 1,792 would take
# 7.2 GB) every stage reads them from the store's memory maps, normalising each block it reads (StoredRows).
COPY_BYTES = 1 << 30


def audit_dataset(
    dataset: str,
    *,
    cache: str | Path | None = None,
    store_query: StoreQuery = StoreQuery(),
    use_layers: str | None = None,
    folds: int = 5,
    head: str = "logreg",
    ranking: str = "self_confidence",
    leak_threshold: float = LEAK_THRESHOLD,
    k: int = 5,
    neighbours: int = 10,
    top_outliers: int = 100,
    out: str | Path | None = None,
    export: str | Path | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict:
    """Audit an embedded, labelled dataset; write report.json, report.md and a contact sheet (report.png).

    Parameters
    ----------
    dataset : its name in the store; ``store_query`` picks the store when several hold it (``find_dataset``). When no
        store holds it and it names a source (a folder, a CSV manifest, a built-in), that source is embedded
        first with the default recipe (or the settings ``store_query`` gives), and ``report["embedded"]`` says so.
    use_layers : audit with some of the store's layers only [default: all, each normalised on its own].
    folds, head : the out-of-fold probabilities: K folds (fewer, with a note, when a class is smaller), head.
    ranking : how label issues are ordered: ``self_confidence`` (p of the given label) or ``normalized_margin``.
    leak_threshold : cosine similarity from which a test/val image and a training image count as near-twins.
    k : outliers are ranked by the distance to their k-th nearest neighbour; ``top_outliers`` are listed.
    neighbours : a flagged label stands only when fewer than NEIGHBOUR_AGREEMENT of the image's
        ``neighbours`` nearest labelled images share it (0: confident learning's flags alone).
    out : report folder [default: ``<cache>/audit/<dataset>``]. Nothing in the store changes.
    export : also write a CSV manifest of the dataset with a ``suggested_label`` column (``export_csv``).

    Returns the report: ``label_issues`` (worst first), ``noise_rate``, ``confused_pairs``, ``leaks``,
    ``outliers``, ``seconds``, and ``summary``.
    """
    if ranking not in RANKINGS:
        raise ParameterError("ranking", f"must be one of {', '.join(RANKINGS)}, not {ranking!r}.")
    if neighbours < 0:
        raise ParameterError("neighbours", f"must be 0 (no neighbour check) or more, not {neighbours}.")
    cache = cache or DEFAULT_CACHE
    embedded = None
    try:
        found = find_dataset(dataset, cache, store_query)
    except DatasetNotStoredError as missing:
        from ..embed import embed_missing

        dataset, embedded = embed_missing(dataset, missing, cache, store_query, data_dir, progress)
        found = find_dataset(dataset, cache, store_query)
    with found as store:
        members = store.members(dataset)
        view = VectorView(store, dataset, use_layers)
        unique = list(dict.fromkeys(m.key for m in members))
        if 4 * len(unique) * view.dim > COPY_BYTES:  # read where they lie: each stage below reads X by rows
            X = view.rows(unique)
            # the heads read the rows as stored and normalise them layer by layer themselves, as they do the copy's
            fold_X, fold_widths = view.rows(unique, normalised=False), view.layer_widths
        else:
            X = view.normalised(unique)
            fold_X, fold_widths = X, None
        config = store.config
        if not members:
            raise DataError(f"dataset {dataset!r} has no images.")
        row_of = {key: r for r, key in enumerate(unique)}
        rows = np.array([row_of[m.key] for m in members])
        keys, paths = [m.key for m in members], [m.path for m in members]
        labels, splits = [m.label for m in members], [m.split for m in members]
        labelled = np.array([i for i, label in enumerate(labels) if label is not None])
        if len(labelled) == 0:
            raise DataError(f"dataset {dataset!r} has no labels to audit; embed a folder with class sub-folders or a "
                            "CSV with a label column.")
        seconds = {}
        started = time.perf_counter()
        given_text = np.array([labels[i] for i in labelled], dtype=str)
        # the folds read the distinct vectors through the labelled members' rows: no copy of the collection per member
        oof = out_of_fold_probabilities(fold_X, given_text, folds=folds, head=head, seed=seed, rows=rows[labelled],
                                        layer_widths=fold_widths,
                                        groups=[keys[i] for i in labelled], progress=progress)
        seconds["folds"] = time.perf_counter() - started

        started = time.perf_counter()
        # one neighbour search serves the outliers and the labels' neighbour check
        near = nearest_neighbours(X, min(len(X), max(k, neighbours) + 1))
        seconds["neighbours"] = time.perf_counter() - started
        started = time.perf_counter()
        given = np.searchsorted(oof.classes, given_text)
        issues = find_label_issues(oof.proba, given, ranking)
        agreement = np.ones(len(labelled))
        if neighbours:
            # an image's neighbours among the labelled ones (a distinct image stands for its first labelled copy)
            first_labelled = np.full(len(X), -1)
            distinct, first = np.unique(rows[labelled], return_index=True)
            first_labelled[distinct] = first
            agreement = neighbour_agreement(first_labelled[near[1][rows[labelled]]][:, :neighbours + 1], given)
        flagged = [r for r in issues.rows if not neighbours or agreement[r] < NEIGHBOUR_AGREEMENT]
        label_issues = []
        for r in flagged:
            i = int(labelled[r])
            s = int(issues.suggested[r])
            label_issues.append({"key": keys[i], "path": paths[i], "split": splits[i], "given": labels[i],
                                 "suggested": str(oof.classes[s]), "quality": round(float(issues.quality[r]), 5),
                                 "p_given": round(float(oof.proba[r, given[r]]), 5),
                                 "p_suggested": round(float(oof.proba[r, s]), 5),
                                 "neighbours_agreeing": round(float(agreement[r]), 3)})
        seconds["ranking"] = time.perf_counter() - started

        started = time.perf_counter()
        leaks = find_leaks(X, keys, splits, labels, paths, leak_threshold, rows=rows)
        seconds["leaks"] = time.perf_counter() - started
        started = time.perf_counter()
        distance, z = find_outliers(X, k, near)
        first = {}
        for i, m in enumerate(members):
            first.setdefault(m.key, i)
        order = np.argsort(-distance, kind="stable")[:top_outliers]
        outliers = [{"key": unique[r], "path": paths[first[unique[r]]], "label": labels[first[unique[r]]],
                     "split": splits[first[unique[r]]], "distance": round(float(distance[r]), 5),
                     "z": round(float(z[r]), 2)} for r in order]
        seconds["outliers"] = time.perf_counter() - started

        kinds = [f["kind"] for f in leaks]
        report = {
            "format": REPORT_FORMAT, "dataset": dataset, "store": str(store.path), "backbone": config.describe(),
            "layers": list(view.selection.layers),
            "settings": {"folds": oof.folds, "folds_asked": folds, "head": head, "ranking": ranking,
                         "leak_threshold": leak_threshold, "k": k, "neighbours": neighbours, "seed": seed},
            "note": oof.note,
            "recipe_note": recipe_note(dataset, config, use_layers),
            "embedded": embedded,
            "summary": {"images": len(members), "labelled": len(labelled), "distinct": len(unique),
                        "classes": len(oof.classes), "label_issues": len(label_issues),
                        "exact_leaks": kinds.count("exact_leak"), "near_leaks": kinds.count("near_leak"),
                        "conflicting_labels": kinds.count("conflicting_labels"),
                        "outliers_z_over_5": int(np.sum(z > 5))},
            "noise_rate": {str(c): round(float(v), 5) for c, v in zip(oof.classes, issues.noise_rate)},
            "confused_pairs": confused_pairs(issues, oof.classes),
            "label_issues": label_issues, "leaks": leaks, "outliers": outliers,
            "seconds": {k_: round(v, 3) for k_, v in seconds.items()},
        }
        out = Path(out) if out else audit_dir(cache, dataset)
        out.mkdir(parents=True, exist_ok=True)
        write_report(report, out, data_dir=data_dir)
        report["out"] = str(out)
        if export:
            report["export"] = str(export_csv(report, members, export))
        return report


def recipe_note(dataset: str, config, use_layers: str | None) -> str | None:
    """A sentence when the store holds the final layer only: the default recipe audits better (README)."""
    if use_layers is not None or config.layers != (FINAL,):
        return None
    return (f"{dataset!r} is stored with the final layer only; every stage over a 2×2 grid flags wrong labels more "
            "precisely (flipped digits: precision 0.62 -> 0.93 at a higher recall; README \"Recipes\"): embed it again "
            "with layers=grid, the default, and audit that store.")


def export_csv(report: dict, members, path: str | Path) -> Path:
    """A manifest of every member (path, label, split) with ``suggested_label`` where the audit flagged one.

    Edit the label column and embed the manifest with ``featx embed FILE.csv``: the content keys are
    unchanged, so nothing is embedded again.
    """
    suggested = {f["key"]: f["suggested"] for f in report["label_issues"]}
    with atomic_write(Path(path)) as f:
        text = _csv_text([(m.path, m.label or "", m.split or "", suggested.get(m.key, "")) for m in members])
        f.write(text.encode())
    return Path(path)


def _csv_text(rows) -> str:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "label", "split", "suggested_label"])
    writer.writerows(rows)
    return buf.getvalue()
