"""Backbones: the registry, real offline ImageNet weights, hub errors, local weight files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images
from timm.data import ImageNetInfo

from featx.config import BackboneConfig
from featx.backbones import (
    create_backbone,
    describe_backbones,
    get_backbone_spec,
    list_backbones,
    sha256_file,
)
from featx.embed import Embedder
from featx.errors import BackboneError
from featx.data.images import load_input
from featx.hardware import prepare_batch


def top_label(backbone, arr: np.ndarray) -> str:
    x = torch.from_numpy(load_input(arr, backbone.config.preprocess))[None]
    with torch.inference_mode():
        logits = backbone.model(prepare_batch(x, backbone.config.preprocess, torch.device("cpu")).float())
    return ImageNetInfo().index_to_description(int(logits.argmax()))


def sample_photos() -> dict[str, np.ndarray]:
    photos = load_sample_images()
    return {name.rsplit("/", 1)[-1]: img for name, img in zip(photos.filenames, photos.images)}


def test_registry_lists_offline_lite_backbones():
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(list_backbones())
    rows = {r["name"]: r for r in describe_backbones()}
    assert rows["efficientnet_lite0"] == {**rows["efficientnet_lite0"], "dim": 1280, "input_size": 224, "offline": True}
    assert rows["efficientnet_lite2"]["image_size"] == rows["efficientnet_lite2"]["input_size"] == 260
    assert rows["timm:NAME"]["offline"] is False


def test_lite0_weights_are_real_imagenet_weights(lite0):
    photos = sample_photos()
    assert top_label(lite0, photos["china.jpg"]) == "palace"
    assert top_label(lite0, photos["flower.jpg"]) == "daisy"


@pytest.mark.parametrize("name,size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_larger_lite_weights_load_and_recognise_the_palace(name, size):
    backbone = create_backbone(name, precision="fp32")
    assert backbone.config.preprocess.input_size == size and backbone.dim == 1280
    assert top_label(backbone, sample_photos()["china.jpg"]) == "palace"


def test_config_key_changes_with_every_setting(lite0):
    cfg = lite0.config
    assert cfg.weights_sha256 == sha256_file(get_backbone_spec("efficientnet_lite0").find_weights())
    assert BackboneConfig.from_dict(cfg.to_dict()) == cfg
    other_size = create_backbone("efficientnet_lite0", image_size=192, precision=cfg.precision).config
    assert other_size.key != cfg.key and other_size.preprocess.input_size == 192
    fp32 = create_backbone("efficientnet_lite0", precision="fp32").config
    bf16 = create_backbone("efficientnet_lite0", precision="bf16").config
    assert fp32.key != bf16.key and fp32.weights_sha256 == bf16.weights_sha256


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(BackboneError, match="unknown backbone 'resnet9000'.*efficientnet_lite0"):
        create_backbone("resnet9000")


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:resnet18"])
def test_hub_backbones_fail_fast_offline_with_the_alternatives(name, monkeypatch):
    from huggingface_hub import constants

    import featx.backbones.hub as hub

    monkeypatch.setattr(hub, "network_reachable", lambda *a, **k: False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-featx-test")  # no cached torchvision weights
    with pytest.raises(BackboneError, match="unreachable.*efficientnet_lite0.*weights=FILE"):
        create_backbone(name)


def test_hub_backbone_with_local_weights_file(tmp_path):
    import timm

    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    backbone = create_backbone("timm:resnet18", weights=path, image_size=64, precision="fp32")
    assert backbone.dim == 512 and backbone.config.weights_sha256 == sha256_file(path)


def test_torchvision_backbone_takes_features_before_the_classifier(tmp_path):
    import torchvision

    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    backbone = create_backbone("torchvision:mobilenet_v3_small", weights=path, image_size=64, precision="fp32")
    X = Embedder(backbone).embed_inputs([np.zeros((64, 64, 3), np.uint8)])
    assert X.shape == (1, backbone.dim) == (1, 1024)


def test_weights_file_in_timm_names_gives_the_same_features(tmp_path, lite0_small):
    path = tmp_path / "lite0.pth"
    torch.save(lite0_small.model.state_dict(), path)
    reloaded = create_backbone("efficientnet_lite0", weights=path, image_size=64,
                               precision=lite0_small.config.precision)
    assert reloaded.config.weights_sha256 == sha256_file(path) != lite0_small.config.weights_sha256
    img = np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    a, b = Embedder(lite0_small).embed_inputs([img]), Embedder(reloaded).embed_inputs([img])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(BackboneError, match="do not fit"):
        create_backbone("efficientnet_lite0", weights=path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot read weights file"):
        create_backbone("efficientnet_lite0", weights=junk)
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone("efficientnet_lite0", weights=tmp_path / "missing.pth")


def test_bf16_features_agree_with_fp32(lite0):
    fp32 = create_backbone("efficientnet_lite0", precision="fp32")
    bf16 = create_backbone("efficientnet_lite0", precision="bf16")
    imgs = list(sample_photos().values())
    a, b = Embedder(fp32).embed_inputs(imgs), Embedder(bf16).embed_inputs(imgs)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.98


def test_the_torch_runtime_runs_batch_norm_folded_and_gets_the_same_features(lite0_small):
    from featx.runtimes import TorchRuntime

    folded = lite0_small.inference
    assert folded is not lite0_small.extractor  # a copy: the extractor stays trainable and unchanged
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0_small.extractor.modules())
    x = torch.rand(4, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = lite0_small.extractor(x), folded(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert TorchRuntime(lite0_small).extractor is folded  # built once, outside any autocast


def test_a_batch_norm_the_registration_order_misplaces_is_not_folded():
    """conv, then a batch norm registered next but applied to the input: folding would change the features,
    so the check against the original keeps the original."""
    from featx.backbones.fold import fold_batch_norms

    class Misleading(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)
            self.norm = torch.nn.BatchNorm2d(3).eval()
            self.norm.running_mean.fill_(0.5)
            self.norm.running_var.fill_(4.0)

        def forward(self, x):
            return self.conv(x) + self.norm(x)

    model = Misleading().eval()
    assert fold_batch_norms(model) is model
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4).eval()).eval()
    plain[1].running_var.fill_(4.0)
    assert isinstance(fold_batch_norms(plain)[1], torch.nn.Identity)


def test_a_configuration_is_re_created_exactly_or_refused_naming_the_weights():
    import dataclasses

    from featx.backbones import create_backbone_for
    from featx.runtimes import runtime_for

    made = create_backbone(image_size=32, layers="stages", crop="full")
    again = create_backbone_for(made.config)  # the arguments come from the configuration alone
    assert again.config.key == made.config.key
    other = dataclasses.replace(made.config, weights_sha256="0" * 64)  # embedded with weights not here
    for recreate in (lambda: create_backbone_for(other), lambda: runtime_for(other, runtime="torch")):
        with pytest.raises(BackboneError, match="cannot re-create .* other weights: pass them as weights=FILE") as e:
            recreate()
        assert e.value.params == ("weights",)
