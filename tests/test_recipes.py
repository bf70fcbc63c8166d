"""Recipes: which layers make a vector and how an image is cropped; stores, heads and indexes keep them apart."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from featx.config import BackboneConfig, StoreQuery
from featx.errors import BundleError, ParameterError, StoreError

from conftest import SMALL, noisy_image, run_cli, write_class_folder


def _embed(folder, *args) -> dict:
    return json.loads(run_cli("embed", folder, "--image-size", SMALL, "--workers", 0, "--json", *args).output)


@pytest.fixture(scope="module")
def lite0_stages():
    from featx.backbones import create_backbone

    return create_backbone("efficientnet_lite0", image_size=SMALL, layers="stages", precision="fp32")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_every_registered_backbone_lists_its_stage_taps(name):
    from featx.backbones import backbone_taps, get_backbone_spec

    taps = backbone_taps(name)
    model = get_backbone_spec(name).build()
    assert [t.name for t in taps] == [d["module"] for d in model.feature_info] + ["final"]
    assert [t.channels for t in taps[:-1]] == [d["num_chs"] for d in model.feature_info]
    assert taps[-1].channels == get_backbone_spec(name).dim


def test_backbones_layers_command_lists_the_taps_and_bad_names_list_the_valid_ones(tmp_path, cache):
    listing = json.loads(run_cli("backbones", "--layers", "efficientnet_lite0", "--json").output)
    names = [r["name"] for r in listing]
    assert names[-1] == "final" and "blocks.6" in names
    folder = write_class_folder(tmp_path / "data", per_class=2)
    result = run_cli("embed", folder, "--image-size", SMALL, "--layers", "blocks.9,final", ok=False)
    assert result.exit_code == 1 and "'blocks.9' is not a layer" in result.output
    assert "--layers" in result.output and all(n in result.output for n in names)


def test_a_stages_vector_is_each_stage_pooled_then_the_final_features(lite0_stages):
    import torch

    from featx.backbones import create_backbone

    cfg = lite0_stages.config
    assert cfg.layers[-1] == "final" and len(cfg.layers) == len(cfg.layer_dims) > 1
    assert sum(cfg.layer_dims) == cfg.dim and list(cfg.columns().values())[-1][1] == cfg.dim
    x = torch.rand(2, 3, SMALL, SMALL)
    with torch.inference_mode():
        got = lite0_stages.extractor(x).numpy()
        _, stages = lite0_stages.model.forward_intermediates(x)
    cols = cfg.columns()
    for name, t in zip(cfg.layers, stages):
        a, b = cols[name]
        np.testing.assert_allclose(got[:, a:b], t.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    final = create_backbone("efficientnet_lite0", image_size=SMALL, precision="fp32")
    with torch.inference_mode():
        a, b = cols["final"]
        np.testing.assert_allclose(got[:, a:b], final.extractor(x).numpy(), rtol=1e-4, atol=1e-5)


def test_a_grid_vector_is_each_stage_averaged_over_four_cells_that_average_to_the_stages_vector(lite0_stages):
    """At 64 px every stage map of lite0 has an even side, so its 2×2 cells are equal quarters: their mean per
    channel is the stage's average, the column `--layers stages` stores."""
    import torch

    from featx.backbones import create_backbone

    grid = create_backbone("efficientnet_lite0", image_size=64, layers="grid", precision="fp32")
    stages = create_backbone("efficientnet_lite0", image_size=64, layers="stages", precision="fp32")
    cfg = grid.config
    assert cfg.layers == tuple(f"{n}@2x2" for n in stages.config.layers[:-1]) + ("final",)
    assert cfg.layer_dims == tuple(4 * w for w in stages.config.layer_dims[:-1]) + (1280,)
    assert cfg.key != stages.config.key and "2×2 grid" in cfg.recipe
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        got, want = grid.extractor(x).numpy(), stages.extractor(x).numpy()
    for (g, s) in zip(cfg.columns().values(), stages.config.columns().values()):
        cells = got[:, g[0]:g[1]].reshape(2, s[1] - s[0], -1)  # channel by channel, its cells
        np.testing.assert_allclose(cells.mean(2), want[:, s[0]:s[1]], rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[:, :64], np.repeat(want[:, :16], 4, axis=1))  # the cells differ: where, not only what
    one = create_backbone("efficientnet_lite0", image_size=64, layers="blocks.1@2x2,final", precision="fp32")
    assert one.config.layers == ("blocks.1@2x2", "final") and one.config.layer_dims == (96, 1280)
    with pytest.raises(ParameterError, match="NAME@NxN"):
        create_backbone("efficientnet_lite0", image_size=64, layers="blocks.1@2x3")


