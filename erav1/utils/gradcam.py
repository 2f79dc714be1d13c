"""Grad-CAM on misclassified images, through the ``grad-cam`` package (pytorch-grad-cam).

:func:`compute_cams` runs Grad-CAM or any other CAM method of the package
(:data:`CAM_METHODS`) in one place, so every method gets the same batching,
targets and side-effect handling.

Which layer a CAM is taken from decides what it can show.  On a 32x32 CIFAR
image ResNet18's ``layer4`` outputs 4x4, so every CAM cell stands for an 8x8 px
patch: too coarse to point at anything.  The default is therefore the deepest
residual block whose output is at least 5x5 *for the actual input size*, found
by a dry forward pass: ``layer3.1`` (``layer3[-1]``, 8x8) for ResNet18 at 32x32.

grad-cam 1.5.7 has side effects that this module contains: its constructor
calls ``model.eval()``, it needs autograd (so it fails under ``torch.no_grad()``),
it clears and fills parameter gradients, and its hooks live until released.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from erav1.errors import UsageError
from erav1.models.summary import feature_map_shapes, output_shapes, residual_blocks, restored_modes
from erav1.utils.data import iter_batches
from erav1.utils.misclassified import Misclassified
from erav1.utils.policies import Runtime, check_choice
from erav1.utils.text import Markdown
from erav1.utils.transforms import normalize

MIN_MAP_SIZE = 5  # a smaller map cannot localise anything on a 32x32 image


class CamMethod(NamedTuple):
    label: str  # how the book names it
    cam_class: type[BaseCAM]


# The package's CAM methods that the book compares; every one goes through :func:`compute_cams`.
CAM_METHODS: dict[str, CamMethod] = {
    "gradcam": CamMethod("Grad-CAM", GradCAM),
    "gradcam++": CamMethod("Grad-CAM++", GradCAMPlusPlus),
    "xgradcam": CamMethod("XGrad-CAM", XGradCAM),
    "hirescam": CamMethod("HiResCAM", HiResCAM),
    "layercam": CamMethod("LayerCAM", LayerCAM),
    "eigencam": CamMethod("EigenCAM", EigenCAM),
    "scorecam": CamMethod("Score-CAM", ScoreCAM),
}
# Score-CAM runs one forward pass per channel of the layer, batched by the package (16 by default, slow on
# a CPU), and its hooks keep every pass's activations until the next image batch: so few images per batch.
SCORECAM_BATCH, SCORECAM_IMAGES = 256, 8


def check_methods(methods: Sequence[str]) -> list[str]:
    """The method names, each checked against :data:`CAM_METHODS` (one message listing the valid ones)."""
    if isinstance(methods, str) or not methods:
        raise UsageError(f"methods must be a non-empty list of CAM method names from: {', '.join(CAM_METHODS)}")
    return [check_choice("CAM method", name, tuple(CAM_METHODS)) for name in methods]


# --- which layer -------------------------------------------------------------------------


def _deepest_block(shapes: dict[str, tuple[int, int, int]], min_size: int, image_size: int) -> str:
    fine = [name for name, (_, h, w) in shapes.items() if min(h, w) >= min_size]
    if not fine:
        raise UsageError(
            f"no residual block of this model outputs a map of at least {min_size}x{min_size} on "
            f"{image_size}x{image_size} images; name a layer and pass allow_coarse=True"
        )
    return fine[-1]


def choose_target_layer(model: nn.Module, image_size: int = 32, min_size: int = MIN_MAP_SIZE) -> str:
    """The deepest residual block whose output map is at least ``min_size`` x ``min_size``."""
    return _deepest_block(output_shapes(model, residual_blocks(model), image_size), min_size, image_size)


class TargetLayer(NamedTuple):
    name: str
    module: nn.Module
    map_size: tuple[int, int]  # (H, W) of its output for the given image size


def resolve_target_layer(
    model: nn.Module, layer: str = "auto", image_size: int = 32, allow_coarse: bool = False
) -> TargetLayer:
    """The Grad-CAM layer ``"auto"`` or a name stands for; refuses a map too coarse to localise anything."""
    if layer != "auto":
        try:
            model.get_submodule(layer)
        except AttributeError:
            choices = ", ".join(feature_map_shapes(model, image_size))
            raise UsageError(f"the model has no layer {layer!r}; use 'auto' or one of: {choices}") from None
    shapes = output_shapes(model, residual_blocks(model) if layer == "auto" else [layer], image_size)
    name = _deepest_block(shapes, MIN_MAP_SIZE, image_size) if layer == "auto" else layer
    if name not in shapes:
        raise UsageError(f"layer {name!r} outputs no (N, C, H, W) feature map, so Grad-CAM cannot use it")
    _, h, w = shapes[name]
    if min(h, w) < MIN_MAP_SIZE and not allow_coarse:
        raise UsageError(
            f"layer {name!r} outputs a {h}x{w} map on {image_size}x{image_size} images: each CAM cell covers "
            f"{image_size // h}x{image_size // w} px, too coarse to localise anything in the image. "
            f"Use layer='auto' (the deepest block with a map of at least {MIN_MAP_SIZE}x{MIN_MAP_SIZE}), "
            "or pass allow_coarse=True (--allow-coarse) to use it anyway."
        )
    return TargetLayer(name, model.get_submodule(name), (h, w))


# --- the CAMs ------------------------------------------------------------------------------


@contextlib.contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Freeze the weights, then restore every ``requires_grad`` flag and ``.grad`` tensor.

    grad-cam calls ``model.zero_grad()`` and ``backward()``; with frozen weights
    no weight gradient is computed, and the caller's own gradients survive.
    """
    saved = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        for p, _, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, requires_grad, grad in saved:
            p.requires_grad_(requires_grad)
            p.grad = grad


