"""Every fault of issue 4, provoked for real: interrupts, kills, bad checkpoints, a diverging run, broken data.

CLI-level faults run the real ``python -m erav1`` in a subprocess and check the exit status, the one-line
message on stderr, that no traceback is shown, and that no file was lost or changed (sha256 snapshots).
The kill tests strike real training processes at several points, resume them, and compare the final
weights and history with one uninterrupted run of the same settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest
import torch
from PIL import Image

from erav1.errors import CheckpointError, DataError
from erav1.models import get_model
from erav1.utils.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, load_weights
from erav1.utils.data import load_image_folder
from erav1.utils.policies import build_scheduler

ROOT = Path(__file__).resolve().parents[1]
TIMING_FIELDS = {"seconds", "train_seconds", "images_per_s"}
EPOCHS = 3
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- running the real CLI -------------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    """One math thread per run unless told otherwise: on a busy shared CPU, two threads spin 5-8x slower."""
    return {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def erav1(*args: object) -> subprocess.CompletedProcess:
    """``python -m erav1 ARGS`` in a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "erav1", *map(str, args)], env=cli_env(), capture_output=True, text=True, timeout=600
    )


def train_args(data: Path, cache_dir: Path, run_dir: Path, **overrides: object) -> list[str]:
    """``train`` options for a run of a few seconds: batches of 8, fp32 on the CPU."""
    values = dict(
        data=data,
        data_dir=cache_dir,
        epochs=EPOCHS,
        batch_size=8,
        lr=0.05,
        device="cpu",
        precision="fp32",
        run_dir=run_dir,
    )
    values.update(overrides)
    return ["train", *[item for k, v in values.items() for item in (f"--{k.replace('_', '-')}", str(v))]]