def test_configs_from_before_recipes_keep_their_store_keys(lite0_small):
    old = lite0_small.config.to_dict()
    assert "layers" not in old and "crop" not in old["preprocess"]
    assert BackboneConfig.from_dict(old).key == lite0_small.config.key
    full = BackboneConfig.from_dict({**old, "preprocess": {**old["preprocess"], "crop": "full"}})
    assert full.key != lite0_small.config.key and full.preprocess.resize_size == SMALL


def test_block_normalisation_weighs_every_layer_alike():
    from featx.search.flat import normalize

    X = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    X[:, :2] *= 1000.0  # a loud, narrow layer
    Z = normalize(X, layer_widths=(2, 5))
    np.testing.assert_allclose(np.linalg.norm(Z[:, :2], axis=1), np.sqrt(0.5), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(Z[:, 2:], axis=1), np.sqrt(0.5), rtol=1e-5)
    with pytest.raises(ValueError):
        normalize(X, layer_widths=(2, 4))


def test_layers_and_crop_make_new_stores_that_never_mix(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=3)
    plain = _embed(folder, "--layers", "final")
    assert (plain["layers"], plain["crop"]) == (["final"], "center")  # a folder of photos: centre crop
    full = _embed(folder, "--layers", "final", "--crop", "full")
    stages = _embed(folder, "--crop", "full")  # every stage, over a 2×2 grid: the default
    assert stages["layers"][-1] == "final" and len(stages["layers"]) > 1
    assert len({plain["store"], full["store"], stages["store"]}) == 3
    assert (plain["dim"], full["dim"]) == (1280, 1280) and stages["dim"] > 1280
    assert stages["n_embedded"] == 6 and full["n_embedded"] == 6  # nothing borrowed across recipes

    from featx.store import FeatureStore, find_dataset

    a, b = FeatureStore(plain["store"]), FeatureStore(full["store"])
    keys = [m.key for m in a.members("data")]
    assert keys == [m.key for m in b.members("data")]
    assert not np.allclose(a.vectors(keys), b.vectors(keys))  # the crop changed what the model saw
    a.close(), b.close()

    with pytest.raises(StoreError, match="several stores"):  # the default layers do not choose a crop
        find_dataset("data", cache, StoreQuery(layers="final"))
    with find_dataset("data", cache, StoreQuery(layers="grid")) as store:
        assert store.path.as_posix() == stages["store"]
    with find_dataset("data", cache, StoreQuery(layers="final", crop="center")) as store:
        assert store.path.as_posix() == plain["store"]
    listing = run_cli("stores").output
    assert "recipe: layers final; center crop" in listing and "full crop" in listing