@contextlib.contextmanager
def _gradients_from(layer: nn.Module) -> Iterator[None]:
    """Start the autograd graph at ``layer``'s output: a CAM needs no gradient below it.

    The forward pass up to the layer then builds no graph, and the backward pass
    stops at the layer instead of running down to the input.  Registered before
    grad-cam's own hooks, which therefore see this output.
    """
    handle = layer.register_forward_hook(lambda module, inputs, output: output.detach().requires_grad_(True))
    try:
        yield
    finally:
        handle.remove()


def compute_cams(
    model: nn.Module,
    images_uint8: torch.Tensor,
    classes: Sequence[int] | torch.Tensor,
    runtime: Runtime,
    layer: str = "auto",
    batch_size: int = 64,
    allow_coarse: bool = False,
    method: str = "gradcam",
) -> np.ndarray:
    """CAMs ``(N, H, W)`` in [0, 1] of ``images_uint8[i]`` for target class index ``classes[i]``.

    ``method`` is Grad-CAM by default, or any other name in :data:`CAM_METHODS`.
    One ``ClassifierOutputTarget`` per image (a single target for a batch gives
    all-zero CAMs after the first image).  Computed in fp32 whatever the run's
    precision, so a batch and the same images one by one give the same maps.
    The model's modes, ``requires_grad`` flags and gradients are as before.
    """
    check_methods([method])
    target_layer = resolve_target_layer(model, layer, images_uint8.shape[-1], allow_coarse)
    return _cams(model, images_uint8, [int(c) for c in classes], runtime, target_layer, batch_size, method)


def _cams(
    model: nn.Module,
    images_uint8: torch.Tensor,
    targets: list[int],
    runtime: Runtime,
    target_layer: TargetLayer,
    batch_size: int = 64,
    method: str = "gradcam",
) -> np.ndarray:
    if len(targets) != len(images_uint8):
        raise ValueError(f"{len(targets)} target classes for {len(images_uint8)} images")
    if not targets:
        return np.zeros((0, *images_uint8.shape[-2:]), dtype=np.float32)
    cams = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))  # grad-cam needs autograd, even inside a caller's
        stack.enter_context(torch.enable_grad())  # torch.inference_mode() or torch.no_grad()
        stack.enter_context(restored_modes(model))
        stack.enter_context(_frozen_parameters(model))
        stack.enter_context(_gradients_from(target_layer.module))
        cam = stack.enter_context(CAM_METHODS[method].cam_class(model=model, target_layers=[target_layer.module]))
        if isinstance(cam, ScoreCAM):  # see SCORECAM_BATCH; its own tqdm bar on stderr is hidden
            cam.batch_size, batch_size = SCORECAM_BATCH, min(batch_size, SCORECAM_IMAGES)
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        for idx in iter_batches(len(targets), batch_size):
            x = normalize(images_uint8[idx].to(runtime.device)).contiguous(memory_format=runtime.memory_format)
            batch_targets = [ClassifierOutputTarget(c) for c in targets[idx]]
            try:
                cams.append(cam(input_tensor=x, targets=batch_targets))
            except IndexError as exc:  # GradCAM.__exit__ would swallow an IndexError and return nothing
                raise ValueError(f"a target class is out of range for the model's outputs ({exc})") from exc
    return np.concatenate(cams)