def assert_clean_failure(result: subprocess.CompletedProcess, *expected: str, status: int = 2) -> str:
    """The exit status, no traceback, and one 'erav1[ train]: error:' line that says each of ``expected``."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == status, (result.returncode, result.stdout[-2000:], result.stderr)
    errors = [line for line in result.stderr.splitlines() if re.match(r"erav1( train)?: error: ", line)]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], f"{text!r} not in: {errors[0]}"
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``: equal snapshots mean nothing was lost or changed."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class LiveRun:
    """A training subprocess whose output is read as it comes, so a test can strike at a chosen moment."""

    def __init__(self, argv: list[str], **popen: object) -> None:
        self.proc = subprocess.Popen(argv, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)
        self._chunks: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: os.read(self.proc.stdout.fileno(), 65536), b""):
            self._chunks.append(chunk.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self._chunks)

    def wait_until(self, moment: Callable[[str], bool], timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not moment(self.output):
            if self.proc.poll() is not None:
                self._reader.join(timeout=10)
                if moment(self.output):
                    break  # the moment came with the last output: too late to strike inside it
                raise AssertionError(f"the run ended before the moment to strike:\n{self.output[-3000:]}")
            assert time.monotonic() < deadline, f"timed out waiting to strike:\n{self.output[-3000:]}"
            time.sleep(0.005)
        assert self.proc.poll() is None, f"the run ended before the strike:\n{self.output[-3000:]}"

    def strike(self, sig: signal.Signals) -> int:
        """Send ``sig`` and return the exit status (negative: killed by a signal)."""
        self.proc.send_signal(sig)
        return self.finish()

    def finish(self) -> int:
        """Wait for the process to end; return its exit status, with all its output read."""
        status = self.proc.wait(timeout=300)
        self._reader.join(timeout=10)
        return status


def mid_epoch(epoch: int, fallback_s: float) -> Callable[[str], bool]:
    """True once epoch ``epoch`` is under way: its progress bar shows k of n images with 0 < k < n,
    or ``fallback_s`` has passed since its bar appeared (an epoch too quick for tqdm to redraw)."""
    started: list[float] = []

    def moment(output: str) -> bool:
        bars = re.findall(rf"epoch {epoch}:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)", output)
        if bars and not started:
            started.append(time.monotonic())
        if any(0 < int(k) < int(n) for k, n in bars):
            return True
        return bool(started) and time.monotonic() - started[0] >= fallback_s

    return moment


def after_checkpoint(epoch: int) -> Callable[[str], bool]:
    """True once the summary line of ``epoch`` is out: it prints after last.pt and history.json are written."""
    return lambda output: re.search(rf"epoch\s+{epoch}/{EPOCHS}\s+train loss", output) is not None


def saved_epochs(run_dir: Path) -> int:
    """Epochs in last.pt (0 when there is none); loading it also proves it is intact."""
    path = run_dir / "last.pt"
    return len(load_checkpoint(path)["history"]) if path.exists() else 0


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING_FIELDS} for record in history]


def assert_same_result(run_dir: Path, reference: Path) -> None:
    """Identical final weights, tensor for tensor, and an identical history except for timings."""
    got = torch.load(run_dir / "model.pt", weights_only=True)
    want = torch.load(reference / "model.pt", weights_only=True)
    assert got.keys() == want.keys()
    unequal = [k for k in want if not torch.equal(got[k], want[k])]
    assert not unequal, f"{len(unequal)} tensors differ, e.g. {unequal[:3]}"
    history = json.loads((run_dir / "history.json").read_text())
    assert without_timing(history) == without_timing(json.loads((reference / "history.json").read_text()))
    assert len(history) == EPOCHS
    assert not list(run_dir.glob(".*.tmp")), "temp files of killed writes were left behind"


def resume_to_the_end(run_dir: Path, epochs_saved: int) -> None:
    result = erav1("train", "--resume", run_dir, "--no-progress")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    if epochs_saved:
        assert f"resuming {run_dir} after epoch {epochs_saved}/{EPOCHS}" in result.stdout


# --- real data and the uninterrupted reference --------------------------------------------------------------


@pytest.fixture(scope="module")
def jpegs(cifar_zip) -> dict[str, list[bytes]]:
    """Eight real CIFAR-10 images per class, read from the test copy (JPEGs beside the repo, else PNGs)."""
    with zipfile.ZipFile(cifar_zip) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith((".jpg", ".png")) and n.startswith("train/"))
        return {c: [archive.read(n) for n in [n for n in names if n.startswith(f"train/{c}/")][:8]] for c in CLASSES}


def write_image_folder(
    root: Path, jpegs: dict[str, list[bytes]], classes: list[str], train: int = 2, test: int = 1
) -> Path:
    """train/<class>/ and test/<class>/ with ``train`` and ``test`` real images per class."""
    for split, images in (("train", slice(0, train)), ("test", slice(train, train + test))):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i, data in enumerate(jpegs[c][images]):
                (root / split / c / f"{i:04d}.jpg").write_bytes(data)
    return root


@pytest.fixture(scope="module")
def run_args(jpegs, tmp_path_factory) -> Callable[..., list[str]]:
    """``train`` options on 40 real training and 40 real test images (4 per class), with their own cache."""
    data = write_image_folder(tmp_path_factory.mktemp("small-cifar") / "data", jpegs, CLASSES, train=4, test=4)
    cache_dir = tmp_path_factory.mktemp("cache")
    return lambda run_dir, **overrides: train_args(data, cache_dir, run_dir, **overrides)


@pytest.fixture(scope="module")
def reference_run(run_args, tmp_path_factory) -> Path:
    """One uninterrupted run that every interrupted one must reproduce exactly."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = erav1(*run_args(run_dir))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    return run_dir


@pytest.fixture(scope="module")
def strike_after_s(reference_run) -> float:
    """A third of an epoch's training time, measured on this machine."""
    history = json.loads((reference_run / "history.json").read_text())
    return min(r["train_seconds"] for r in history) / 3


# --- kill -9 and Ctrl-C -----------------------------------------------------------------------------