def test_a_grid_recipe_is_a_store_of_its_own_that_trains_predicts_and_is_named_by_layers_grid(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=4, classes={
        "red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 40)})
    stages = _embed(folder, "--layers", "stages")
    grid = _embed(folder, "--layers", "grid")
    assert grid["store"] != stages["store"] and grid["n_embedded"] == 12 and grid["n_reused"] == 0
    assert grid["dim"] == 4 * (stages["dim"] - 1280) + 1280 and grid["layers"][0].endswith("@2x2")
    from featx.store import find_dataset

    with find_dataset("data", cache, StoreQuery(layers="grid")) as store:
        assert store.path.as_posix() == grid["store"]
    with find_dataset("data", cache, StoreQuery(layers="stages")) as store:
        assert store.path.as_posix() == stages["store"]
    trained = json.loads(run_cli("train", "data", "--layers", "grid", "--json").output)
    new = tmp_path / "new.png"
    noisy_image((30, 200, 40), seed=5150).save(new)
    answer = json.loads(run_cli("predict", trained["path"], new, "--json").output)
    assert answer["results"][0]["predictions"][0]["label"] == "green"
    assert "layers blocks.0@2x2, blocks.1@2x2" in run_cli("stores").output


def test_built_in_datasets_default_to_the_whole_frame(cache):
    result = run_cli("embed", "digits", "--image-size", 32, "--workers", 0)
    assert "recipe: layers blocks.0@2x2, blocks.1@2x2, blocks.2@2x2, blocks.4@2x2, blocks.6@2x2, final; full crop" \
        in result.output


def test_a_head_on_some_layers_equals_one_trained_on_those_columns(tmp_path, cache):
    from featx.heads import LogisticHead, load_bundle
    from featx.store import find_dataset

    folder = write_class_folder(tmp_path / "data", per_class=8, classes={
        "red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 40)})
    _embed(folder, "--layers", "stages")
    trained = json.loads(run_cli("train", "data", "--use-layers", "blocks.4,blocks.6", "--json").output)
    assert trained["layers"] == ["blocks.4", "blocks.6"] and "blocks.4" in trained["path"]
    bundle = load_bundle(trained["path"])
    with find_dataset("data", cache) as store:
        cols = store.config.columns()
        X, y, _, _ = store.load("data", "train")
        Xt, _, _, _ = store.load("data", "test")
        config = store.config
    take = lambda M: np.concatenate([M[:, slice(*cols["blocks.4"])], M[:, slice(*cols["blocks.6"])]], axis=1)
    alone = LogisticHead(layer_widths=(cols["blocks.4"][1] - cols["blocks.4"][0],
                                 cols["blocks.6"][1] - cols["blocks.6"][0])).fit(take(np.asarray(X)), y)
    assert bundle.layers == ("blocks.4", "blocks.6") and bundle.config.key == config.key
    np.testing.assert_allclose(bundle.head.coef_, alone.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(bundle.head.predict(bundle.features(np.asarray(Xt))), alone.predict(take(Xt)))

    # Predicting new files re-creates the head's recipe by itself.
    new = tmp_path / "new.png"
    noisy_image((30, 200, 40), seed=5150).save(new)
    answer = json.loads(run_cli("predict", trained["path"], new, "--json").output)
    assert answer["results"][0]["predictions"][0]["label"] == "green"

    with pytest.raises(ParameterError, match="'nope' is not a layer of this store's vectors; it holds: blocks.0"):
        with find_dataset("data", cache) as store:
            from featx.heads import train_head

            train_head(store, "data", use_layers="nope")


def test_a_head_of_one_recipe_refuses_vectors_of_another(tmp_path, cache):
    folder = write_class_folder(tmp_path / "data", per_class=3)
    _embed(folder, "--layers", "stages")
    head = json.loads(run_cli("train", "data", "--json").output)["path"]
    _embed(folder, "--layers", "final")
    result = run_cli("evaluate", head, "data", "--split", "train", ok=True)  # the head finds its own store
    assert "accuracy" in result.output
    from featx.heads import load_bundle
    from featx.store import find_dataset

    with find_dataset("data", cache, StoreQuery(layers="final")) as store, pytest.raises(BundleError, match="trained on vectors of"):
        load_bundle(head).check_config(store.config)


def test_the_service_predicts_and_searches_with_a_multi_layer_recipe(tmp_path, cache):
    from fastapi.testclient import TestClient

    from featx.serve import create_app, open_resources

    folder = write_class_folder(tmp_path / "data", per_class=4)
    _embed(folder, "--layers", "blocks.6,final", "--crop", "full")
    head = json.loads(run_cli("train", "data", "--json").output)["path"]
    query = tmp_path / "q.png"
    noisy_image((30, 30, 220), seed=777).save(query)
    resources = open_resources(head=head, dataset="data", cache=str(cache))
    assert resources.runtime.config.layers == ("blocks.6", "final")
    with TestClient(create_app(resources)) as client:
        files = {"files": ("q.png", query.read_bytes(), "image/png")}
        predicted = client.post("/predict", files=files).json()
        assert predicted["results"][0]["predictions"][0]["label"] == "blue"
        found = client.post("/search?k=2", files=files).json()
        assert {r["label"] for r in found["results"][0]["results"]} == {"blue"}
    resources.close()


def test_index_and_search_on_some_layers_match_exact_search_on_those_columns(tmp_path, cache):
    from featx.search.flat import flat_search, normalize
    from featx.store import find_dataset

    folder = write_class_folder(tmp_path / "data", per_class=5)
    _embed(folder, "--layers", "stages")
    built = json.loads(run_cli("index", "data", "--use-layers", "blocks.1,blocks.2", "--json").output)
    assert "blocks.1" in Path(built["path"]).name and built["dim"] == 24 + 40
    whole = json.loads(run_cli("index", "data", "--json").output)
    assert whole["path"] != built["path"] and whole["dim"] > 1280
    query = folder / "red" / "0.png"
    answer = json.loads(run_cli("search", "data", query, "-k", 10, "--use-layers", "blocks.1,blocks.2",
                                "--json").output)
    with find_dataset("data", cache) as store:
        cols = store.config.columns()
        members = store.members("data")
        keys = [m.key for m in members]
        X = store.vectors(keys)
        take = lambda M: np.concatenate([M[:, slice(*cols["blocks.1"])], M[:, slice(*cols["blocks.2"])]], axis=1)
        row = keys.index(next(m.key for m in members if m.path == str(query)))
        D, I = flat_search(normalize(take(X), layer_widths=(24, 40)), normalize(take(X[row : row + 1]), layer_widths=(24, 40)), 10)
    np.testing.assert_allclose([r["similarity"] for r in answer[0]["results"]], D[0], rtol=1e-4, atol=1e-5)
    result = run_cli("search", "data", query, "--use-layers", "blocks.3", ok=False)
    assert result.exit_code == 1 and "'blocks.3' is not a layer" in result.output


def test_a_dataset_in_two_recipes_is_read_from_the_default_one_and_the_command_says_so(tmp_path, cache):
    from featx.store import ChosenStoreNotice, find_dataset

    folder = write_class_folder(tmp_path / "data", per_class=6, classes={
        "red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 40)})
    plain, stages = _embed(folder, "--layers", "final"), _embed(folder)
    with pytest.warns(ChosenStoreNotice, match=r"is in 2 stores: using efficientnet_lite0 @ 64px \(6 layers, stages over a "
                                               r"2×2 grid; center"):
        with find_dataset("data", cache) as store:
            assert store.path.as_posix() == stages["store"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # named: no notice
        with find_dataset("data", cache, StoreQuery(layers="final")) as store:
            assert store.path.as_posix() == plain["store"]
    trained = run_cli("train", "data", "--json")
    # the JSON stays clean: the note is on stderr
    assert json.loads(trained.stdout)["store"] == stages["store"] and json.loads(trained.stdout)["layers"][-1] == "final"
    assert "note: dataset 'data' is in 2 stores: using efficientnet_lite0" in trained.stderr
    found = run_cli("search", "data", folder / "red" / "0.png", "-k", 2)
    assert "note: dataset 'data' is in 2 stores" in found.stderr and "red" in found.stdout


def test_the_cli_hands_the_library_one_recipe_and_a_query_that_embeds_what_it_finds(monkeypatch, tmp_path):
    """`featx embed`'s options arrive as one Recipe (the source's crop when none is named); a StoreQuery's
    settings over the defaults are the recipe that makes a store it finds (audit embeds a missing dataset so)."""
    import featx.embed.runner as runner
    from featx.config import DEFAULT_BACKBONE, DEFAULT_LAYERS, Recipe

    seen = []

    def capture(source, recipe, **kwargs):
        seen.append((source.crop, recipe, kwargs["runtime"]))
        raise KeyboardInterrupt  # stop before any model is built

    monkeypatch.setattr(runner, "embed_into_store", capture)
    run_cli("embed", "digits", "--image-size", 48, "--layers", "final", "--store-dtype", "float16",
            "--runtime", "torch", "--cache", tmp_path, ok=False)
    run_cli("embed", "digits", "--cache", tmp_path, ok=False)
    assert seen[0] == ("full", Recipe(DEFAULT_BACKBONE, None, 48, "auto", "final", None, "float16"), "torch")
    assert seen[1][1] == Recipe() and seen[1][1].for_source(_Source("full")).crop == "full"
    assert Recipe(crop="center").for_source(_Source("full")).crop == "center"
    query = StoreQuery(image_size=48, layers="final")
    assert query.narrowed and not StoreQuery(precision="auto").narrowed
    assert query.recipe() == Recipe(image_size=48, layers="final")
    assert StoreQuery().recipe().layers == DEFAULT_LAYERS


class _Source:
    def __init__(self, crop):
        self.crop = crop
