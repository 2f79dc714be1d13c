"""Chapter 7's measurements: every CAM method, ROAD faithfulness and the randomisation check, on real images.

"A trained model" is the published weights (book/results), whatever run they come from: no test
depends on their specific numbers, only on their being a trained ResNet18.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from book_checks import ROOT
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveMostRelevantFirst
from pytorch_grad_cam.metrics.road import ROADCombined, ROADLeastRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from scipy.stats import spearmanr

from erav1.errors import UsageError
from erav1.published import published_weights
from erav1.utils.cam_trust import (
    METHODS,
    RANDOM,
    Faithfulness,
    Sample,
    cams_by_layer,
    cams_by_method,
    describe_faithfulness,
    describe_layers,
    describe_randomisation,
    measure_faithfulness,
    random_maps,
    randomisation_check,
    randomisation_stages,
    rank_correlation,
    untie,
)
from erav1.utils.evaluation import Predictions, load_model, predict
from erav1.utils.gradcam import CAM_METHODS, compute_cams
from erav1.utils.plots import plot_cam_comparison, plot_randomisation, plot_road_curves
from erav1.utils.transforms import normalize


@pytest.fixture(scope="module")
def trained():
    """The published weights, fp32 on the CPU (so batched and single-image maps can be compared closely)."""
    return load_model(published_weights(), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def test_set(small_splits):
    return small_splits.test.take(torch.arange(0, 500, 5))  # 100 images, every class


@pytest.fixture(scope="module")
def predictions(trained, test_set) -> Predictions:
    return predict(trained.model, test_set, trained.runtime)


@pytest.fixture(scope="module")
def sample(predictions, test_set) -> Sample:
    return Sample.stratified(predictions, test_set, n=12, seed=0)


@pytest.fixture(scope="module")
def road_sample(predictions, test_set) -> Sample:
    """40 images, every mistake of the 100 and as many correct ones: enough power for a paired test.

    Measured on the published weights: Grad-CAM's combined ROAD score beats the random map's by
    about 0.14 with a per-image spread of about 0.19, so 40 images put it about 4.5 standard errors
    ahead. 12 images gave about 2.5 on average, and one seed's draw fell below 2 by chance.
    """
    return Sample.stratified(predictions, test_set, n=40, seed=0)


# --- every method --------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_image_sized_maps_in_0_1_batched_as_one_by_one(trained, test_set, predictions, method):
    images, classes = test_set.images[:3], predictions.preds[:3].tolist()  # a class with evidence in the image
    batched = compute_cams(trained.model, images, classes, trained.runtime, batch_size=2, method=method)
    assert batched.shape == (3, 32, 32) and batched.dtype == np.float32
    assert batched.min() >= 0.0 and batched.max() <= 1.0
    assert (np.ptp(batched.reshape(3, -1), axis=1) > 0.5).all(), "every map points somewhere"
    for i in range(3):
        alone = compute_cams(trained.model, images[i : i + 1], classes[i : i + 1], trained.runtime, method=method)
        np.testing.assert_allclose(batched[i], alone[0], atol=1e-4, err_msg=f"{method}, image {i}")
    assert all(not m._forward_hooks and not m._backward_hooks for m in trained.model.modules())
    # the package used plainly gives the same maps: our frozen weights and graph cut change nothing
    with CAM_METHODS[method].cam_class(model=trained.model, target_layers=[trained.model.layer3[-1]]) as cam:
        plain = cam(input_tensor=normalize(images), targets=[ClassifierOutputTarget(c) for c in classes])
    trained.model.zero_grad(set_to_none=True)
    np.testing.assert_allclose(batched, plain, atol=1e-4)


def test_an_unknown_method_names_the_valid_ones(trained, test_set, sample):
    expected = "unknown CAM method 'gradcam+++'; choose one of: gradcam, gradcam++, xgradcam, hirescam, layercam, "
    with pytest.raises(UsageError, match=re.escape(expected + "eigencam, scorecam")):
        compute_cams(trained.model, test_set.images[:1], [0], trained.runtime, method="gradcam+++")
    with pytest.raises(UsageError, match="scorecam"):
        measure_faithfulness(trained.model, sample, trained.runtime, methods=["grad-cam"])
    with pytest.raises(UsageError, match="non-empty list"):
        cams_by_method(trained.model, sample, trained.runtime, methods="gradcam")


def test_layers_are_compared_at_their_measured_sizes(trained, sample):
    comparison = cams_by_layer(trained.model, sample, trained.runtime)
    assert [c.layer for c in comparison.columns] == ["layer1", "layer2", "layer3", "layer4"]
    assert [c.map_shape[1:] for c in comparison.columns] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert comparison.columns[3].title == "layer4: 4x4 map"
    for column in comparison.columns:
        assert column.cams.shape == (len(sample), 32, 32)
    text = describe_layers(comparison)
    assert "| layer4 | 4x4 | 8x8 px | no (under 5x5) |" in text and "| layer3 | 8x8 | 4x4 px | yes |" in text
    # layer4's map is 4x4 cells upsampled: neighbouring pixels of one cell are nearly equal; layer1's are not
    roughness = [np.abs(np.diff(c.cams, axis=-1)).mean() for c in comparison.columns]
    assert roughness[3] < roughness[0]
    assert plot_cam_comparison(comparison, rows=2).axes[0].get_title() == "image"


# --- the sample ----------------------------------------------------------------------------


def test_the_sample_is_half_mistakes_seeded_and_from_the_test_set(predictions, test_set):
    one = Sample.stratified(predictions, test_set, n=10, seed=1)
    assert len(one) == 10 and (~one.correct).sum() == 5
    assert one.indices == sorted(one.indices) and len(set(one.indices)) == 10
    assert torch.equal(one.images, test_set.images[one.indices])
    assert one.pred == predictions.preds[one.indices].tolist()
    assert Sample.stratified(predictions, test_set, n=10, seed=1).indices == one.indices
    assert Sample.stratified(predictions, test_set, n=10, seed=2).indices != one.indices
    labels = one.labels()
    assert all(("→" in label) != bool(ok) for label, ok in zip(labels, one.correct, strict=True))


def test_a_sample_takes_every_mistake_when_there_are_few():
    logits = torch.eye(4)[[0, 1, 2, 0, 0, 0]]  # predicted 0,1,2,0,0,0
    targets = torch.tensor([0, 1, 2, 3, 0, 0])  # one mistake, image 3
    from erav1.utils.data import ImageSet

    dataset = ImageSet(torch.zeros(6, 3, 32, 32, dtype=torch.uint8), targets, ["a", "b", "c", "d"])
    sample = Sample.stratified(Predictions(logits, targets), dataset, n=4, seed=0)
    assert len(sample) == 4 and 3 in sample.indices and (~sample.correct).sum() == 1
    with pytest.raises(UsageError, match="at least 1"):
        Sample.stratified(Predictions(logits, targets), dataset, n=0)


# --- ROAD --------------------------------------------------------------------------------------


def test_untie_keeps_the_order_and_each_road_step_removes_the_share_it_names():
    """With ties (Grad-CAM's ReLU zeros), the package's threshold removes everything tied at once."""
    cams = np.zeros((2, 32, 32), dtype=np.float32)
    cams[:, :8] = np.linspace(0.1, 1.0, 8 * 32).reshape(8, 32)  # 75% of each map is exactly 0
    untied = untie(cams, seed=0)
    assert np.array_equal(np.argsort(untied[0, :8].ravel()), np.argsort(cams[0, :8].ravel()))
    assert (untied[:, 8:] < untied[:, :8].min()).all()  # the zeros still rank lowest
    assert not np.array_equal(untied[0], untied[1])  # ties broken at random...
    np.testing.assert_array_equal(untie(cams, seed=0), untied)  # ...with a seed

    def removed_share(cam: np.ndarray, percentile: int) -> float:
        step = RemoveMostRelevantFirst(percentile, lambda image, keep: keep)  # the imputer sees what is kept
        return 1 - float(step(torch.zeros(3, 32, 32), torch.from_numpy(cam)).mean())

    for percentile in (10, 50, 90):
        assert removed_share(untied[0], percentile) == pytest.approx(1 - percentile / 100, abs=1 / 1024)
    assert removed_share(cams[0], 10) == 1.0  # tied: "keep the lowest 10%" keeps nothing


def test_random_maps_are_seeded_blocky_and_in_0_1():
    maps = random_maps(3, (8, 8), (32, 32), seed=0)
    assert maps.shape == (3, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_array_equal(maps, random_maps(3, (8, 8), (32, 32), seed=0))
    assert not np.array_equal(maps, random_maps(3, (8, 8), (32, 32), seed=1))


def test_our_road_scores_are_the_packages(trained, sample):
    """Our per-step loop gives exactly the package's ROADCombined on the same (untied) maps and noise."""
    small = Sample(sample.indices[:4], sample.images[:4], sample.true[:4], sample.pred[:4], sample.classes)
    percentiles = (20, 50, 80)
    result = measure_faithfulness(
        trained.model, small, trained.runtime, ["gradcam"], seed=3, percentiles=percentiles, progress=False
    )
    assert result.removed == [20, 50, 80] and result.methods == ["gradcam", RANDOM]
    cams = untie(compute_cams(trained.model, small.images, small.pred, trained.runtime), seed=3)
    x = normalize(small.images)
    targets = [ClassifierOutputSoftmaxTarget(c) for c in small.pred]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        combined = ROADCombined(percentiles=sorted(percentiles, reverse=True))(x, cams, targets, trained.model)
    np.testing.assert_allclose(result.combined("gradcam"), combined, atol=1e-5)
    with torch.random.fork_rng(devices=[]):  # and the steps are what they say: 20% removed keeps 80%
        torch.manual_seed(3)
        after = ROADLeastRelevantFirst(80)(x, cams, targets, trained.model, return_diff=False)
    np.testing.assert_allclose(result.lerf["gradcam"][0], after, atol=1e-5)


def test_grad_cam_is_more_faithful_than_a_random_map_on_a_trained_model(trained, road_sample):
    """ROAD's combined score of the trained model's own Grad-CAM beats a random map's by two standard errors.

    CIFAR-10 has no object masks, so "a map that highlights the object" is the model's own Grad-CAM
    for its prediction: that is the claim under test, that Grad-CAM marks the pixels the model's
    confidence rests on. The baseline is a seeded random map with the same blockiness, which must
    score about 0. This can fail honestly: on a model that learned shortcuts spread over the whole
    image, if the imputation leaks what was removed, or by chance on a small sample, which is why
    the margin is in paired standard errors rather than a fixed number.
    """
    result = measure_faithfulness(trained.model, road_sample, trained.runtime, ["gradcam"], progress=False)
    diff = result.combined("gradcam") - result.combined(RANDOM)
    assert diff.mean() > 2 * diff.std(ddof=1) / np.sqrt(len(diff)), (result.table(), diff)
    assert result.morf_drop("gradcam").mean() > result.lerf_drop("gradcam").mean()
    assert abs(result.combined(RANDOM).mean()) < diff.mean()
    assert result.ranking()[0] == "gradcam"
    text = describe_faithfulness(result)
    assert "**Grad-CAM ranks first**" in text and "1 of the 1 methods score above it by more than two" in text
    table = result.to_dict()
    assert table["num_images"] == len(road_sample) and [r["method"] for r in table["table"]] == ["gradcam", RANDOM]
    assert table["percent_removed"] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    fig = plot_road_curves(result)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2


def test_faithfulness_text_comes_from_the_numbers():
    sample = Sample([1, 2], torch.zeros(2, 3, 32, 32, dtype=torch.uint8), [0, 1], [0, 0], ["cat", "dog"])
    ones = np.ones((2, 2))
    result = Faithfulness(
        ["gradcam", "eigencam", RANDOM],
        "layer3.1",
        [10, 90],
        np.array([0.9, 0.8]),
        morf={"gradcam": ones * 0.2, "eigencam": ones * 0.5, RANDOM: ones * 0.6},
        lerf={"gradcam": ones * 0.8, "eigencam": ones * 0.7, RANDOM: ones * 0.6},
        sample=sample,
        seed=0,
        seconds=1.0,
    )
    lerf_gradcam = result.lerf["gradcam"]
    lerf_gradcam[:, 1] = 0.7
    np.testing.assert_allclose(result.combined("gradcam"), [0.3, 0.25])  # ((0.7|0.6) - (0.1|0.1)) / 2
    text = describe_faithfulness(result)
    assert "ROAD on 2 test images (1 classified correctly, 1 wrongly)" in text
    assert "| Grad-CAM | 0.650 | 0.100 | **0.275** | 0.300 | 0.250 |" in text
    assert "**Grad-CAM ranks first**, with a combined score of 0.275, 0.175 ahead of EigenCAM" in text
    assert "The random map scores 0.000" in text and "2 of the 2 methods score above it by more than two" in text
    result.morf["eigencam"], result.lerf["eigencam"] = result.morf["gradcam"], result.lerf["gradcam"]
    assert "no method ranks first: 2 of them tie at a combined score of 0.275" in describe_faithfulness(result)


# --- the randomisation check -------------------------------------------------------------------


def test_stages_go_from_the_head_down_to_the_stem(trained):
    assert randomisation_stages(trained.model) == [
        ("linear", ["linear"]),
        ("layer4", ["layer4"]),
        ("layer3", ["layer3"]),
        ("layer2", ["layer2"]),
        ("layer1", ["layer1"]),
        ("stem", ["conv1", "bn1"]),
    ]


def test_rank_correlation_is_spearmans_and_zero_for_a_constant_map():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 8, 8)), rng.random((3, 8, 8))
    b[1] = a[1] ** 2  # same ranking
    b[2] = 0.5  # constant
    rho = rank_correlation(a, b)
    assert rho[0] == pytest.approx(spearmanr(a[0].ravel(), b[0].ravel()).statistic)
    assert rho[1] == pytest.approx(1.0) and rho[2] == 0.0
    assert rank_correlation(a[:1], -a[:1])[0] == pytest.approx(-1.0)