# Each scenario, one tuple per process start: (moment to kill, its epoch, epochs last.pt holds after the kill).
KILL_SCENARIOS = {
    "mid-epoch 1": [("mid", 1, 0)],
    "right after checkpoint 1": [("after", 1, 1)],
    "mid-epoch 2, then mid-epoch 3 of the resumed run": [("mid", 2, 1), ("mid", 3, 2)],
}


@pytest.mark.parametrize("scenario", list(KILL_SCENARIOS))
def test_kill_9_then_resume_gives_the_uninterrupted_result(scenario, reference_run, strike_after_s, run_args, tmp_path):
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "erav1", *run_args(run_dir)]
    for kind, epoch, expected_saved in KILL_SCENARIOS[scenario]:
        run = LiveRun(argv)
        run.wait_until(mid_epoch(epoch, strike_after_s) if kind == "mid" else after_checkpoint(epoch))
        assert run.strike(signal.SIGKILL) == -signal.SIGKILL
        assert saved_epochs(run_dir) == expected_saved
        argv = [sys.executable, "-m", "erav1", "train", "--resume", str(run_dir)]
    resume_to_the_end(run_dir, expected_saved)
    assert_same_result(run_dir, reference_run)


# Run in a subprocess: torch.save gets half of checkpoint N's bytes onto disk, then the process gets a signal.
SIGNAL_WHILE_WRITING_CHECKPOINT = """
import io, os, signal, sys
import torch
from erav1.utils.checkpoint import CHECKPOINT_FORMAT

real_save, doomed_epoch, sig = torch.save, int(sys.argv[1]), getattr(signal, sys.argv[2])

def save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT and obj["epoch"] == doomed_epoch:
        data = io.BytesIO()
        real_save(obj, data, *args, **kwargs)
        f.write(data.getvalue()[: len(data.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), sig)
    return real_save(obj, f, *args, **kwargs)

torch.save = save
from erav1.cli import main
sys.exit(main(sys.argv[3:]))
"""


def signal_while_writing_checkpoint(epoch: int, sig: signal.Signals, args: list[str]) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", SIGNAL_WHILE_WRITING_CHECKPOINT, str(epoch), sig.name, *args, "--no-progress"]
    return subprocess.run(argv, env=cli_env(), capture_output=True, text=True, timeout=600)


