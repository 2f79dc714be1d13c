"""One run on several processes: real ``torchrun --nproc_per_node=2 -m erav1 train``, on the CPU (gloo).

Every run here is a real subprocess on real CIFAR-10 images, fp32 on the CPU, with one math thread per
process, as small as the checks allow (a few hundred images, at most three epochs). Where two GPUs are
visible, the comparison of one and two processes also runs on them (nccl).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from erav1 import cli
from erav1.errors import UsageError
from erav1.main import evaluate
from erav1.models import get_model
from erav1.utils import rundir
from erav1.utils.data import load_data
from erav1.utils.distributed import Distributed
from erav1.utils.policies import Runtime
from tests.test_faults import LiveRun, assert_same_result, cli_env, saved_epochs

# torchrun itself (its module, run by this venv's Python); --standalone: a free port, so runs never collide
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "erav1"]
ERAV1 = [sys.executable, "-m", "erav1"]


def train_argv(launcher: list[str], data: Path, cache_dir: Path, run_dir: Path, *extra: str, **options) -> list[str]:
    """``LAUNCHER -m erav1 train`` on real images, fp32, on the CPU unless ``device`` says otherwise."""
    values = dict(data=data, data_dir=cache_dir, device="cpu", precision="fp32", run_dir=run_dir) | options
    flags = [item for k, v in values.items() for item in (f"--{k.replace('_', '-')}", str(v))]
    return [*launcher, "train", *flags, "--no-progress", *extra]


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=cli_env(), capture_output=True, text=True, timeout=600)


def run_ok(argv: list[str]) -> str:
    result = run(argv)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def parameters(run_dir: Path) -> torch.Tensor:
    """Every trainable weight of a run's model.pt, as one vector (BatchNorm's running statistics left out)."""
    state = torch.load(run_dir / rundir.WEIGHTS, weights_only=True)
    names = [name for name, _ in get_model("resnet18", num_classes=10).named_parameters()]
    return torch.cat([state[name].flatten() for name in names])


# --- the same run on one and on two processes ------------------------------------------------------------

# 101 images and a global batch of 64: the second batch holds 37, split 19/18, and the 101 test images are
# scored 51/50, so the uneven cases are covered too. One epoch, two steps: see the test's docstring for why.
SAME_RUN = dict(subset=101, epochs=1, batch_size=64, lr=0.05)


TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two processes on CUDA need two GPUs (nccl)")


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=TWO_GPUS)])
def runs(request, cifar_zip, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Four runs of SAME_RUN, each its run directory and output: one process (twice, in two memory formats),
    two processes with and without synchronised BatchNorm. On the CPU through gloo, on two GPUs through nccl."""
    root, cache = tmp_path_factory.mktemp("same-run"), tmp_path_factory.mktemp("cache")
    variants = {
        "one": (ERAV1, ()),
        "one, other reduction order": (ERAV1, ("--no-channels-last",)),
        "two, sync-bn": (TORCHRUN, ("--sync-bn",)),
        "two": (TORCHRUN, ()),
    }
    done = {}
    for name, (launcher, extra) in variants.items():
        run_dir = root / name.replace(" ", "_").replace(",", "")
        options = SAME_RUN | {"device": request.param}
        done[name] = run_dir, run_ok(train_argv(launcher, cifar_zip, cache, run_dir, *extra, **options))
    return done


def test_two_processes_train_the_weights_of_one(runs):
    """The two-process run trains the single-process run's weights: the same global batches, augmentation,
    gradient and schedule, and BatchNorm the only difference.

    Exact equality is out of reach even with synchronised BatchNorm: each process sums the gradients of
    its own rows before gloo adds the two sums, where one process sums all rows in another order, and the
    BatchNorm statistics are summed the same way. So the bound is measured, not guessed: the same
    single-process run with --no-channels-last computes the very same arithmetic in another reduction
    order, and the distance between those two runs is the noise floor. At initialisation this network's
    gradient is so sensitive that reduction order alone moves it by about 0.5% in one step, and the gap
    grows about fivefold a step (measured: 2.6% after two steps, 13% after three, 48% after eight, all
    relative to how far training moved the weights). Hence one epoch of two steps.

    * With --sync-bn every BatchNorm layer normalises over the whole global batch, as one process does,
      and the two-process run must lie within 3x the noise floor (measured: 1.0x).
    * Without it each process normalises with its own half batch's statistics: different arithmetic,
      not noise (measured: 0.66 of the distance trained, 25x the noise floor). The bound is that it still
      moved the weights the same way (a distance below the distance trained), and that the difference is
      well above the noise floor, which shows that this test can see a real difference at all: a bug
      such as another shard, another permutation or gradients summed rather than averaged is as large.
    """
    start = torch.cat([p.detach().flatten() for p in _initial_model().parameters()])
    one = parameters(runs["one"][0])
    trained = (one - start).norm()

    def gap(name: str) -> float:
        return ((parameters(runs[name][0]) - one).norm() / trained).item()

    noise, synced, unsynced = gap("one, other reduction order"), gap("two, sync-bn"), gap("two")
    assert 0 < noise < 0.1, f"noise floor {noise:.4f}: the run is too long or too chaotic to compare"
    assert synced <= 3 * noise, f"with --sync-bn: {synced:.4f} of the distance trained, noise floor {noise:.4f}"
    assert 3 * noise < unsynced < 1, f"without --sync-bn: {unsynced:.4f}, noise floor {noise:.4f}"


