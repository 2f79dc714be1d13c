"""``erav1 analyze`` on a short real run: every file, and one clear line when it cannot run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from erav1.analysis import METRICS, REPORT
from erav1.cli import main
from erav1.utils.rundir import CONFIG

FIGURES = [
    "loss_curves",
    "accuracy_curves",
    "lr_schedule",
    "class_accuracy",
    "confusion_matrix",
    "misclassified",
    "gradcam",
]


@pytest.fixture
def run_dir(tiny_run, tmp_path):
    """A copy of the tiny run, so its report lands in this test's folder."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, copy, ignore=shutil.ignore_patterns("last.pt", "tensorboard"))
    return copy


def test_analyze_writes_every_figure_and_the_metrics(run_dir, tiny_run, capsys):
    assert (
        main(["analyze", str(run_dir), "--n", "5", "--device", "cpu", "--precision", "fp32", "--faithfulness-n", "0"])
        == 0
    )

    report = run_dir / REPORT
    assert sorted(p.name for p in report.iterdir()) == sorted([f"{name}.png" for name in FIGURES] + [METRICS])
    for name in FIGURES:
        png = (report / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name

    metrics = json.loads((report / METRICS).read_text())
    assert metrics["accuracy"] == pytest.approx(tiny_run.final["test_acc"], abs=1e-6)  # the same 500 test images
    assert metrics["num_images"] == 500
    assert sum(map(sum, metrics["confusion_matrix"])) == 500
    assert list(metrics["class_accuracy"]) == tiny_run.classes
    mistakes = metrics["misclassified"]["items"]
    assert len(mistakes) == 5 and metrics["misclassified"]["order"] == "confidence"
    assert all(m["true"] != m["pred"] and m["pred_class"] == tiny_run.classes[m["pred"]] for m in mistakes)
    assert [m["confidence"] for m in mistakes] == sorted((m["confidence"] for m in mistakes), reverse=True)
    assert metrics["gradcam"] == {"layer": "layer3.1", "map_size": [8, 8]}
    assert metrics["faithfulness"] is None  # --faithfulness-n 0
    assert metrics["figures"] == [f"{name}.png" for name in FIGURES]

    out = capsys.readouterr().out
    assert "layer3.1 (8x8)" in out and str(report) in out


def test_analyze_writes_chapter_7s_road_table(run_dir, small_splits, capsys):
    """The same function, sample and seed as chapter 7: analyze's table is the one the chapter would show."""
    from erav1.utils.cam_trust import METHODS, RANDOM, Sample, measure_faithfulness
    from erav1.utils.evaluation import load_model, predict

    argv = [
        "analyze",
        str(run_dir),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--faithfulness-n",
        "2",
        "--faithfulness-seed",
        "1",
    ]
    assert main(argv) == 0
    road = json.loads((run_dir / REPORT / METRICS).read_text())["faithfulness"]
    assert road["num_images"] == 2 and road["seed"] == 1 and road["layer"] == "layer3.1"
    assert sorted(row["method"] for row in road["table"]) == sorted([*METHODS, RANDOM])
    loaded = load_model(run_dir, device="cpu", precision="fp32")
    sample = Sample.stratified(predict(loaded.model, small_splits.test, loaded.runtime), small_splits.test, 2, seed=1)
    chapter = measure_faithfulness(loaded.model, sample, loaded.runtime, seed=1, progress=False).to_dict()
    assert road == json.loads(json.dumps(chapter))
    best = next(row["label"] for row in road["table"] if row["method"] != RANDOM)
    assert f"ROAD on 2 images ranks {best} first" in capsys.readouterr().out


def test_analyze_scores_a_weights_file_and_writes_its_report_where_asked(
    run_dir, official_subset_zip, tmp_path, capsys
):
    """A bare weights file has no config.json: it is scored on the data given (here 300 official test images)."""
    out = tmp_path / "weights-report"
    args = ["analyze", str(run_dir / "model.pt"), "--out", str(out), "--precision", "fp32"]
    args += quick_on(official_subset_zip, tmp_path / "cache")
    assert main(args) == 0
    metrics = json.loads((out / METRICS).read_text())
    assert metrics["num_images"] == 300 and metrics["model"] == str(run_dir / "model.pt")
    assert "loss_curves.png" not in metrics["figures"], "a weights file has no training history to plot"
    assert metrics["data"] == f"{official_subset_zip.name} (600 .png files)"
    assert set(metrics["data_fingerprint"]) == {"train", "test"}
    assert str(out) in capsys.readouterr().out and not (run_dir / REPORT).exists()


def test_analyze_published_scores_the_published_weights(official_subset_zip, tmp_path, monkeypatch):
    """'published' is the book's published run (in a clone, book/results/resnet18_cifar10.pt)."""
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "published", *quick_on(official_subset_zip, tmp_path / "cache")]) == 0
    metrics = json.loads((tmp_path / "reports" / "published" / METRICS).read_text())
    assert Path(metrics["weights"]).name == "resnet18_cifar10.pt"
    assert metrics["accuracy"] > 0.8, "a trained model, not a fresh one, on 300 official test images"


def test_a_missing_run_or_model_is_one_clear_line(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / CONFIG).write_text('{"model": "resnet18"}')
    assert main(["analyze", str(unfinished)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no model" in err


def test_a_too_coarse_layer_is_refused_before_any_work(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--layer", "layer4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "4x4 map" in err and "too coarse" in err and "--allow-coarse" in err
    assert not (run_dir / REPORT).exists()


def quick_on(images: Path, cache: Path) -> list[str]:
    """A quick report on the CPU: 3 misclassified images, no ROAD, scored on ``images``."""
    return ["--device", "cpu", "--n", "3", "--data", str(images), "--data-dir", str(cache), "--faithfulness-n", "0"]