def test_randomising_the_top_stages_decorrelates_grad_cam_and_spares_the_model(trained, sample):
    """After re-initialising the classifier and layer4, the mean Spearman correlation with the trained
    model's Grad-CAM falls below 0.5, from 1.0 for the trained model itself.

    The trained model's map is deterministic, so its own correlation is exactly 1. A map that
    explains *this model* must change when the weights that turn features into class scores are
    random. The threshold is not 0 because maps of the same image share structure whatever the
    weights (edges, high-contrast regions), which Adebayo et al. found keeps some methods
    correlated; half of the trained model's value is a clear margin above that, and the test
    fails for a method that mostly shows the image.
    """
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    check = randomisation_check(trained.model, sample, trained.runtime, seed=0, progress=False)
    names = [c.name for c in check.maps.columns]
    assert names == ["trained", "linear", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert check.correlation["trained"] == pytest.approx(np.ones(len(sample)))
    assert check.correlation["layer4"].mean() < 0.5, describe_randomisation(check)
    assert all(torch.equal(v, before[k]) for k, v in trained.model.state_dict().items()), "the loaded model changed"
    again = randomisation_check(trained.model, sample, trained.runtime, seed=0, progress=False)
    np.testing.assert_array_equal(again.correlation["layer2"], check.correlation["layer2"])  # seeded
    text = describe_randomisation(check)
    assert f"over {len(sample)} images" in text and "| trained | 1.00 | 1.00 | 0 |" in text
    assert f"the mean correlation is {check.correlation['layer4'].mean():.2f}" in text
    assert len(plot_randomisation(check).axes[0].lines) >= len(sample)


def test_chapter_7_and_analyze_share_their_defaults():
    """`erav1 analyze` uses these constants, chapter 7 its parameters cell: the same table needs the same values."""
    from erav1.book.parameters import declared_parameters
    from erav1.utils.cam_trust import SAMPLE_SIZE, SEED

    declared = declared_parameters(ROOT / "book" / "07_trust.ipynb")
    assert declared["sample_size"] == SAMPLE_SIZE and declared["cam_seed"] == SEED
    assert declared["methods"] == list(METHODS) and declared["layer"] == "auto"
