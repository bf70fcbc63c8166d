"""Runtimes: every runtime agrees with torch fp32, auto measures once and falls back, int8 is a store of its own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from featx.config import Recipe
from featx.errors import BackboneError, ParameterError
from featx.runtimes import AGREEMENT, load_runtime, runtime_for
from featx.runtimes.openvino_runtime import openvino_available

from conftest import SMALL, noisy_image, run_cli, write_class_folder

# not pytest.importorskip("openvino"): imported here, it would keep its telemetry (featx imports it without)
pytestmark = pytest.mark.skipif(not openvino_available(), reason="the openvino extra is not installed")


def photo_crops(size: int, n: int = 16) -> np.ndarray:
    """Crops of scikit-learn's two sample photos, as the decoders would give them."""
    from sklearn.datasets import load_sample_images
    from PIL import Image

    rng = np.random.default_rng(0)
    crops = []
    for i in range(n):
        photo = load_sample_images().images[i % 2]
        h, w, _ = photo.shape
        s = int(rng.integers(h // 3, h))
        y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        img = Image.fromarray(photo[y:y + s, x:x + s]).resize((size, size), Image.Resampling.BICUBIC)
        crops.append(np.asarray(img).transpose(2, 0, 1))
    return np.stack(crops)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("size", [224, SMALL])
def test_every_runtime_and_precision_agrees_with_torch_fp32_within_its_tolerance(tmp_path, size):
    crops = photo_crops(size)
    reference = load_runtime(Recipe(image_size=size, precision="fp32", layers="final"), runtime="torch", cache=tmp_path)(crops)
    for runtime in ("torch", "openvino"):
        for precision in ("fp32", "bf16"):
            model = load_runtime(Recipe(image_size=size, precision=precision, layers="final"), runtime=runtime, cache=tmp_path)
            assert model.name == runtime and model.config.precision == precision
            agree = cosines(model(crops), reference)
            worst, mean = AGREEMENT[precision]
            assert agree.min() >= worst and agree.mean() >= mean, (runtime, precision, agree.min(), agree.mean())
    # the tolerance can fail: a different image size is not the same model's vectors
    other = load_runtime(Recipe(image_size=size + 32, precision="fp32", layers="final"), runtime="openvino",
                         cache=tmp_path)
    assert cosines(other(photo_crops(size + 32)), reference).mean() < AGREEMENT["bf16"][1]


def test_openvino_and_torch_share_a_store_and_its_vectors(tmp_path, cache):
    folder = write_class_folder(tmp_path / "colours", per_class=4)
    args = ("embed", folder, "--image-size", SMALL, "--workers", 0, "--precision", "fp32", "--json")
    by_torch = json.loads(run_cli(*args, "--runtime", "torch").stdout)
    assert by_torch["runtime"]["runtime"] == "torch" and by_torch["runtime"]["how"] == "asked"
    cache2 = tmp_path / "other-cache"
    by_openvino = json.loads(run_cli(*args, "--runtime", "openvino", "--cache", cache2).stdout)
    assert by_openvino["runtime"]["runtime"] == "openvino" and by_openvino["n_embedded"] == 8
    assert by_openvino["store"].rsplit("/", 1)[1] == by_torch["store"].rsplit("/", 1)[1]  # one key
    from featx.store import FeatureStore

    Xt, *_ = FeatureStore(by_torch["store"]).load("colours")
    Xo, *_ = FeatureStore(by_openvino["store"]).load("colours")
    assert cosines(Xt, Xo).min() >= AGREEMENT["fp32"][0]


@pytest.mark.own_runtime_files
def test_auto_measures_once_remembers_and_says_which(tmp_path):
    first = load_runtime(Recipe(image_size=SMALL, layers="final"), cache=tmp_path, batch_size=8)
    assert first.choice.how == "measured" and set(first.choice.images_per_second) == {"torch", "openvino"}
    assert first.choice.runtime == max(first.choice.images_per_second, key=first.choice.images_per_second.get)
    again = load_runtime(Recipe(image_size=SMALL, layers="final"), cache=tmp_path, batch_size=8)
    assert again.choice.how == "remembered" and again.name == first.name and again.config.key == first.config.key
    table = json.loads((tmp_path / "runtimes" / "choices.json").read_text())
    (entry,) = table.values()
    assert entry["runtime"] == first.name
    assert (tmp_path / "runtimes" / "configs.json").is_file()  # a later OpenVINO run needs no torch model


@pytest.mark.own_runtime_files
def test_featx_runtimes_shares_one_conversion_and_one_measurement_between_caches(tmp_path, monkeypatch):
    shared = tmp_path / "machine-runtimes"
    monkeypatch.setenv("FEATX_RUNTIMES", str(shared))
    folder = write_class_folder(tmp_path / "colours", per_class=2)
    args = ("embed", folder, "--image-size", SMALL, "--workers", 0, "--json")
    first = json.loads(run_cli(*args, "--cache", tmp_path / "a").stdout)
    second = json.loads(run_cli(*args, "--cache", tmp_path / "b").stdout)
    assert first["runtime"]["how"] == "measured" and second["runtime"]["how"] == "remembered"
    assert second["runtime"]["runtime"] == first["runtime"]["runtime"]
    assert len(list(shared.glob("efficientnet_lite0-*/openvino.xml"))) == 1  # converted once, for both
    assert not (tmp_path / "a" / "runtimes").exists() and not (tmp_path / "b" / "runtimes").exists()


def test_recipes_that_differ_outside_the_network_share_its_conversion_and_measurement(tmp_path, monkeypatch, lite0_small):
    """The crop and the store dtype happen outside the network: a new one of either converts nothing, measures
    nothing and builds no torch model, yet its store's configuration is the one create_backbone makes."""
    from featx import backbones
    from featx.backbones import create_backbone
    from featx.store import FeatureStore

    shared = tmp_path / "machine-runtimes"
    monkeypatch.setenv("FEATX_RUNTIMES", str(shared))
    folder = write_class_folder(tmp_path / "colours", per_class=2)
    args = ("embed", folder, "--image-size", SMALL, "--layers", "final", "--workers", 0, "--json",
            "--cache", tmp_path / "cache")
    center = json.loads(run_cli(*args).stdout)

    def no_torch_model(*a, **k):
        raise AssertionError("built the torch model for a network already converted")

    monkeypatch.setattr(backbones, "create_backbone", no_torch_model)
    full = json.loads(run_cli(*args, "--crop", "full", "--store-dtype", "float16").stdout)
    monkeypatch.undo()
    assert center["runtime"]["how"] == "measured" and full["runtime"]["how"] == "remembered"
    assert len(list(shared.glob("efficientnet_lite0-*/openvino.xml"))) == 1
    assert full["store"] != center["store"] and full["n_embedded"] == 4
    made = create_backbone("efficientnet_lite0", image_size=SMALL, crop="full", store_dtype="float16").config
    assert FeatureStore(full["store"]).config.key == made.key
    X_center, *_ = FeatureStore(center["store"]).load("colours")
    X_full, *_ = FeatureStore(full["store"]).load("colours")
    assert not np.allclose(X_center, X_full, atol=1e-2)  # the crop was applied


@pytest.mark.own_runtime_files
def test_auto_falls_back_to_torch_when_openvino_is_absent(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` does when it is not installed
    model = load_runtime(Recipe(image_size=SMALL, layers="final"), cache=tmp_path)
    assert model.name == "torch" and model.choice.how == "fallback"
    assert "featx[openvino]" in model.choice.describe()
    with pytest.raises(BackboneError, match=r"pip install 'featx\[openvino\]'"):
        load_runtime(Recipe(image_size=SMALL, layers="final"), runtime="openvino", cache=tmp_path)
    with pytest.raises(BackboneError, match="OpenVINO"):
        load_runtime(Recipe(image_size=SMALL, precision="int8", layers="final"), cache=tmp_path,
                     calibrate=lambda pre: ("", None))


def test_int8_is_calibrated_on_the_dataset_and_gets_its_own_store(tmp_path, cache):
    folder = write_class_folder(tmp_path / "colours", per_class=6)
    args = ("embed", folder, "--image-size", SMALL, "--workers", 0, "--json")
    fp32 = json.loads(run_cli(*args, "--precision", "fp32").stdout)
    int8 = json.loads(run_cli(*args, "--precision", "int8").stdout)
    assert int8["precision"] == "int8" and int8["runtime"]["runtime"] == "openvino"
    assert int8["store"] != fp32["store"] and int8["n_embedded"] == 12
    again = json.loads(run_cli(*args, "--precision", "int8").stdout)
    assert again["store"] == int8["store"] and again["n_reused"] == 12  # same sample, same calibration
    from featx.store import FeatureStore

    store = FeatureStore(int8["store"])
    assert store.config.calibration and "int8" in store.config.describe()
    X8, *_ = store.load("colours")
    X32, *_ = FeatureStore(fp32["store"]).load("colours")
    assert cosines(X8, X32).min() > 0.9  # close, though not held to fp32's tolerance
    # a query image is embedded by the very model the store was calibrated with
    query = tmp_path / "query.png"
    noisy_image((220, 30, 30), seed=7).save(query)
    answer = json.loads(run_cli("search", "colours", query, "--precision", "int8", "-k", 1, "--json").stdout)
    assert answer[0]["results"][0]["label"] == "red"
    with pytest.raises(ParameterError, match="torch cannot run int8"):
        runtime_for(store.config, runtime="torch", cache=cache)
    result = run_cli(*args, "--precision", "int8", "--runtime", "torch", ok=False)
    assert result.exit_code != 0 and "torch cannot run int8" in result.output


@pytest.mark.own_runtime_files
def test_a_converted_configuration_embeds_without_importing_torch(tmp_path):
    folder = write_class_folder(tmp_path / "a", per_class=2)
    more = write_class_folder(tmp_path / "b", per_class=2, fmt="jpg")  # other bytes: new vectors
    cache = tmp_path / "cache"
    base = ["embed", "--cache", str(cache), "--image-size", str(SMALL), "--workers", "1", "--runtime", "openvino"]
    run_cli(*base[:1], folder, *base[1:])  # converts the model and remembers its configuration
    probe = ("import sys, json\nfrom featx.cli import main\ntry:\n"
             f"    main({[base[0], str(more), *base[1:], '--json']!r})\nexcept SystemExit:\n    pass\n"
             "print(json.dumps('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    result, imported = out.strip().rsplit("\n", 1)
    assert json.loads(result)["n_embedded"] == 4 and json.loads(imported) is False


@pytest.mark.own_runtime_files
def test_converting_and_measuring_sends_no_telemetry_and_forks_nothing(tmp_path):
    """OpenVINO's usage telemetry forked the whole process for every event it tried to send."""
    folder = write_class_folder(tmp_path / "a", per_class=1)
    args = ["embed", str(folder), "--cache", str(tmp_path / "cache"), "--image-size", "32", "--workers", "0", "--json"]
    probe = ("import os, sys, json\nforks = []\nos.register_at_fork(before=lambda: forks.append(1))\n"
             "from featx.cli import main\ntry:\n"
             f"    main({args!r})\nexcept SystemExit:\n    pass\n"
             "print(json.dumps([len(forks), 'openvino_telemetry' in sys.modules, 'openvino' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    result, seen = out.strip().rsplit("\n", 1)
    assert json.loads(result)["runtime"]["how"] == "measured"  # converted and measured in this process
    assert json.loads(seen) == [0, False, True]


@pytest.mark.own_runtime_files
def test_auto_leaves_a_gpu_to_torch_whatever_the_precision(tmp_path, monkeypatch):
    from featx.runtimes import load as loading

    monkeypatch.setattr(loading, "_gpu_present", lambda: True)
    for precision in ("auto", "bf16", "fp32"):
        model = load_runtime(Recipe(image_size=SMALL, precision=precision, layers="final"), cache=tmp_path)
        assert model.name == "torch" and model.choice.how == "gpu", precision
    assert not (tmp_path / "runtimes" / "choices.json").exists()  # nothing measured against the CPU


def test_a_calibration_made_by_other_versions_is_another_configuration(monkeypatch):
    from importlib import metadata

    from featx.runtimes.quantize import calibration_fingerprint, calibration_sample

    keys = [f"{i:064x}" for i in range(500)][::-1] + [None, "0" * 64]
    sample = calibration_sample(keys)
    assert len(sample) == 300 and sorted(keys[i] for i in sample) == sorted(k for k in set(keys) if k)[:300]
    now = calibration_fingerprint([keys[i] for i in sample])
    assert calibration_fingerprint([keys[i] for i in reversed(sample)]) == now  # order does not matter
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda p: "0.0.1" if p == "nncf" else real(p))
    assert calibration_fingerprint([keys[i] for i in sample]) != now


def _damage(path, how: str) -> None:
    if how == "bytes":  # the red team's: 2,000 random bytes changed, size kept
        rng = np.random.default_rng(1)
        data = bytearray(path.read_bytes())
        for i in rng.integers(0, len(data), 2000):
            data[i] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
    elif how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(5_000_000 if path.suffix == ".bin" else 500)
    else:
        path.unlink()


@pytest.fixture(scope="module")
def converted_once(tmp_path_factory):
    """A cache whose OpenVINO model was converted by a first embed, the folder of a second embed, and that
    folder's vectors by torch: made once for the damage cases below, which each damage a copy."""
    from featx.store import FeatureStore

    root = tmp_path_factory.mktemp("converted")
    first = write_class_folder(root / "first", per_class=2)
    second = write_class_folder(root / "second", per_class=3, classes={"g": (20, 200, 20), "w": (240, 240, 240)})
    common = ("--image-size", SMALL, "--workers", 0, "--precision", "fp32")
    run_cli("embed", first, "--runtime", "openvino", *common, "--cache", root / "c", "--json")
    by_torch = run_cli("embed", second, "--runtime", "torch", *common, "--cache", root / "t", "--json")
    X_torch, *_ = FeatureStore(json.loads(by_torch.stdout)["store"]).load("second")
    return root / "c", second, X_torch


@pytest.mark.own_runtime_files
@pytest.mark.parametrize("file, how", [("openvino.bin", "bytes"), ("openvino.bin", "truncate"),
                                       ("openvino.xml", "delete")])
def test_a_damaged_converted_model_is_converted_again_never_run(tmp_path, converted_once, file, how):
    from featx.store import FeatureStore

    cache, second, X_torch = converted_once
    shutil.copytree(cache, tmp_path / "c")
    args = ("--image-size", SMALL, "--workers", 0, "--precision", "fp32", "--cache", tmp_path / "c", "--json")
    (model,) = (tmp_path / "c" / "runtimes").glob("efficientnet_lite0-*/" + file)
    _damage(model, how)
    result = run_cli("embed", second, "--runtime", "openvino", *args)
    assert "damaged" in result.stderr and "converting it again" in result.stderr, result.stderr
    store = json.loads(result.stdout)["store"]
    X_openvino, *_ = FeatureStore(store).load("second")
    assert cosines(X_openvino, X_torch).min() >= AGREEMENT["fp32"][0]
    again = run_cli("embed", second, "--runtime", "openvino", *args)  # repaired once: quiet since
    assert "damaged" not in again.stderr


def test_a_conversion_unlike_torch_is_refused_before_anything_is_stored(tmp_path, lite0_small):
    from featx.runtimes.openvino_runtime import check_conversion, convert_backbone

    path = tmp_path / "openvino.xml"
    convert_backbone(lite0_small, path)  # checks itself: a faithful conversion passes
    extractor = lite0_small.extractor
    with pytest.raises(BackboneError, match="unlike torch's"):
        check_conversion(lambda x: extractor(x.flip(-1)), lite0_small.config, path)


@pytest.mark.own_runtime_files  # the search runs in a process of its own, which reads <cache>/runtimes
def test_a_search_right_after_embedding_a_new_recipe_builds_no_torch_model(tmp_path):
    # `featx embed` names the recipe in words (its default size, "stages"); the store's configuration names it
    # exactly (224, the layers by name). Searching with the store's configuration must find the converted model
    # without building the torch one again.
    folder = write_class_folder(tmp_path / "a", per_class=2)
    cache = tmp_path / "cache"
    run_cli("embed", folder, "--cache", cache, "--image-size", SMALL, "--layers", "stages", "--workers", 0,
            "--runtime", "openvino")
    query = folder / "red" / "0.png"
    probe = ("import sys, json\nfrom featx.cli import main\ntry:\n"
             f"    main(['search', 'a', {str(query)!r}, '-k', '2', '--cache', {str(cache)!r}, '--runtime', 'openvino',"
             " '--json'])\nexcept SystemExit:\n    pass\nprint(json.dumps('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    result, imported = out.strip().rsplit("\n", 1)
    assert json.loads(result)[0]["results"][0]["similarity"] > 0.999 and json.loads(imported) is False
