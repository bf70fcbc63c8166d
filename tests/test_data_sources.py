"""Sources: folders, manifests and built-ins yield the right items, labels and splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featx.errors import SourceError
from featx.data.builtins import FASHION_MNIST_DIR, load_digits_source, load_fashion_mnist_source
from featx.data.hashing import content_hash
from featx.data.open import open_source
from featx.data.sources import split_from_key

from conftest import noisy_image, run_cli, write_class_folder


def test_class_subfolders_give_labels(tmp_path):
    root = write_class_folder(tmp_path / "pets", per_class=3)
    (root / "notes.txt").write_text("ignored: not an image extension")
    (root / ".hidden.png").write_bytes(b"ignored: hidden")
    src = open_source(str(root))
    assert src.name == "pets" and len(src.items) == 6
    assert sorted({i.label for i in src.items}) == ["blue", "red"]
    assert all(i.split is None and Path(i.path).is_absolute() for i in src.items)


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        noisy_image((1, 2, 3), i).save(tmp_path / f"{i}.jpg")
    src = open_source(str(tmp_path), name="flat")
    assert src.name == "flat" and not src.labelled and len(src.items) == 3


def test_split_folders_give_splits(tmp_path):
    write_class_folder(tmp_path / "ds" / "train", per_class=2)
    write_class_folder(tmp_path / "ds" / "test", per_class=1)
    src = open_source(str(tmp_path / "ds"))
    assert sorted((i.split, i.label) for i in src.items) == [
        ("test", "blue"), ("test", "red"), ("train", "blue"), ("train", "blue"), ("train", "red"), ("train", "red")]


def test_csv_manifest_paths_are_relative_to_the_csv(tmp_path):
    write_class_folder(tmp_path / "imgs", per_class=1)
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label,split\nimgs/red/0.png,warm,train\nimgs/blue/0.png,cold,TEST\n")
    src = open_source(str(manifest))
    assert src.name == "list"
    assert [(Path(i.path).name, i.label, i.split) for i in src.items] == [("0.png", "warm", "train"),
                                                                          ("0.png", "cold", "test")]
    assert src.read(0) == (tmp_path / "imgs/red/0.png").read_bytes()


@pytest.mark.parametrize(
    "text,message",
    [
        ("file,label\na.png,x\n", "no 'path' column"),
        ("path,label\n", "lists no images"),
        ("path,split\na.png,holdout\n", "unknown split 'holdout'"),
    ],
)
def test_bad_manifests_are_named(tmp_path, text, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(SourceError, match=message):
        open_source(str(manifest))


def test_missing_or_empty_sources_say_what_to_pass(tmp_path):
    with pytest.raises(SourceError, match="not found: pass a folder"):
        open_source(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images found"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SourceError, match="not a .csv manifest"):
        open_source(str(tmp_path / "x.txt"))


def test_digits_builtin():
    src = load_digits_source()
    assert len(src.items) == 1797 and src.labelled
    assert src.read(0).dtype == np.uint8 and src.read(0).shape == (8, 8) and src.read(0).max() <= 255
    assert content_hash(src.read(0)) == src.content_hash(0) != src.content_hash(1)


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_builtin_has_its_own_split():
    src = load_fashion_mnist_source()
    splits = [i.split for i in src.items]
    assert splits.count("train") == 60000 and splits.count("test") == 10000
    assert src.read(0).shape == (28, 28) and src.items[0].label == "Ankle boot"


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    # The library names its parameter; the command line names its flag.
    with pytest.raises(SourceError, match="apt-get install dataset-fashion-mnist.*as data_dir"):
        load_fashion_mnist_source(tmp_path)
    result = run_cli("embed", "fashion-mnist", "--data-dir", tmp_path, ok=False)
    assert result.exit_code == 1 and "apt-get install dataset-fashion-mnist" in result.output
    assert "as --data-dir" in result.output and "data_dir" not in result.output


def test_hash_split_is_deterministic_and_near_80_20():
    keys = [content_hash(np.array([i], dtype=np.int64)) for i in range(5000)]
    splits = [split_from_key(k) for k in keys]
    assert splits == [split_from_key(k) for k in keys]
    assert 0.17 < splits.count("test") / len(splits) < 0.23


@pytest.mark.parametrize("body, message", [
    ("a.png,cat,train,extra\n", "4 fields, but the header has 3"),
    ("a.png\n", "1 fields, but the header has 3"),
    ("a.png,\"" + "x" * 200_000 + "\",train\n", "near line 2: field larger than field limit"),
])
def test_a_malformed_manifest_row_is_named_not_accepted_or_a_traceback(tmp_path, body, message):
    from featx.data import open_source

    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\n" + body)
    with pytest.raises(SourceError, match=message):
        open_source(str(manifest))
