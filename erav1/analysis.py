"""``erav1 analyze``: everything a reader looks at after training, written into a report folder.

It scores a run directory (report in ``RUN_DIR/report/``), any weights file, or
the published run (``published``: the clone's file, else downloaded once). One
prediction pass over the test split gives the accuracy, the class-wise accuracy
and the confusion matrix; the most instructive mistakes then get Grad-CAM for
their predicted and their true class. ROAD scores every CAM method on
a sample, with chapter 7's function and seed, so both give the same table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from erav1.errors import RunDirError
from erav1.main import Config
from erav1.published import choose_model
from erav1.utils import cam_trust, plots
from erav1.utils.checkpoint import atomic_write_json
from erav1.utils.data import load_data
from erav1.utils.evaluation import evaluate_model, load_model
from erav1.utils.gradcam import gradcam_misclassified, resolve_target_layer
from erav1.utils.misclassified import find_misclassified
from erav1.utils.rundir import CONFIG, find_weights, read_history, read_json

REPORT, METRICS = "report", "metrics.json"
PUBLISHED = "published"  # what `erav1 analyze` takes to score the published run


def default_report_dir(source: str | os.PathLike) -> Path:
    """RUN_DIR/report for a run directory; reports/NAME in the working folder for weights or the published run."""
    if str(source) == PUBLISHED:
        return Path("reports") / PUBLISHED
    path = Path(source).expanduser()
    return path / REPORT if path.is_dir() else Path("reports") / path.stem


def analyze_run(
    source: str | os.PathLike,
    n: int = 10,
    layer: str = "auto",
    order: str = "confidence",
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    allow_coarse: bool = False,
    out: str | os.PathLike | None = None,
    faithfulness_n: int = cam_trust.SAMPLE_SIZE,
    faithfulness_seed: int = cam_trust.SEED,
) -> dict[str, Any]:
    """Evaluate a model on its test split and write every figure and ``metrics.json`` into ``out``; return the metrics.

    ``source`` is a run directory, a weights file or ``"published"``. For a run, ``data``, ``data_dir`` and
    ``subset`` default to its own config.json, so a quick run is scored on the same images it was tested on;
    anything else is scored on the official CIFAR-10 test set unless ``data`` says otherwise.
    ``faithfulness_n`` test images get ROAD for every CAM method (0 skips it).
    """
    defaults = Config()
    if str(source) == PUBLISHED:
        source = choose_model(None, None, data_dir or defaults.data_dir).path
    source = Path(source).expanduser()
    if not source.exists():
        raise RunDirError(
            f"{source} does not exist; give a run directory written by 'erav1 train', a weights file "
            f"(.pt), or '{PUBLISHED}' for the book's published run"
        )
    if source.is_dir():
        find_weights(source)  # no model: fail before decoding any data
    config = read_json(source / CONFIG) if (source / CONFIG).is_file() else {}
    splits = load_data(
        data or config.get("data", defaults.data),
        data_dir or config.get("data_dir", defaults.data_dir),
        config.get("subset"),
    )
    loaded = load_model(source, device, precision, classes=splits.classes)
    resolve_target_layer(loaded.model, layer, splits.test.images.shape[-1], allow_coarse)  # a bad --layer fails now
    batch_size = config.get("eval_batch_size", 512)
    report = evaluate_model(loaded.model, splits.test, loaded.runtime, batch_size)
    flipped = evaluate_model(loaded.model, splits.test, loaded.runtime, batch_size, flip=True)
    items = find_misclassified(report.predictions, splits.test, n, order)
    cams = gradcam_misclassified(loaded.model, items, loaded.runtime, layer, allow_coarse)
    faithfulness = None
    if faithfulness_n:
        sample = cam_trust.Sample.stratified(report.predictions, splits.test, faithfulness_n, faithfulness_seed)
        faithfulness = cam_trust.measure_faithfulness(
            loaded.model, sample, loaded.runtime, layer=layer, seed=faithfulness_seed, allow_coarse=allow_coarse
        )
    history = read_history(source) if source.is_dir() else None  # a bare weights file has no training history

    figures = {}
    if history:
        figures |= {
            "loss_curves": plots.plot_loss_curves(history),
            "accuracy_curves": plots.plot_accuracy_curves(history),
            "lr_schedule": plots.plot_lr_schedule(history),
        }
    figures |= {
        "class_accuracy": plots.plot_class_accuracy(report),
        "confusion_matrix": plots.plot_confusion_matrix(report),
        "misclassified": plots.plot_misclassified(items, splits.classes),
        "gradcam": plots.plot_gradcam(cams, items, splits.classes),
    }
    out = Path(out) if out is not None else default_report_dir(source)
    for name, fig in figures.items():
        plots.save_figure(fig, out / f"{name}.png")

    metrics = {
        "model": str(source),
        "weights": str(loaded.source),
        "data": splits.source,
        "data_fingerprint": splits.fingerprints,
        "split": "test",
        **report.to_dict(),
        "flip_tta_accuracy": flipped.accuracy,  # a separate number, never the reported one
        "misclassified": {
            "order": order,
            "items": [
                {
                    "index": item.index,
                    "true": item.true,
                    "true_class": splits.classes[item.true],
                    "pred": item.pred,
                    "pred_class": splits.classes[item.pred],
                    "confidence": item.confidence,
                }
                for item in items
            ],
        },
        "gradcam": {"layer": cams.layer, "map_size": list(cams.map_size)},
        "faithfulness": faithfulness.to_dict() if faithfulness else None,  # ROAD, as in chapter 7
        "figures": [f"{name}.png" for name in figures],
    }
    atomic_write_json(metrics, out / METRICS)
    return metrics
