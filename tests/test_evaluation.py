"""Metrics on hand-made predictions with known answers; evaluate_model and load_model on real data."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from erav1.errors import CheckpointError, RunDirError
from erav1.models import ResNet18
from erav1.utils.checkpoint import atomic_save
from erav1.utils.data import CIFAR10_CLASSES
from erav1.utils.evaluation import (
    EvaluationReport,
    Predictions,
    class_accuracy,
    confusion_matrix,
    evaluate_model,
    load_model,
    predict,
)
from erav1.utils.policies import Runtime
from erav1.utils.rundir import CHECKPOINT, CONFIG, WEIGHTS

CPU = Runtime.create("cpu", "fp32")

# 3 classes; class 2 never occurs as a true label.
TARGETS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 0])
PREDS = torch.tensor([0, 0, 1, 2, 1, 1, 0, 0])


def one_hot_logits(preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(preds, num_classes).float() * 5.0


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    expected = torch.tensor([[3, 1, 1], [1, 2, 0], [0, 0, 0]])
    confusion = confusion_matrix(PREDS, TARGETS, 3)
    assert confusion.dtype == torch.int64
    assert torch.equal(confusion, expected)


def test_class_accuracy_is_correct_over_total_per_true_class():
    acc = class_accuracy(PREDS, TARGETS, 3)
    assert acc.shape == (3,)
    assert acc[0].item() == pytest.approx(3 / 5)
    assert acc[1].item() == pytest.approx(2 / 3)
    assert torch.isnan(acc[2])  # no images of class 2: no accuracy, not 0%


def test_metrics_reject_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix(PREDS, TARGETS, 2)
    with pytest.raises(ValueError, match="predictions for"):
        confusion_matrix(PREDS[:3], TARGETS, 3)


def test_report_from_predictions_and_its_json():
    predictions = Predictions(one_hot_logits(PREDS, 3), TARGETS)
    report = EvaluationReport.from_predictions(predictions, ["a", "b", "c"])
    assert report.accuracy == pytest.approx(5 / 8)
    assert report.class_accuracy["a"] == pytest.approx(0.6)
    assert report.class_accuracy["b"] == pytest.approx(2 / 3)
    assert torch.equal(report.confusion, confusion_matrix(PREDS, TARGETS, 3))

    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))  # strict JSON: no NaN
    assert data["class_accuracy"] == {"a": pytest.approx(0.6), "b": pytest.approx(2 / 3), "c": None}
    assert data["confusion_matrix"] == [[3, 1, 1], [1, 2, 0], [0, 0, 0]]
    assert data["num_images"] == 8 and data["classes"] == ["a", "b", "c"]


def test_evaluate_model_makes_exactly_one_prediction_pass(small_splits):
    torch.manual_seed(0)
    model = ResNet18()
    test = small_splits.test.take(torch.arange(100))
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    report = evaluate_model(model, test, CPU, batch_size=40)
    assert calls == [40, 40, 20]  # one pass, in batches
    assert report.confusion.sum() == 100
    assert report.classes == test.classes
    assert report.accuracy == pytest.approx(report.predictions.accuracy())
    assert list(report.class_accuracy) == test.classes


def test_flip_tta_averages_the_logits_of_each_image_and_its_mirror(tiny_run, small_splits):
    from erav1.utils.data import ImageSet

    test = small_splits.test.take(torch.arange(64))
    mirrored = ImageSet(test.images.flip(3), test.labels, test.classes)
    plain, flipped = predict(tiny_run.model, test, CPU), predict(tiny_run.model, mirrored, CPU)
    tta = predict(tiny_run.model, test, CPU, batch_size=24, flip=True)
    torch.testing.assert_close(tta.logits, (plain.logits + flipped.logits) / 2, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(plain.logits, flipped.logits)  # a mirror is a different input to the model


def test_describe_flip_tta_reports_both_numbers_and_keeps_the_plain_one(tiny_run, small_splits):
    from erav1.utils.evaluation import describe_flip_tta

    plain = evaluate_model(tiny_run.model, small_splits.test, CPU)
    flipped = evaluate_model(tiny_run.model, small_splits.test, CPU, flip=True)
    text = describe_flip_tta(plain, flipped)
    assert f"**{100 * flipped.accuracy:.2f}%**" in text and f"{100 * plain.accuracy:.2f}%" in text
    changed = int((plain.predictions.preds != flipped.predictions.preds).sum())
    assert f"changed the prediction for {changed:,} of 500 images" in text
    assert "stays the plain one" in text


# --- load_model ---------------------------------------------------------------------


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, images) -> tuple[torch.Tensor, torch.Tensor]:
    return predict(a, images, CPU).logits, predict(b, images, CPU).logits


def test_load_model_from_a_run_directory(tiny_run, small_splits):
    loaded = load_model(tiny_run.run_dir, device="cpu", precision="fp32")
    assert loaded.source == tiny_run.run_dir / WEIGHTS
    assert loaded.config["model"] == "resnet18" and loaded.config["epochs"] == len(tiny_run.history)
    assert loaded.classes == tiny_run.classes
    assert not loaded.model.training
    ours, theirs = same_outputs(loaded.model, tiny_run.model, small_splits.test.take(torch.arange(64)))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_load_model_falls_back_to_the_last_checkpoint(tiny_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in (CONFIG, CHECKPOINT):
        shutil.copy(tiny_run.run_dir / name, unfinished / name)
    loaded = load_model(unfinished, device="cpu", precision="fp32")
    assert loaded.source == unfinished / CHECKPOINT
    assert loaded.classes == tiny_run.classes  # saved in the checkpoint
    for key, value in tiny_run.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_load_model_from_an_fp16_weights_file(tiny_run, small_splits, tmp_path):
    half = {k: v.half() if v.is_floating_point() else v for k, v in tiny_run.model.state_dict().items()}
    path = tmp_path / "resnet18-fp16.pt"
    torch.save(half, path)
    loaded = load_model(path, device="cpu", precision="fp32")
    assert loaded.config is None and loaded.source == path
    assert loaded.classes == list(CIFAR10_CLASSES)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    ours, theirs = same_outputs(loaded.model, tiny_run.model, small_splits.test.take(torch.arange(64)))
    assert (ours - theirs).abs().max() < 0.05 * theirs.abs().max()  # fp16 rounding, nothing more
    assert (ours.argmax(1) == theirs.argmax(1)).float().mean() >= 0.95


def test_load_model_errors_name_the_problem(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        load_model(tmp_path / "missing", device="cpu")

    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / CONFIG).write_text('{"model": "resnet18"}')
    with pytest.raises(RunDirError, match="holds no model"):
        load_model(empty, device="cpu")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(corrupt, device="cpu")

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": "somewhere else"}, foreign)
    with pytest.raises(CheckpointError, match="does not hold a model state_dict"):
        load_model(foreign, device="cpu")

    other_model = tmp_path / "other-model.pt"
    atomic_save({"fc.weight": torch.zeros(10, 512)}, other_model)
    with pytest.raises(CheckpointError, match="different architecture"):
        load_model(other_model, device="cpu")


def test_load_model_refuses_a_class_count_the_weights_do_not_have(tmp_path):
    path = tmp_path / "five-classes.pt"
    torch.save(ResNet18(num_classes=5).state_dict(), path)
    with pytest.raises(CheckpointError, match="weights for 5 classes, not for the 10 named"):
        load_model(path, device="cpu")
    loaded = load_model(path, device="cpu", classes=list("abcde"))
    assert loaded.classes == list("abcde")
    with pytest.raises(CheckpointError, match="weights for 5 classes, not for the 2 named"):
        load_model(path, device="cpu", classes=["x", "y"])
