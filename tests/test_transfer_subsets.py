"""Splits, K-shot subsets and validation carve-outs: deterministic, stratified, and refused when impossible."""

from __future__ import annotations

import numpy as np
import pytest

from featx.data import hash_source
from featx.errors import FeatxError
from featx.data.builtins import load_digits_source
from featx.data.sources import ArraySource, CsvSource, Item, split_from_key
from featx.transfer.subsets import carve_validation, check_shots, draw_shots, labelled_splits


@pytest.fixture(scope="module")
def digits():
    source = load_digits_source()
    keys, _ = hash_source(source)
    return source, keys, labelled_splits(source, keys)


def test_splits_are_the_ones_the_store_records(digits):
    source, keys, splits = digits
    assert len(splits["train"]) + len(splits["test"]) == len(source.items)
    for split, part in splits.items():
        assert all(split_from_key(k) == split for k in part.keys)
        assert all(source.items[i].label == label for i, label in zip(part.indices, part.labels))


def test_shots_give_each_class_k_and_repeat_with_the_seed(digits):
    _, _, splits = digits
    subset = draw_shots(splits["train"], 5, seed=1)
    assert subset.class_counts() == {str(c): 5 for c in range(10)}
    assert draw_shots(splits["train"], 5, seed=1).keys == subset.keys
    assert draw_shots(splits["train"], 5, seed=2).keys != subset.keys
    assert set(subset.keys) <= set(splits["train"].keys)


def test_shots_do_not_depend_on_the_order_items_are_listed(digits):
    source, keys, splits = digits
    order = np.random.default_rng(0).permutation(len(source.items))
    shuffled = ArraySource("digits", "shuffled", source.images[order], [source.items[i] for i in order])
    again = labelled_splits(shuffled, [keys[i] for i in order])
    assert draw_shots(again["train"], 3, seed=0).fingerprint() == draw_shots(splits["train"], 3, seed=0).fingerprint()


def test_more_shots_than_the_smallest_class_is_refused_with_the_fix(digits):
    _, _, splits = digits
    smallest = min(splits["train"].class_counts().items(), key=lambda kv: kv[1])
    with pytest.raises(FeatxError, match=rf"smallest class has: '{smallest[0]}' has {smallest[1]} training.*"
                                         rf"shots={smallest[1]} or fewer"):
        check_shots(splits["train"], smallest[1] + 1)
    with pytest.raises(FeatxError, match="at least 1"):
        check_shots(splits["train"], 0)


def test_validation_is_carved_per_class_without_overlap(digits):
    _, _, splits = digits
    train = draw_shots(splits["train"], 10, seed=0)
    fit, val = carve_validation(train, 0.2, seed=0)
    assert len(fit) + len(val) == len(train)
    assert not set(fit.keys) & set(val.keys)
    assert val.class_counts() == {str(c): 2 for c in range(10)}
    one_shot = draw_shots(splits["train"], 1, seed=0)
    assert carve_validation(one_shot)[1] is None  # holding out a class's only image would leave it unlearnable


def test_unlabelled_data_and_a_missing_test_split_are_refused(tmp_path):
    source = ArraySource("blank", "blank", np.zeros((4, 8, 8), np.uint8), [Item(f"b:{i}") for i in range(4)])
    with pytest.raises(FeatxError, match="has no labels"):
        labelled_splits(source, ["a", "b", "c", "d"])
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,label,split\na.png,x,train\na.png,y,train\n")
    only_train = CsvSource(tmp_path / "m.csv")
    with pytest.raises(FeatxError, match="no labelled test split"):
        labelled_splits(only_train, ["k1", "k2"])