def _initial_model() -> torch.nn.Module:
    torch.manual_seed(0)  # SAME_RUN's seed: fit() seeds like this before it builds the model
    return get_model("resnet18", num_classes=10)


@pytest.mark.parametrize("name", ["two", "two, sync-bn"])
def test_two_processes_report_the_accuracy_of_every_test_image(name, runs, cifar_zip):
    """Each process scores half the test images; the reported numbers are those of all of them."""
    run_dir = runs[name][0]
    history = json.loads((run_dir / rundir.HISTORY).read_text())
    model = get_model("resnet18", num_classes=10)
    model.load_state_dict(torch.load(run_dir / rundir.WEIGHTS, weights_only=True))
    config = json.loads((run_dir / rundir.CONFIG).read_text())
    test_set = load_data(str(cifar_zip), config["data_dir"], subset=SAME_RUN["subset"], verbose=False).test
    runtime = Runtime.create(config["device"], "fp32")
    scores = evaluate(runtime.prepare(model), test_set, runtime, config["eval_batch_size"], config["label_smoothing"])
    assert history[-1]["test_acc"] == scores["acc"]
    assert history[-1]["test_loss"] == pytest.approx(scores["loss"], rel=1e-5)  # batches of 51/50 against 101


def test_rank_0_alone_writes_files_and_prints(runs):
    run_dir, output = runs["two"]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([*rundir.RUN_FILES, rundir.TENSORBOARD])
    assert len(list((run_dir / rundir.TENSORBOARD).iterdir())) == 1, "one TensorBoard event file, rank 0's"
    assert json.loads((run_dir / rundir.ENVIRONMENT).read_text())["processes"] == 2
    for line in ("training resnet18 on 101 images", "epoch   1/1", "done: final test accuracy"):
        assert output.count(line) == 1, f"{line!r} printed {output.count(line)} times:\n{output}"
    assert re.search(r"2 x (cpu|cuda) \(torchrun\)", output)


# --- faults under torchrun ---------------------------------------------------------------------------------

KILL_RUN = dict(subset=128, epochs=3, batch_size=32, lr=0.02)


