"""Fine-tuning: which weights train, the checkpoint as a backbone, `featx finetune` as a user runs it."""

from __future__ import annotations

import json

import pytest
import torch

from featx.backbones import create_backbone
from featx.data import hash_source
from featx.errors import TrainingError
from featx.transfer.checkpoints import load_checkpoint
from featx.transfer.finetune import FinetuneSettings, finetune, layer_groups, unfreeze
from featx.data.builtins import load_digits_source
from featx.transfer.subsets import draw_shots, labelled_splits

from conftest import run_cli, write_class_folder

TINY = 32  # pixels: enough to exercise every step in a second or two


@pytest.fixture(scope="module")
def digits():
    source = load_digits_source()
    keys, _ = hash_source(source)
    return source, labelled_splits(source, keys)


def test_layer_groups_run_from_stem_to_head():
    model = create_backbone("efficientnet_lite0", image_size=TINY).model
    groups = layer_groups(model)
    assert len(groups) == 8  # the stem, six block stages, the last stage with the 1×1 head convolution
    assert groups[0][0].startswith("conv_stem")
    assert "conv_head.weight" in groups[-1] and any(n.startswith("blocks.6.") for n in groups[-1])
    assert not any(n.startswith("classifier") for g in groups for n in g)
    trainable = unfreeze(model, "last-2")
    assert set(trainable) == set(groups[-1]) | set(groups[-2])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(trainable)


@pytest.mark.parametrize("spec, message", [("last-0", "must be last-1"), ("first-2", "must be last-1"),
                                           ("last-99", "has 8 layer groups")])
def test_bad_unfreeze_is_named(spec, message):
    model = create_backbone("efficientnet_lite0", image_size=TINY).model
    with pytest.raises(TrainingError, match=message):
        unfreeze(model, spec)


def test_a_few_steps_change_only_the_unfrozen_weights_and_the_checkpoint_reloads(digits, tmp_path):
    source, splits = digits
    backbone = create_backbone("efficientnet_lite0", image_size=TINY)
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    settings = FinetuneSettings(unfreeze="last-1", epochs=1, batch_size=16, min_steps_per_epoch=4, workers=0)
    path = tmp_path / "ft.pt"
    result = finetune(backbone, source, draw_shots(splits["train"], 3, 0), splits["test"], settings, out=path)

    after = backbone.model.state_dict()
    last = set(layer_groups(backbone.model)[-1])
    changed = {k for k in last if not torch.equal(before[k], after[k])}
    assert changed == last  # every unfrozen weight moved…
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("conv_stem", "blocks.0.")))
    # …and batch-norm statistics stay put, even in the layers that trained.
    assert torch.equal(before["blocks.6.0.bn1.running_mean"], after["blocks.6.0.bn1.running_mean"])
    assert result.epochs_run == 1 and result.n_test == len(splits["test"])
    assert 0.0 <= result.accuracy <= 1.0 and result.peak_rss_mb > 0 and result.path == str(path)

    ckpt = load_checkpoint(path)
    assert ckpt["featx"]["classes"] == [str(c) for c in range(10)]
    assert ckpt["head"]["weight"].shape == (10, 1280)
    reloaded = create_backbone("efficientnet_lite0", weights=path, image_size=TINY)
    for k, v in reloaded.model.state_dict().items():
        if not k.startswith("classifier"):
            assert torch.equal(v, after[k]), k
    base = create_backbone("efficientnet_lite0", image_size=TINY)
    assert reloaded.config.key != base.config.key
    assert reloaded.config.weights_sha256 != base.config.weights_sha256


def test_a_diverging_loss_stops_with_advice(digits):
    source, splits = digits
    backbone = create_backbone("efficientnet_lite0", image_size=TINY)
    with torch.no_grad():
        backbone.model.conv_stem.weight.fill_(float("nan"))
    settings = FinetuneSettings(epochs=1, min_steps_per_epoch=1, workers=0)
    with pytest.raises(TrainingError, match="diverged.*lower lr"):
        finetune(backbone, source, draw_shots(splits["train"], 2, 0), None, settings)


def test_cli_finetune_then_embed_with_the_checkpoint_into_a_new_store(tmp_path, cache):
    out = run_cli("finetune", "digits", "--shots", 3, "--epochs", 1, "--image-size", TINY, "--batch-size", 16,
                  "--out", tmp_path / "ckpt", "--json")
    report = json.loads(out.output)
    for key in ("dataset", "unfreeze", "n_train", "epochs_run", "accuracy", "macro_f1", "seconds", "peak_rss_mb",
                "train_accuracy", "val_accuracy", "path"):
        assert key in report, key
    assert report["dataset"] == "digits" and report["unfreeze"] == "last-1" and report["n_train"] == 20
    assert report["path"].endswith("digits-efficientnet_lite0-last-1-3shot-seed0.pt")

    run_cli("embed", "digits", "--image-size", TINY, "--workers", 0)
    run_cli("embed", "digits", "--image-size", TINY, "--workers", 0, "--weights", report["path"])
    stores = json.loads(run_cli("stores", "--json").output)
    assert len(stores) == 2 and len({s["key"] for s in stores}) == 2
    # Heads train on the fine-tuned vectors once the store is chosen by its weights.
    trained = run_cli("train", "digits", "--weights", report["path"], "--json")
    assert json.loads(trained.output)["accuracy"] > 0.2


def test_cli_finetune_errors_name_the_fix(tmp_path, cache):
    too_many = run_cli("finetune", "digits", "--shots", 500, ok=False)
    assert too_many.exit_code == 1 and "is more than the smallest class has" in too_many.output
    flat = tmp_path / "flat"
    flat.mkdir()
    write_class_folder(tmp_path / "tmp", per_class=2)
    for i, f in enumerate(sorted((tmp_path / "tmp").rglob("*.png"))):
        f.rename(flat / f"{i}.png")
    unlabelled = run_cli("finetune", flat, ok=False)
    assert unlabelled.exit_code == 1 and "has no labels" in unlabelled.output
    bad = run_cli("finetune", "digits", "--unfreeze", "half", ok=False)
    assert bad.exit_code == 1 and "--unfreeze must be last-1" in bad.output
    assert "Traceback" not in too_many.output + unlabelled.output + bad.output
