"""Grad-CAM through pytorch-grad-cam: the target layer, the maps, and no side effects on the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from erav1.errors import Erav1Error, UsageError
from erav1.models import ResNet18, ResNet34
from erav1.utils.evaluation import predict
from erav1.utils.gradcam import (
    choose_target_layer,
    compute_cams,
    feature_map_shapes,
    gradcam_misclassified,
)
from erav1.utils.misclassified import find_misclassified
from erav1.utils.policies import Runtime
from erav1.utils.transforms import normalize

CPU = Runtime.create("cpu", "fp32")


@pytest.fixture(scope="module")
def untrained() -> torch.nn.Module:
    torch.manual_seed(0)
    return CPU.prepare(ResNet18()).eval()


@pytest.fixture(scope="module")
def images(small_splits) -> torch.Tensor:
    """Four real test images of four different classes."""
    return small_splits.test.images[torch.arange(0, 200, 50)]


def test_feature_map_shapes_cover_stem_stages_and_blocks(untrained):
    shapes = feature_map_shapes(untrained)
    assert list(shapes)[:3] == ["conv1", "bn1", "layer1"]
    assert shapes["conv1"] == (64, 32, 32)
    assert shapes["layer2.1"] == (128, 16, 16)
    assert shapes["layer3"] == shapes["layer3.1"] == (256, 8, 8)
    assert shapes["layer4"] == (512, 4, 4)
    assert list(shapes)[-3:] == ["layer4", "layer4.0", "layer4.1"]
    assert feature_map_shapes(untrained, image_size=64)["layer4"] == (512, 8, 8)


def test_auto_layer_is_the_deepest_block_of_at_least_5x5(untrained):
    assert choose_target_layer(untrained) == "layer3.1"  # layer3[-1], 8x8
    assert choose_target_layer(untrained, image_size=64) == "layer4.1"  # 8x8 at 64 px
    assert choose_target_layer(ResNet34()) == "layer3.5"


def test_the_dry_pass_leaves_a_training_model_alone():
    model = ResNet18().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choose_target_layer(model)
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm statistics untouched


def test_layer4_is_refused_as_too_coarse(untrained, images):
    with pytest.raises(ValueError, match=r"4x4 map .* too coarse to localise anything") as caught:
        compute_cams(untrained, images, [0] * len(images), CPU, layer="layer4")
    assert isinstance(caught.value, Erav1Error)
    assert "allow_coarse=True" in str(caught.value)
    coarse = compute_cams(untrained, images, [0] * len(images), CPU, layer="layer4", allow_coarse=True)
    assert coarse.shape == (len(images), 32, 32)


def test_unknown_layer_lists_the_choices(untrained, images):
    with pytest.raises(UsageError, match=r"no layer 'layer9'.*layer3\.1"):
        compute_cams(untrained, images, [0] * len(images), CPU, layer="layer9")


def test_cams_have_the_image_size_and_values_in_0_1(untrained, images):
    cams = compute_cams(untrained, images, list(range(len(images))), CPU)
    assert cams.shape == (len(images), 32, 32) and cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert np.isclose(cams.reshape(len(images), -1).max(axis=1), 1.0, atol=1e-4).any()  # min-max scaled


def test_trained_model_uses_a_named_layer(tiny_run, images):
    model, targets = tiny_run.model, [0, 1, 2, 3]
    auto = compute_cams(model, images, targets, CPU)
    named = compute_cams(model, images, targets, CPU, layer="layer3.1")
    other = compute_cams(model, images, targets, CPU, layer="layer2.1")
    np.testing.assert_array_equal(auto, named)
    assert not np.allclose(auto, other)


def test_trained_model_batched_equals_one_by_one_for_every_image(tiny_run, images):
    model = tiny_run.model
    targets = [3, 1, 4, 1]
    batched = compute_cams(model, images, targets, CPU, batch_size=3)  # a full and a ragged batch
    for i in range(len(images)):
        alone = compute_cams(model, images[i : i + 1], targets[i : i + 1], CPU)
        np.testing.assert_allclose(batched[i], alone[0], atol=1e-4, err_msg=f"image {i}")


def test_trained_model_matches_plain_pytorch_grad_cam(tiny_run, images):
    """The same maps as the library used the textbook way (our freezing and graph cut change nothing)."""
    model = tiny_run.model
    targets = [0, 2, 8, 9]
    ours = compute_cams(model, images, targets, CPU)
    with GradCAM(model=model, target_layers=[model.layer3[-1]]) as cam:
        plain = cam(input_tensor=normalize(images), targets=[ClassifierOutputTarget(c) for c in targets])
    model.zero_grad(set_to_none=True)
    np.testing.assert_allclose(ours, plain, atol=1e-5)


def test_trained_model_cams_are_not_constant(tiny_run, small_splits):
    test = small_splits.test.take(torch.arange(0, 500, 4))  # 125 images, all classes
    items = find_misclassified(predict(tiny_run.model, test, CPU), test, n=10)
    assert len(items) == 10
    result = gradcam_misclassified(tiny_run.model, items, CPU)
    spread = np.ptp(result.cams_pred.reshape(len(items), -1), axis=1)
    assert (spread > 0.5).mean() >= 0.8, spread  # they point somewhere
    assert not np.allclose(result.cams_pred, result.cams_true)  # and each class somewhere else


def test_mode_requires_grad_and_gradients_are_restored(images):
    model = ResNet18().train()
    model.layer1.requires_grad_(False)
    model.bn1.eval()  # a model in mixed modes
    grad = torch.ones_like(model.linear.weight)
    model.linear.weight.grad = grad
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}

    compute_cams(model, images, [0] * len(images), CPU)

    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.linear.weight.grad is grad and torch.equal(grad, torch.ones_like(grad))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "linear.weight")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())  # hooks released


def test_works_under_no_grad_and_inference_mode(untrained, images):
    images, targets = images[:1], [1]
    expected = compute_cams(untrained, images, targets, CPU)
    with torch.no_grad():
        np.testing.assert_array_equal(compute_cams(untrained, images, targets, CPU), expected)
        assert not torch.is_grad_enabled()  # the caller's mode is back
    with torch.inference_mode():
        np.testing.assert_array_equal(compute_cams(untrained, images, targets, CPU), expected)
        assert torch.is_inference_mode_enabled()


def test_out_of_range_class_is_an_error_not_silence(untrained, images):
    with pytest.raises(ValueError, match="out of range"):
        compute_cams(untrained, images, [10] * len(images), CPU)
    with pytest.raises(ValueError, match="4 images"):
        compute_cams(untrained, images, [1, 2], CPU)


def test_gradcam_misclassified_gives_both_classes_and_overlays(untrained, small_splits):
    test = small_splits.test.take(torch.arange(0, 500, 50))
    items = find_misclassified(predict(untrained, test, CPU), test, n=3)
    result = gradcam_misclassified(untrained, items, CPU)
    assert result.layer == "layer3.1" and result.map_size == (8, 8)
    for cams in (result.cams_pred, result.cams_true):
        assert cams.shape == (3, 32, 32)
    for array in (result.overlays_pred, result.overlays_true, result.images):
        assert array.shape == (3, 32, 32, 3) and array.min() >= 0.0 and array.max() <= 1.0
    stacked = torch.stack([item.image for item in items])
    np.testing.assert_allclose(result.images, stacked.permute(0, 2, 3, 1).numpy() / 255.0, atol=1e-6)
    np.testing.assert_allclose(
        result.cams_true, compute_cams(untrained, stacked, [item.true for item in items], CPU), atol=1e-5
    )
    np.testing.assert_allclose(
        result.cams_pred, compute_cams(untrained, stacked, [item.pred for item in items], CPU), atol=1e-5
    )
    assert not np.allclose(result.overlays_pred, result.images)  # a heatmap was drawn on them


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compares CUDA's Grad-CAM with the CPU's")
def test_gradcam_on_cuda_equals_gradcam_on_the_cpu_for_the_published_weights(small_splits):
    """The same weights and images give the same maps on both devices, whatever CUDA's kernels (cuDNN, TF32)."""
    from erav1.published import PUBLISHED_WEIGHTS, RESULTS_DIR
    from erav1.utils.evaluation import load_model

    weights = Path(__file__).resolve().parents[1] / RESULTS_DIR / PUBLISHED_WEIGHTS
    first = small_splits.test.take(torch.arange(64))
    maps, predicted = {}, None
    for device in ("cpu", "cuda"):
        loaded = load_model(weights, device=device, precision="fp32")
        if predicted is None:  # the CPU's predicted classes are the targets on both devices
            predicted = predict(loaded.model, first, loaded.runtime).preds
        maps[device] = compute_cams(loaded.model, first.images, predicted, loaded.runtime)
    images = first.images
    correlations = [  # a map that is constant (all zero) on both devices has no correlation, and is equal
        1.0 if np.allclose(c, g, atol=1e-6) else np.corrcoef(c.ravel(), g.ravel())[0, 1]
        for c, g in zip(maps["cpu"], maps["cuda"], strict=True)
    ]
    largest = float(np.abs(maps["cpu"] - maps["cuda"]).max())
    print(
        f"\nGrad-CAM, CUDA against CPU, {len(images)} test images: correlation min {min(correlations):.6f}, "
        f"mean {np.mean(correlations):.6f}; largest difference {largest:.2e}"
    )
    assert min(correlations) >= 0.999
