"""The one way to get a runtime: for a new configuration (embed, serve) or for a store's (search, predict, Ray)."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import FINAL, BackboneConfig, PreprocessConfig, Recipe, check_recipe, layer_names
from ..errors import BackboneError, DamagedModelError, ParameterError
from ..hardware import Progress, gpu_may_be_present, resolve_precision_without_torch
from . import RUNTIMES
from .base import Runtime, RuntimeChoice
from .cache import (CONFIGS, RepairedModelWarning, openvino_model, read_table, remember, runtimes_root,
                    save_openvino_model)
from .choice import choose, remembered_choice
from .openvino_runtime import OpenVINORuntime, convert_backbone, import_openvino, openvino_available

# progress stages of the once-only steps, as a user reads them
CONVERT = "converting the model for OpenVINO (once per backbone, image size and layers)"
MEASURE = "measuring torch against OpenVINO (once per machine and configuration)"

# calibrate(preprocess) -> (fingerprint of the sample, its uint8 crops): what int8 quantises with.
Calibrate = Callable[[PreprocessConfig], tuple[str, np.ndarray]]


def load_runtime(
    recipe: Recipe = Recipe(layers=FINAL),
    *,
    runtime: str = "auto",
    cache: str | os.PathLike | None = None,
    batch_size: int = 64,
    calibrate: Calibrate | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> Runtime:
    """The backbone ``recipe`` asks for (default: the default backbone's final layer), ready to embed on
    ``runtime``: ``torch``, ``openvino`` or ``auto``.

    ``auto`` measures both on this machine the first time a configuration and batch size run, keeps
    the faster and remembers it under ``<cache>/runtimes`` (a GPU means torch; no OpenVINO means
    torch). The choice is ``runtime.choice``. OpenVINO models are converted once and cached there too,
    with the configuration they make, so a later run that uses OpenVINO never builds the torch model.
    ``precision="int8"`` quantises with NNCF, calibrated by ``calibrate``, and is a configuration
    (and store) of its own. ``threads`` caps the runtime's threads (a Ray actor's one CPU);
    ``progress`` hears of the once-only steps (CONVERT, MEASURE) so a first run says what it is doing;
    the recipe's settings are ``create_backbone``'s (a recipe without a crop takes the centre).
    """
    def once(stage: str, step):
        if progress:
            progress(stage, 0, 1)
        done = step()
        if progress:
            progress(stage, 1, 1)
        return done

    if runtime not in RUNTIMES:
        raise ParameterError("runtime", f"must be one of {', '.join(RUNTIMES)}, not {runtime!r}.")
    name, weights, image_size, precision, layers = (recipe.backbone, recipe.weights, recipe.image_size,
                                                    recipe.precision, recipe.layers)
    crop, store_dtype = recipe.crop or "center", recipe.store_dtype
    check_recipe(crop, store_dtype)
    int8 = precision == "int8"
    if int8:
        if runtime == "torch":
            raise ParameterError("runtime", "torch cannot run int8; use runtime=openvino (or auto) with "
                                            "precision=int8.", also=("precision",))
        if calibrate is None:
            raise ParameterError("precision", "int8 is calibrated on the dataset it embeds: "
                                              "embed one with precision=int8 first.")
    if runtime == "openvino" or int8:
        import_openvino()  # says how to install it
    use_openvino = openvino_available() and runtime != "torch"
    if use_openvino and runtime == "auto" and not int8 and _gpu_present():
        use_openvino = False  # a GPU: torch runs there, OpenVINO would run on the CPU
    build_precision = "fp32" if int8 else precision
    resolved = resolve_precision_without_torch(build_precision) if use_openvino else None
    request = _request(name, weights, image_size, resolved, layers) if resolved else None
    known = read_table(cache, CONFIGS).get(request) if request else None
    # a remembered network, with the crop and store dtype asked for
    config = BackboneConfig.from_dict(known).with_recipe(crop, store_dtype) if known else None
    backbone = None

    def build():
        nonlocal backbone, config
        if backbone is None:
            from ..backbones import backbone_from

            backbone = backbone_from(dataclasses.replace(recipe, precision=build_precision, crop=crop),
                                     device="cpu" if use_openvino else None)
            config = backbone.config
            if request and not known:
                network = config.network().to_dict()
                remember(cache, CONFIGS, request, network)
                # Also under the words a store's configuration gives (its size, its layers by name): `featx
                # search` or `predict` right after `featx embed` of a new recipe asks that way, and without this
                # built the torch model to learn what it already knew (4.2 s instead of 0.5)
                named = _request(name, weights, config.preprocess.input_size, config.precision, config.layers)
                if named and named != request:
                    remember(cache, CONFIGS, named, network)
        return backbone

    if not use_openvino:
        how = "asked" if runtime == "torch" else "gpu" if _gpu_present() else "fallback"
        return _torch(build(), how, threads)
    if config is None:
        build()
    # one converted model serves fp32 and bf16, every crop and every store dtype
    reference = config.network(precision="fp32")
    path = converted_model(cache, reference, lambda p: once(CONVERT, lambda: convert_backbone(build(), p)))
    if int8:
        return _int8(cache, config, path, calibrate, threads)
    openvino = OpenVINORuntime(config, path, threads)
    if runtime == "openvino":
        return _chosen(openvino, RuntimeChoice("openvino", "asked"))
    choice = remembered_choice(cache, config, batch_size)
    if choice is None:
        torch_runtime = _torch(build(), "measured")
        choice = once(MEASURE, lambda: choose(cache, config, batch_size, {"torch": torch_runtime,
                                                                           "openvino": openvino}))
    if choice.runtime == "openvino":
        return _chosen(openvino, choice)
    return _chosen(_torch(build(), choice.how, threads), choice)


def runtime_for(config: BackboneConfig, *, runtime: str = "auto", weights: str | os.PathLike | None = None,
                cache: str | os.PathLike | None = None, batch_size: int = 64, threads: int | None = None) -> Runtime:
    """The runtime that embeds exactly like ``config`` (a store's or a head's); refuses one that differs."""
    if config.precision == "int8":
        if runtime == "torch":
            raise ParameterError("runtime", "torch cannot run int8 vectors' model; use runtime=openvino or auto.")
        try:
            path = openvino_model(cache, config)
        except DamagedModelError as e:
            raise BackboneError(f"{e}. Embed the dataset again with precision=int8 to calibrate it anew.",
                                params=("precision",)) from None
        if path is None:
            raise BackboneError(f"the int8 model calibrated for {config.describe()} is not under "
                                f"{runtimes_root(cache)}; embed the dataset again with precision=int8 to calibrate "
                                "it.", params=("precision",))
        return _chosen(OpenVINORuntime(config, path, threads), RuntimeChoice("openvino", "int8"))
    made = load_runtime(config.request(weights), runtime=runtime, cache=cache, batch_size=batch_size,
                        threads=threads)
    config.refuse_unlike(made.config, weights)
    return made


def _torch(backbone, how: str, threads: int | None = None) -> Runtime:
    from .torch_runtime import TorchRuntime

    if threads:
        import torch

        torch.set_num_threads(threads)
    runtime = TorchRuntime(backbone)
    return _chosen(runtime, RuntimeChoice("torch", how))


def _chosen(runtime: Runtime, choice: RuntimeChoice) -> Runtime:
    runtime.choice = choice
    return runtime


def _int8(cache, config: BackboneConfig, fp32_path, calibrate: Calibrate, threads: int | None) -> Runtime:
    from .quantize import quantize_model

    fingerprint, crops = calibrate(config.preprocess)
    quantised = dataclasses.replace(config, precision="int8", calibration=fingerprint)
    path = converted_model(cache, quantised, lambda p: quantize_model(fp32_path, crops, p))
    return _chosen(OpenVINORuntime(quantised, path, threads), RuntimeChoice("openvino", "int8"))


def converted_model(cache, config: BackboneConfig, write: Callable[[Path], None]) -> Path:
    """``config``'s converted model, written by ``write`` when it is missing or damaged (with a warning)."""
    try:
        path = openvino_model(cache, config)
    except DamagedModelError as e:
        warnings.warn(f"{e}; converting it again.", RepairedModelWarning, stacklevel=3)
        path = None
    return path or save_openvino_model(cache, config, write)


def _gpu_present() -> bool:
    if not gpu_may_be_present():
        return False
    import torch

    return torch.cuda.is_available()


def _request(name, weights, image_size, precision, layers) -> str | None:
    """What names a network's configuration before its model is built (the crop and store dtype are applied to it
    afterwards: BackboneConfig.with_recipe); None when only building can tell."""
    from ..backbones.registry import HUB_PREFIXES, get_backbone_spec
    from ..backbones.weights import sha256_file

    if weights:
        if not os.path.isfile(weights):
            return None  # create_backbone says what is wrong with it
        fingerprint = sha256_file(weights)
    elif name.startswith(HUB_PREFIXES):
        return None
    else:
        path = get_backbone_spec(name).find_weights()
        if path is None:
            return None
        fingerprint = sha256_file(path)
    return json.dumps({"name": name, "weights": fingerprint, "image_size": image_size, "precision": precision,
                       "layers": layer_names(layers or FINAL), "featx": metadata.version("featx")}, sort_keys=True)