def worker(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the training process of ``rank`` that torchrun (pid ``launcher.pid``) started."""
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher.pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"torchrun {launcher.pid} has no process of rank {rank}")


def epoch_line(epoch: int):
    return lambda output: re.search(rf"epoch\s+{epoch}/{KILL_RUN['epochs']}\s+train loss", output) is not None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through /proc")
def test_a_killed_rank_and_ctrl_c_keep_last_pt_whole_and_resume_finishes_the_run(cifar_zip, tmp_path):
    """kill -9 of rank 1 during epoch 2, then Ctrl-C (SIGINT to the whole process group, as a terminal
    sends it) during epoch 3 of the resumed run: each time last.pt stays whole and loads with
    weights_only=True, and the run resumed under torchrun ends with the uninterrupted run's exact weights
    and history (two processes add their gradients in the same order every time)."""
    cache = tmp_path / "cache"
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    run_ok(train_argv(TORCHRUN, cifar_zip, cache, reference, **KILL_RUN))

    first = LiveRun(train_argv(TORCHRUN, cifar_zip, cache, run_dir, **KILL_RUN))
    first.wait_until(epoch_line(1))
    os.kill(worker(first.proc, rank=1), signal.SIGKILL)
    assert first.finish() != 0
    assert saved_epochs(run_dir) == 1  # loads with weights_only=True: whole
    resume = f"torchrun --standalone --nproc_per_node=2 -m erav1 train --resume {run_dir}"
    # rank 0 hears of it from torchrun, which stops it like Ctrl-C, or as an error from its next collective
    assert re.search(
        r"(interrupted|stopped): "
        + re.escape(f"1 of 3 epochs are saved in {run_dir / 'last.pt'}. Resume with: {resume}"),
        first.output,
    ), first.output[-3000:]

    second = LiveRun([*TORCHRUN, "train", "--resume", str(run_dir), "--no-progress"], start_new_session=True)
    second.wait_until(epoch_line(2))
    os.killpg(second.proc.pid, signal.SIGINT)
    assert second.finish() != 0
    assert f"resuming {run_dir} after epoch 1/3" in second.output
    assert "interrupted: 2 of 3 epochs are saved" in second.output
    assert saved_epochs(run_dir) == 2

    run_ok([*TORCHRUN, "train", "--resume", str(run_dir), "--no-progress"])
    assert_same_result(run_dir, reference)
    assert not list(run_dir.glob(".*.tmp"))


def test_a_diverging_run_stops_every_process_and_says_so_once(cifar_zip, tmp_path):
    result = run(
        train_argv(
            TORCHRUN,
            cifar_zip,
            tmp_path / "cache",
            tmp_path / "run",
            subset=64,
            epochs=1,
            batch_size=16,
            lr=1e6,
            scheduler="none",
        )
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("erav1: error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert re.search(r"the training loss became (nan|inf|-inf) at epoch 1, step [1-4] \(lr 1e\+06\)", errors[0])
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_batch_that_does_not_split_is_refused_once(cifar_zip, tmp_path):
    result = run(
        train_argv(TORCHRUN, cifar_zip, tmp_path / "cache", tmp_path / "run", subset=64, epochs=1, batch_size=33)
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("erav1: error: ")]
    assert errors == [
        "erav1: error: --batch-size 33 is the global batch and must split evenly among the 2 "
        "processes torchrun started; use a multiple of 2, such as 32 or 34"
    ], result.stderr[-3000:]


def test_another_rank_waits_for_rank_0_to_report_a_shared_error_and_reports_its_own(monkeypatch, capsys):
    """torchrun ends every process once one exits: a rank that exits first must not cut rank 0's report off."""
    waits = []
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(cli.time, "sleep", waits.append)  # rank 0 never ends this process: the error is rank 1's
    assert cli.main(["train", "--resume", "/no/such/run"]) == 2
    assert waits == [cli.RANK_ZERO_REPORT_WAIT_S]
    assert capsys.readouterr().err.count("erav1: error: nothing to resume") == 1


def test_another_rank_ended_by_torchrun_while_it_waits_stays_silent(monkeypatch, capsys):
    def ended_by_torchrun(seconds):
        raise KeyboardInterrupt  # what cli's SIGTERM handler raises

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(cli.time, "sleep", ended_by_torchrun)
    assert cli.main(["train", "--resume", "/no/such/run"]) == 130
    assert capsys.readouterr().err == ""


# --- the pieces, in one process ------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 7, 64, 101])
def test_shards_cover_a_batch_once_and_scale_to_its_mean(world_size, batch):
    shards = [Distributed(rank, world_size).shard(batch) for rank in range(world_size)]
    rows = [i for s in shards for i in range(s.start, s.stop)]
    assert rows == list(range(batch))
    sizes = [s.stop - s.start for s in shards]
    assert max(sizes) - min(sizes) <= 1
    # DDP averages the processes' gradients of their mean losses: with the scales, every image weighs 1/batch
    for rank, n in enumerate(sizes):
        if n:
            weight = Distributed(rank, world_size).gradient_scale(n, batch) / (world_size * n)
            assert weight == pytest.approx(1 / batch)


def test_torchrun_environment_is_read_and_a_broken_one_refused():
    assert Distributed.from_env({}) == Distributed(0, 1, 0)
    assert Distributed.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Distributed(3, 4, 1)
    with pytest.raises(UsageError, match="incomplete torchrun environment.*torchrun --standalone --nproc_per_node=N"):
        Distributed.from_env({"WORLD_SIZE": "2"})
    with pytest.raises(UsageError, match="at least 2 for the last batch"):
        Distributed(0, 2).check_batches(batch_size=64, train_size=129)  # the last batch holds one image
