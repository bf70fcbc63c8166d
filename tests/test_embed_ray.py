"""`featx embed --engine ray` on a local Ray instance with 2 CPUs: same store format, same vectors, resumable."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from featx.errors import FeatxError
from featx.store import list_stores

from conftest import run_cli, write_bad_files, write_class_folder

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'featx[ray]'")

TINY = 32


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()


def vectors_by_key(cache, dataset):
    (store,) = list_stores(cache)
    with store:
        X, _, keys, _ = store.load(dataset)
        return dict(zip(keys, np.asarray(X))), store.datasets(dataset)[0]


def test_ray_and_local_engines_write_the_same_store(tmp_path, local_ray):
    data = write_class_folder(tmp_path / "data", per_class=6)
    bad = write_bad_files(data / "red")
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_cli("embed", data, "--image-size", TINY, "--workers", 0, "--cache", local)
    out = run_cli("embed", data, "--image-size", TINY, "--engine", "ray", "--workers", 2, "--cache", remote,
                  "--json")
    result = json.loads(out.stdout)
    assert result["n_embedded"] == 12 and result["n_failed"] == len(bad)
    assert {f["path"].rsplit("/", 1)[-1] for f in result["failures"]} == set(bad)

    a, info_a = vectors_by_key(local, "data")
    b, info_b = vectors_by_key(remote, "data")
    assert a.keys() == b.keys() and info_a.splits == info_b.splits and info_a.n_failed == info_b.n_failed
    for key in a:  # bf16 forward passes in batches of other sizes: equal within bf16's precision
        cos = float(a[key] @ b[key] / np.linalg.norm(a[key]) / np.linalg.norm(b[key]))
        assert cos > 0.999, key
    # Same configuration, same store key: the directories are named alike under both caches.
    assert [s.path.name for s in list_stores(local)] == [s.path.name for s in list_stores(remote)]

    # A rerun finds everything in the store and embeds nothing.
    again = json.loads(run_cli("embed", data, "--image-size", TINY, "--engine", "ray", "--cache", remote,
                               "--json").stdout)
    assert again["n_embedded"] == 0 and again["n_reused"] == 12


def test_ray_engine_on_a_builtin_dataset_trains_like_local(tmp_path, local_ray):
    run_cli("embed", "digits", "--image-size", TINY, "--engine", "ray", "--cache", tmp_path)
    trained = json.loads(run_cli("train", "digits", "--cache", tmp_path, "--json").stdout)
    assert trained["n_train"] + trained["n_test"] == 1797 and trained["accuracy"] > 0.8


def test_without_ray_the_error_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    from featx.embed.ray_engine import _import_ray

    with pytest.raises(FeatxError, match=r"pip install 'featx\[ray\]'"):
        _import_ray()
    result = run_cli("embed", "digits", "--image-size", TINY, "--engine", "ray", "--cache", tmp_path, ok=False)
    assert result.exit_code == 1 and "featx[ray]" in result.output


def test_ray_options_without_the_ray_engine_are_refused(tmp_path):
    result = run_cli("embed", "digits", "--address", "127.0.0.1:6379", "--cache", tmp_path, ok=False)
    # refused by the library, as every other bad setting is (exit 1), and said in the CLI's words
    assert result.exit_code == 1 and "--address goes with --engine ray" in result.output


def test_the_library_refuses_an_address_without_the_ray_engine_too(tmp_path):
    from featx.data import open_source
    from featx.embed.runner import embed_into_store
    from featx.errors import ParameterError

    with pytest.raises(ParameterError, match="address goes with engine=ray") as e:
        embed_into_store(open_source("digits"), address="127.0.0.1:6379", cache=tmp_path)
    assert e.value.params == ("address", "engine")
