"""The rank sample (stratified, the same for every candidate) and the k-fold probe's interval."""

from __future__ import annotations

import numpy as np
import pytest

from featx.errors import DataError
from featx.rank import kfold_accuracy, stratified_sample


def _labels(counts: dict[str, int]) -> tuple[list[str], list[str]]:
    labels = [c for c, k in counts.items() for _ in range(k)]
    return [f"key-{i:05d}" for i in range(len(labels))], labels


def test_the_sample_is_stratified_and_keeps_small_classes():
    keys, labels = _labels({"a": 900, "b": 90, "c": 10})
    picked = stratified_sample(keys, labels, 200, min_per_class=8)
    got = {c: int(np.sum(np.asarray(labels)[picked] == c)) for c in "abc"}
    assert got == {"a": 180, "b": 18, "c": 8}
    assert len(set(picked.tolist())) == len(picked)


def test_the_sample_depends_on_content_not_order_and_takes_duplicates_once():
    keys, labels = _labels({"a": 300, "b": 300})
    chosen = {keys[i] for i in stratified_sample(keys, labels, 100)}
    order = np.random.default_rng(1).permutation(len(keys))
    shuffled_keys, shuffled_labels = [keys[i] for i in order], [labels[i] for i in order]
    assert {shuffled_keys[i] for i in stratified_sample(shuffled_keys, shuffled_labels, 100)} == chosen
    assert {keys[i] for i in stratified_sample(keys, labels, 100, seed=1)} != chosen
    doubled = stratified_sample(keys + keys[:50], labels + labels[:50], 100)
    assert {keys[i] if i < len(keys) else keys[i - len(keys)] for i in doubled} == chosen


def test_classes_with_too_few_images_are_named():
    keys, labels = _labels({"cat": 50, "rare": 2})
    with pytest.raises(DataError, match="'rare' \\(2\\)"):
        stratified_sample(keys, labels, 40, min_per_class=5)


def test_the_kfold_interval_contains_the_accuracy_of_a_head_trained_on_everything():
    from featx.heads import LogisticHead

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=1.2, size=(3, 5))

    def draw(n):
        y = rng.integers(0, 3, size=n)
        return (centres[y] + rng.normal(size=(n, 5))).astype(np.float32), y.astype(str)

    X, y = draw(600)
    score = kfold_accuracy(X, y, folds=5)
    Xbig, ybig = draw(20000)
    Xtest, ytest = draw(20000)
    truth = float(np.mean(LogisticHead().fit(Xbig, ybig).predict(Xtest) == ytest))
    assert score.low <= truth <= score.high
    assert score.low < score.accuracy < score.high and len(score.folds) == 5
    assert score.high - score.low < 0.1
    chance = kfold_accuracy(rng.normal(size=(600, 5)).astype(np.float32), y, folds=5)
    assert chance.high < score.low  # features unrelated to the labels score clearly lower


def test_the_probe_sees_no_fold_s_answers_before_predicting_it():
    """Labels that features cannot explain score at chance out of fold: no fold's head may start from, or
    be tuned on, a solution that saw the rows it predicts (a warm start across folds scored 0.99 here)."""
    from featx.rank.probe import kfold_accuracy

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 400)).astype(np.float32)  # more features than rows: easy to memorise
    y = rng.integers(0, 4, 300).astype(str)
    score = kfold_accuracy(X, y, folds=5)
    assert score.accuracy < 0.4, score.accuracy