@dataclass
class GradCamResult:
    """CAMs for the predicted and the true class of each image, and their overlays."""

    layer: str
    map_size: tuple[int, int]  # the layer's feature map (H, W) before upsampling to the image
    cams_pred: np.ndarray  # (N, H, W) in [0, 1]
    cams_true: np.ndarray
    overlays_pred: np.ndarray  # (N, H, W, 3) RGB in [0, 1]
    overlays_true: np.ndarray
    images: np.ndarray  # (N, H, W, 3) RGB in [0, 1]


def overlay(images01: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """Heatmaps blended into the RGB images, as floats in [0, 1]."""
    blended = [show_cam_on_image(img, cam, use_rgb=True) for img, cam in zip(images01, cams, strict=True)]
    return np.asarray(blended, dtype=np.float32).reshape(images01.shape) / 255.0


def gradcam_misclassified(
    model: nn.Module,
    items: Sequence[Misclassified],
    runtime: Runtime,
    layer: str = "auto",
    allow_coarse: bool = False,
) -> GradCamResult:
    """Where the model looked for what it predicted, and for what the image really is.

    Both classes go through one batched Grad-CAM pass, as in :func:`compute_cams`.
    """
    if items:
        images = torch.stack([item.image for item in items]).cpu()
    else:
        images = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    target = resolve_target_layer(model, layer, images.shape[-1], allow_coarse)
    classes = [item.pred for item in items] + [item.true for item in items]
    cams = _cams(model, torch.cat([images, images]), classes, runtime, target)
    cams_pred, cams_true = cams[: len(items)], cams[len(items) :]
    images01 = images.permute(0, 2, 3, 1).float().numpy() / 255.0
    return GradCamResult(
        layer=target.name,
        map_size=target.map_size,
        cams_pred=cams_pred,
        cams_true=cams_true,
        overlays_pred=overlay(images01, cams_pred),
        overlays_true=overlay(images01, cams_true),
        images=images01,
    )


def describe_target_layer(model: nn.Module, image_size: int = 32, min_size: int = MIN_MAP_SIZE) -> Markdown:
    """Why the chosen layer: its map size and cell size against the last block's, measured for ``image_size``."""
    chosen = choose_target_layer(model, image_size, min_size)
    shapes = output_shapes(model, residual_blocks(model), image_size)
    last = list(shapes)[-1]

    def cell(name: str) -> str:
        _, h, w = shapes[name]
        return f"its map is {h}x{w}, so each CAM cell covers {image_size // h}x{image_size // w} px"

    text = f"Grad-CAM uses **{chosen}**: {cell(chosen)} of the {image_size}x{image_size} image."
    if last != chosen:
        text += (
            f" For the last block, {last}, {cell(last)}: below the {min_size}x{min_size} minimum, too coarse "
            "to point at a part of an object."
        )
    return Markdown(text)


def describe_gradcam(result: GradCamResult) -> Markdown:
    """Which layer the CAMs come from, how coarse they are, and whether the two CAMs of an image agree."""
    h, w = result.map_size
    size = result.images.shape[1]
    peaks = [np.unravel_index(cam.argmax(), cam.shape) for cam in (*result.cams_pred, *result.cams_true)]
    n = len(result.cams_pred)
    same = sum(
        abs(a[0] - b[0]) <= size // h and abs(a[1] - b[1]) <= size // w
        for a, b in zip(peaks[:n], peaks[n:], strict=True)
    )
    return Markdown(
        f"CAMs from layer **{result.layer}**, whose {h}x{w} map is upsampled to {size}x{size} px "
        f"(each cell covers {size // h}x{size // w} px). For {same} of {n} images the predicted-class and the "
        "true-class CAM peak within one cell of each other."
    )
