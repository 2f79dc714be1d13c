import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from erav1.main import Config

ROOT = Path(__file__).resolve().parents[1]


def erav1(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "erav1", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_help_documents_every_option_with_its_default():
    out = erav1("train", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for f in fields(Config):
        if f.metadata.get("cli", True):
            assert "--" + f.name.replace("_", "-") in text, f.name
    assert "(default: 20)" in text and "(default: onecycle)" in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "vgg"], "invalid choice: 'vgg' (choose from 'resnet18', 'resnet34')"),
        (["--optimizer", "rmsprop"], "choose from 'sgd', 'adam', 'adamw'"),
        (["--scheduler", "poly"], "choose from 'onecycle', 'cosine', 'step', 'none'"),
        (["--epochs", "-2"], "--epochs: must be a positive integer, got -2"),
        (["--cutout-p", "2"], "cutout_p must be between 0 and 1"),
        (["--data", "/no/such/data.zip"], "data path /no/such/data.zip does not exist"),
        (["--resume", "/no/such/run"], "nothing to resume"),
    ],
)
def test_bad_values_get_one_clear_message(args, expected, tmp_path):
    out = erav1("train", "--run-dir", str(tmp_path / "run"), *args)
    assert out.returncode == 2
    assert expected in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_cli_trains_refuses_a_second_run_and_resumes_a_finished_one(cifar_zip, cache_dir, tmp_path):
    run_dir = tmp_path / "cli-run"
    common = ["--data", str(cifar_zip), "--data-dir", str(cache_dir), "--device", "cpu", "--precision", "fp32"]
    out = erav1("train", *common, "--subset", "100", "--epochs", "1", "--batch-size", "50", "--run-dir", str(run_dir))
    assert out.returncode == 0, out.stderr
    assert "epoch   1/1" in out.stdout and "final test accuracy" in out.stdout
    assert (run_dir / "model.pt").is_file()

    again = erav1("train", *common, "--subset", "100", "--epochs", "1", "--run-dir", str(run_dir))
    assert again.returncode == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr

    resumed = erav1("train", "--resume", str(run_dir), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "final test accuracy" in resumed.stdout


def test_readme_options_table_matches_the_config():
    from erav1.cli import options_table

    assert options_table() in (ROOT / "README.md").read_text()


def test_resume_refuses_options_that_would_change_the_run(tmp_path):
    from erav1.utils.checkpoint import atomic_write_json

    run_dir = tmp_path / "run"
    atomic_write_json(Config(run_dir=str(run_dir)).to_saved_dict(), run_dir / "config.json")
    out = erav1("train", "--resume", str(run_dir), "--epochs", "30", "--lr", "0.3")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--epochs, --lr cannot change" in out.stderr


def test_the_recipe_levers_are_documented_and_cannot_change_on_resume(tmp_path):
    from erav1.utils.checkpoint import atomic_write_json

    text = " ".join(erav1("train", "--help").stdout.split())
    for flag in ("--cutout-fill {zero,mean}", "--zero-init-residual, --no-zero-init-residual", "--ema-decay EMA_DECAY"):
        assert flag in text, flag
    for name in ("cutout_fill", "zero_init_residual", "ema_decay"):
        assert next(f.metadata["help"] for f in fields(Config) if f.name == name) in text, name
    run_dir = tmp_path / "run"
    atomic_write_json(Config(run_dir=str(run_dir)).to_saved_dict(), run_dir / "config.json")
    out = erav1(
        "train", "--resume", str(run_dir), "--cutout-fill", "mean", "--zero-init-residual", "--ema-decay", "0.99"
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--cutout-fill, --ema-decay, --zero-init-residual cannot change" in out.stderr