def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one(reference_run, run_args, tmp_path):
    run_dir = tmp_path / "run"
    killed = signal_while_writing_checkpoint(2, signal.SIGKILL, run_args(run_dir))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = list(run_dir.glob(".last.pt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size < (run_dir / "last.pt").stat().st_size
    assert saved_epochs(run_dir) == 1  # the epoch-1 checkpoint is whole, not replaced by half of epoch 2's
    resume_to_the_end(run_dir, 1)
    assert_same_result(run_dir, reference_run)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_while_writing_a_checkpoint_keeps_the_previous_one_and_counts_it_right(sig, run_args, tmp_path):
    run_dir = tmp_path / "run"
    interrupted = signal_while_writing_checkpoint(2, sig, run_args(run_dir))
    assert interrupted.returncode == 130 and "Traceback" not in interrupted.stdout + interrupted.stderr
    assert (
        f"interrupted: 1 of {EPOCHS} epochs are saved in {run_dir / 'last.pt'}. "
        f"Resume with: erav1 train --resume {shlex.quote(str(run_dir))}"
    ) in interrupted.stdout
    assert saved_epochs(run_dir) == 1
    assert not list(run_dir.glob(".*.tmp")), "an interrupted write must remove its temp file"


def test_ctrl_c_keeps_the_checkpoint_and_prints_the_exact_resume_command(
    reference_run, strike_after_s, run_args, tmp_path
):
    run_dir = tmp_path / "my runs" / "ctrl c"  # spaces: the printed command must still work when pasted
    run = LiveRun([sys.executable, "-m", "erav1", *run_args(run_dir)])
    run.wait_until(mid_epoch(2, strike_after_s))
    assert run.strike(signal.SIGINT) == 130
    assert "Traceback" not in run.output
    command = f"erav1 train --resume {shlex.quote(str(run_dir))}"
    assert f"interrupted: 1 of {EPOCHS} epochs are saved in {run_dir / 'last.pt'}. Resume with: {command}" in run.output
    assert saved_epochs(run_dir) == 1
    printed = run.output.rsplit("Resume with: ", 1)[1].splitlines()[0]
    argv = shlex.split(printed)
    assert argv[0] == "erav1"
    result = subprocess.run(
        [sys.executable, "-m", *argv, "--no-progress"], env=cli_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert_same_result(run_dir, reference_run)


# --- a diverging run ------------------------------------------------------------------------------


def test_an_absurd_lr_stops_the_first_epoch_and_writes_no_checkpoint(run_args, tmp_path):
    run_dir = tmp_path / "run"
    result = erav1(*run_args(run_dir, lr=1e6), "--no-progress")
    message = assert_clean_failure(result, "at epoch 1, step", "no epoch had finished, so there is no checkpoint")
    assert re.search(r"the training loss became (nan|inf|-inf) at epoch 1, step [1-5] \(lr [0-9.e+]+\)", message)
    assert not (run_dir / "last.pt").exists() and not (run_dir / "model.pt").exists()
    assert json.loads((run_dir / "history.json").read_text()) == []


def raise_learning_rate(run_dir: Path, lr: float) -> None:
    """Rewrite a run's settings as if it had been started with ``lr``: config.json, and in last.pt the
    saved config, the optimizer and the constant schedule (the three places a resumed run takes its lr from)."""
    config = json.loads((run_dir / "config.json").read_text())
    assert config["scheduler"] == "none"
    (run_dir / "config.json").write_text(json.dumps({**config, "lr": lr}))
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    checkpoint["config"]["lr"] = lr
    for group in checkpoint["optimizer"]["param_groups"]:
        group.update(lr=lr, initial_lr=lr)
    checkpoint["scheduler"].update(
        base_lrs=[lr] * len(checkpoint["scheduler"]["base_lrs"]),
        _last_lr=[lr] * len(checkpoint["scheduler"]["_last_lr"]),
    )
    torch.save(checkpoint, run_dir / "last.pt")


def test_divergence_after_a_good_epoch_stops_at_once_and_keeps_the_good_checkpoint(run_args, tmp_path):
    run_dir = tmp_path / "run"
    run = LiveRun([sys.executable, "-m", "erav1", *run_args(run_dir, scheduler="none")])
    run.wait_until(after_checkpoint(1))
    assert run.strike(signal.SIGKILL) == -signal.SIGKILL
    raise_learning_rate(run_dir, 1e6)
    kept = {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest() for name in ("last.pt", "history.json")}

    result = erav1("train", "--resume", run_dir, "--no-progress")
    message = assert_clean_failure(
        result, "at epoch 2, step", "(lr 1e+06)", f"{run_dir / 'last.pt'} keeps the last good epoch (1)", "Lower --lr"
    )
    assert re.search(r"the (training|test) loss became (nan|inf|-inf) at epoch 2", message)
    assert kept == {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest() for name in kept}
    assert saved_epochs(run_dir) == 1 and not (run_dir / "model.pt").exists()


# --- checkpoints and weights ----------------------------------------------------------------------


class CreatesMarker:
    """Pickles as ``open(marker, "w")``: loading it with code execution would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def save_crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"linear.weight": CreatesMarker(marker)}}, path)
    return path


def run_dir_holding(reference_run: Path, run_dir: Path, last_pt: bytes) -> Path:
    """A run directory with the reference run's config and history and the given last.pt."""
    run_dir.mkdir(parents=True)
    for name in ("config.json", "history.json"):
        shutil.copy(reference_run / name, run_dir / name)
    (run_dir / "last.pt").write_bytes(last_pt)
    return run_dir


def test_the_crafted_checkpoint_really_runs_code_when_loaded_unsafely(tmp_path):
    """The control for the two tests below: without weights_only the marker appears."""
    marker = tmp_path / "marker"
    torch.load(save_crafted_checkpoint(tmp_path / "control.pt", marker), weights_only=False)
    assert marker.exists()


def test_resume_refuses_a_last_pt_that_would_run_code(reference_run, tmp_path):
    marker = tmp_path / "marker"
    crafted = save_crafted_checkpoint(tmp_path / "crafted.pt", marker).read_bytes()
    run_dir = run_dir_holding(reference_run, tmp_path / "run", crafted)
    before = snapshot(run_dir)
    result = erav1("train", "--resume", run_dir)
    assert_clean_failure(result, f"refused to load {run_dir / 'last.pt'}", "would run io.open", "weights_only=True")
    assert not marker.exists()
    assert snapshot(run_dir) == before


def test_loading_a_weights_file_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = save_crafted_checkpoint(tmp_path / "model.pt", marker)
    with pytest.raises(CheckpointError, match=f"refused to load {re.escape(str(path))}: it would run io.open"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def reference_checkpoint(reference_run) -> bytes:
    return (reference_run / "last.pt").read_bytes()


def flip_bytes(data: bytes, start: int, stop: int) -> bytes:
    return data[:start] + bytes(b ^ 0xFF for b in data[start:stop]) + data[stop:]


def resnet34_run_checkpoint(reference_run: Path) -> bytes:
    """last.pt as a resnet34 run with the same settings would have written it."""
    checkpoint = torch.load(reference_run / "last.pt", weights_only=True)
    checkpoint["config"]["model"] = "resnet34"
    checkpoint["model"] = get_model("resnet34").state_dict()
    buffer = BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


# name: (how to make last.pt from the reference run's, what the message must say besides the file's name)
BAD_CHECKPOINTS = {
    "truncated": (lambda ref: (ref / "last.pt").read_bytes()[:1_000_000], "is corrupt, truncated or not"),
    "empty": (lambda ref: b"", "the file is empty"),
    "random bytes": (lambda ref: random.Random(0).randbytes(4096), "is corrupt, truncated or not"),
    "damaged inside": (
        lambda ref: flip_bytes((ref / "last.pt").read_bytes(), 1000, 2000),
        "is corrupt, truncated or not",
    ),
    "bare weights": (
        lambda ref: (ref / "model.pt").read_bytes(),
        "is not an erav1 training checkpoint (it holds a bare state_dict",
    ),
    "another model's run": (
        resnet34_run_checkpoint,
        "it was saved with other settings (model: 'resnet34' -> 'resnet18')",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_resume_from_a_bad_last_pt_fails_clearly_and_destroys_nothing(case, reference_run, tmp_path):
    make, problem = BAD_CHECKPOINTS[case]
    run_dir = run_dir_holding(reference_run, tmp_path / "run", make(reference_run))
    before = snapshot(run_dir)
    result = erav1("train", "--resume", run_dir)
    assert_clean_failure(result, str(run_dir / "last.pt"), problem)
    assert snapshot(run_dir) == before


def test_weights_of_another_architecture_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "resnet34.pt"
    torch.save(get_model("resnet34").state_dict(), path)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} holds weights for a different architecture"):
        load_weights(get_model("resnet18"), load_checkpoint(path), path)


def test_weights_for_10_classes_are_refused_by_a_3_class_model(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(get_model("resnet18", num_classes=10).state_dict(), path)
    expected = f"{re.escape(str(path))} holds weights for 10 classes, but the model has 3"
    with pytest.raises(CheckpointError, match=expected):
        load_weights(get_model("resnet18", num_classes=3), load_checkpoint(path), path)


# --- data -----------------------------------------------------------------------------------------


def zip_folder(folder: Path, path: Path) -> Path:
    """The folder as a .zip, directory entries included (so an empty class folder stays visible)."""
    with zipfile.ZipFile(path, "w") as archive:
        for item in sorted(folder.rglob("*")):
            archive.write(item, item.relative_to(folder).as_posix())
    return path


def add_file(root: Path, name: str, data: bytes) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)


def png(jpeg: bytes, mode: str = "RGB", size: int = 32) -> bytes:
    """A real image re-encoded as PNG in another mode or size."""
    buffer = BytesIO()
    Image.open(BytesIO(jpeg)).convert(mode).resize((size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


# name: (how to break a good 3-class folder, what the message must say besides the folder's path)
DATA_FAULTS = {
    "missing train/": (lambda root, jpegs: shutil.rmtree(root / "train"), "has no train/ folder"),
    "missing test/": (lambda root, jpegs: shutil.rmtree(root / "test"), "has no test/ folder"),
    "empty class folder": (
        lambda root, jpegs: [p.unlink() for p in (root / "train" / "bird").iterdir()],
        "class folder(s) train/bird hold no images",
    ),
    "different class sets": (
        lambda root, jpegs: add_file(root, "test/ship/0000.jpg", jpegs["ship"][0]),
        "train/ and test/ have different class folders (only in test/: ['ship'])",
    ),
    "not an image": (
        lambda root, jpegs: add_file(root, "train/cat/notes.txt", b"not an image\n"),
        "train/cat/notes.txt is not an image Pillow can read",
    ),
    "truncated JPEG": (
        lambda root, jpegs: add_file(root, "train/cat/0000.jpg", jpegs["cat"][0][:400]),
        "train/cat/0000.jpg is damaged or truncated",
    ),
}
THREE_CLASSES = ["airplane", "bird", "cat"]


@pytest.mark.parametrize("fault", list(DATA_FAULTS))
def test_a_broken_image_folder_gets_one_clear_message(fault, jpegs, tmp_path):
    break_it, problem = DATA_FAULTS[fault]
    data = write_image_folder(tmp_path / "data", jpegs, THREE_CLASSES)
    break_it(data, jpegs)
    before = snapshot(data)
    run_dir = tmp_path / "run"
    result = erav1(*train_args(data, tmp_path / "cache", run_dir))
    assert_clean_failure(result, str(data), problem)
    assert snapshot(data) == before and not run_dir.exists()


@pytest.mark.parametrize("fault", list(DATA_FAULTS))
def test_a_broken_zip_gets_the_same_message(fault, jpegs, tmp_path):
    break_it, problem = DATA_FAULTS[fault]
    folder = write_image_folder(tmp_path / "data", jpegs, THREE_CLASSES)
    break_it(folder, jpegs)
    path = zip_folder(folder, tmp_path / "data.zip")
    with pytest.raises(DataError) as error:
        load_image_folder(path, verbose=False)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_a_missing_data_path_is_named_with_the_accepted_layouts(tmp_path):
    missing = tmp_path / "no-such-data"
    result = erav1(*train_args(missing, tmp_path / "cache", tmp_path / "run"))
    assert_clean_failure(result, f"data path {missing} does not exist", "train/<class>/<image>", ".zip")


def test_an_image_that_is_not_32x32_is_refused_with_no_resize(jpegs, tmp_path):
    data = write_image_folder(tmp_path / "data", jpegs, THREE_CLASSES)
    add_file(data, "test/cat/big.png", png(jpegs["cat"][3], size=48))
    result = erav1(*train_args(data, tmp_path / "cache", tmp_path / "run"), "--no-resize")
    assert_clean_failure(result, f"{data}/test/cat/big.png is 48x48, not 32x32, and resizing is off", "--no-resize")


def test_repairs_are_noted_once_and_resuming_on_other_classes_is_refused(jpegs, tmp_path):
    """A real run on a 10-class folder with a grayscale, an RGBA and a 48x48 image; then the folder
    turns into a 3-class one, and resuming the 10-class run on it must fail before touching anything."""
    data = write_image_folder(tmp_path / "data", jpegs, CLASSES)
    add_file(data, "train/cat/gray.png", png(jpegs["cat"][3], mode="L"))
    add_file(data, "train/dog/alpha.png", png(jpegs["dog"][3], mode="RGBA"))
    add_file(data, "test/frog/big.png", png(jpegs["frog"][3], size=48))
    run_dir = tmp_path / "run"
    result = erav1(*train_args(data, tmp_path / "cache", run_dir, epochs=1), "--no-progress")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert notes == ["note: data: 2 images converted to RGB, 1 images resized to 32x32"]

    shutil.rmtree(data)
    write_image_folder(data, jpegs, CLASSES[:3])
    before = snapshot(run_dir)
    result = erav1("train", "--resume", run_dir)
    assert_clean_failure(
        result,
        f"{run_dir / 'last.pt'} was trained on 10 classes (airplane, automobile, bird, cat",
        f"but {data} has 3 (airplane, automobile, bird)",
    )
    assert snapshot(run_dir) == before


# --- the run directory and the command line -------------------------------------------------------


def test_training_into_an_existing_run_is_refused(reference_run, run_args):
    before = snapshot(reference_run)
    result = erav1(*run_args(reference_run))
    assert_clean_failure(
        result, f"{reference_run} already holds a run", f"erav1 train --resume {reference_run}", "--overwrite"
    )
    assert snapshot(reference_run) == before


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(reference_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    before = snapshot(run_dir)
    result = erav1(*train_args(tmp_path / "typo", tmp_path / "cache", run_dir), "--overwrite")
    assert_clean_failure(result, "does not exist")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("keep_last_pt", [True, False], ids=["with-last.pt", "without-last.pt"])
def test_resume_of_a_finished_run_trains_nothing_and_rewrites_nothing(keep_last_pt, reference_run, tmp_path):
    """A run copied in without last.pt (as the book's GPU run is) is finished, not broken."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir, ignore=None if keep_last_pt else shutil.ignore_patterns("last.pt"))
    before = snapshot(run_dir)
    result = erav1("train", "--resume", run_dir)
    assert result.returncode == 0, result.stderr
    assert "nothing to train" in result.stdout
    assert snapshot(run_dir) == before


def test_resume_of_final_weights_with_an_unfinished_history_is_refused(reference_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir, ignore=shutil.ignore_patterns("last.pt"))
    history = json.loads((run_dir / "history.json").read_text())
    (run_dir / "history.json").write_text(json.dumps(history[:1]))
    before = snapshot(run_dir)
    result = erav1("train", "--resume", run_dir)
    assert_clean_failure(result, f"{run_dir} holds final weights (model.pt) but no last.pt", "--overwrite")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_resume_of_a_folder_without_a_run_says_so(where, tmp_path):
    run_dir = tmp_path / "run"
    if where == "empty":
        run_dir.mkdir()
    result = erav1("train", "--resume", run_dir)
    assert_clean_failure(result, f"nothing to resume: {run_dir} has no config.json")


@pytest.mark.parametrize(
    "args, problem",
    [
        (["train", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
        (["train", "--model", "resnet99"], "invalid choice: 'resnet99'"),
        (["train", "--pct-start", "1"], "pct_start must be below 1"),
    ],
)
def test_a_bad_option_gets_one_line(args, problem, tmp_path):
    # Data in tmp_path: were the option accepted after all, the run must not download into ~/.cache.
    result = erav1(*args, "--run-dir", tmp_path / "run", "--data", tmp_path / "data", "--data-dir", tmp_path / "cache")
    assert_clean_failure(result, problem)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("steps, pct_start", [(4, 0.25), (10, 0.1)])
def test_onecycle_with_a_one_step_warm_up_does_not_divide_by_zero(steps, pct_start):
    """torch's OneCycleLR divides by zero when pct_start * steps == 1, e.g. a 1-epoch run of 4 batches."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler("onecycle", optimizer, 1, steps, pct_start)
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1 / 25) and max(lrs) <= 0.1 and lrs[-1] < lrs[1]
