"""scripts/gpu_search.sh end to end on the CPU, as a lease runs it: the parts travel one call at a time and are
joined and checked, a small study runs, the best recipe trains with two seeds, and what comes back unpacks into
the book's results. Real processes, real images (a subset of the official pixels), one epoch each."""

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_search.sh"


@pytest.fixture
def lease(tmp_path, official_subset_zip):
    """The script's folders, all in tmp_path: here (parts), there (store, work), and what comes back (out)."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # the script finds erav1 on its own
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SOURCE": str(official_subset_zip),
        "SHA256": hashlib.sha256(official_subset_zip.read_bytes()).hexdigest(),
        "PART_SIZE": "200K",
        "PARTS": str(tmp_path / "carried"),  # there: the working tree's copy, holding what this call carried
        "STORE": str(tmp_path / "store"),
        "DATA": str(tmp_path / "store" / "cifar10-png.zip"),
        "CACHE": str(tmp_path / "cache"),
        "WORK": str(tmp_path / "work"),
        "STORAGE": f"sqlite:///{tmp_path / 'study' / 'study.db'}",
        "RESULTS": str(tmp_path / "results"),
        "BOOK_RUN": str(tmp_path / "runs" / "book"),
        "OUT": str(tmp_path / "out"),
        "WHEELS": str(tmp_path / "no-wheels"),  # this machine has every package; the GPU machine gets wheels
        "TRIALS": "2",
        "JOBS": "2",
        "EPOCHS": "1",
        "SEEDS": "0 1",
        "DEVICE": "cpu",
        "BUDGET_S": "500",
        "CONFIRM_S": "240",
        "TRAIN_ARGS": "--precision fp32",
    }
    return tmp_path, env


def script(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def split_here(tmp_path: Path, env: dict) -> list[Path]:
    done = script(env | {"PARTS": str(tmp_path / "parts")}, "split")
    assert done.returncode == 0, done.stderr
    return sorted((tmp_path / "parts").glob("part_*"))


def send_parts(tmp_path: Path, env: dict, parts: list[Path]) -> None:
    """One 'receive' call per part, each carrying that part alone into the working tree's parts folder."""
    carried = Path(env["PARTS"])
    for part in parts:
        carried.mkdir(exist_ok=True)
        shutil.copy(part, carried / part.name)
        done = script(env, "receive")
        assert done.returncode == 0, done.stderr
        assert not list(carried.iterdir()) and part.name in done.stdout  # moved out of the tree, kept on the machine


def test_the_parts_travel_the_study_runs_the_seeds_train_and_the_results_unpack(lease):
    tmp_path, env = lease
    parts = split_here(tmp_path, env)
    assert len(parts) >= 3 and all(p.stat().st_size <= 200 * 1024 for p in parts)
    send_parts(tmp_path, env, parts)

    done = script(env, "search", timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    back = ["model.part_aa", "model.part_ab", "model.part_ac", "results.tar.gz", "search.log"]
    assert sorted(p.name for p in out.iterdir()) == back
    assert sum(p.stat().st_size for p in out.iterdir()) < 64 * 2**20  # 8 files of 16 MiB at most, 64 MiB in all
    assert "=== confirmation: exit 0" in (out / "search.log").read_text()

    damaged = tmp_path / "damaged"  # a part that did not come back whole: refused before anything is written
    shutil.copytree(out, damaged)
    (damaged / "model.part_ab").write_bytes((damaged / "model.part_ab").read_bytes()[:-1])
    refused = script(env, "unpack", str(damaged))
    assert refused.returncode == 2 and "do not join" in refused.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()

    data = Path(env["DATA"])  # the images the runs trained on, gone: publishing here fails, and leaves no run behind
    data.rename(data.with_suffix(".away"))
    failed = script(env, "unpack", str(out), timeout=300)
    data.with_suffix(".away").rename(data)
    assert failed.returncode == 2 and "is empty again" in failed.stderr, failed.stdout + failed.stderr
    assert not (tmp_path / "runs" / "book").exists() and not (tmp_path / "results" / "summary.json").exists()

    unpacked = script(env, "unpack", str(out), timeout=300)
    assert unpacked.returncode == 0, unpacked.stderr
    results = tmp_path / "results"
    summary = json.loads((results / "summary.json").read_text())
    assert [r["seed"] for r in summary["seeds"]] == [0, 1] and summary["seed"] == 0 and summary["epochs"] == 1
    assert hashlib.sha256((results / "resnet18_cifar10.pt").read_bytes()).hexdigest() == summary["weights_sha256"]
    seed1 = json.loads((results / "recipe_search" / "confirm" / "seed1.history.json").read_text())
    assert summary["seeds"][1]["test_accuracy"] == seed1[-1]["test_acc"]
    with sqlite3.connect(results / "recipe_search" / "study.db") as db:  # the study alone, its log folded in
        states = [state for (state,) in db.execute("SELECT state FROM trials")]
    assert states.count("COMPLETE") == 2
    best = json.loads((results / "recipe_search" / "confirm" / "seed0.config.json").read_text())
    assert best["val_fraction"] == 0.0 and best["seed"] == 0  # the seeds train on all of train

    book_run = tmp_path / "runs" / "book"  # the published seed, where chapter 3 finds it and trains nothing
    assert "holds seed 0" in unpacked.stdout
    listing = sorted(p.name for p in book_run.iterdir())
    assert listing == ["config.json", "environment.json", "history.json", "model.pt", "report"]  # report: publish's
    assert json.loads((book_run / "config.json").read_text()) == best
    shown = subprocess.run(
        [sys.executable, "-m", "erav1", "train", "--resume", str(book_run), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0 and "has finished all 1 epochs" in shown.stdout, shown.stdout + shown.stderr
    assert sorted(p.name for p in book_run.iterdir()) == listing, "showing the finished run wrote nothing into it"

    again = script(env, "search", timeout=600)  # a second call on the same machine: the joined copy serves it
    assert again.returncode == 0, again.stdout + again.stderr
    assert "=== search: exit 0" in again.stdout and "=== confirmation: exit 0" in again.stdout


def test_a_part_lost_with_a_machine_that_went_back_stops_the_search_before_it_trains(lease):
    tmp_path, env = lease
    parts = split_here(tmp_path, env)
    send_parts(tmp_path, env, parts[1:])  # the first part went to a machine that was given back

    done = script(env, "search")
    assert done.returncode == 2
    assert "a part is missing" in done.stderr and "Send every part again" in done.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "store" / "cifar10-png.zip").exists()
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [p.name for p in parts[1:]]  # nothing lost


def test_unpack_refuses_to_overwrite_a_run_in_runs_book_and_writes_nothing(lease):
    tmp_path, env = lease
    book_run = tmp_path / "runs" / "book"
    book_run.mkdir(parents=True)
    (book_run / "model.pt").write_bytes(b"an earlier run")
    (tmp_path / "out").mkdir()

    done = script(env, "unpack", str(tmp_path / "out"))
    assert done.returncode == 2 and "holds a run already" in done.stderr and "mv " in done.stderr
    without = script(env | {"PYTHON": "false"}, "unpack", str(tmp_path / "out"))  # a Python without erav1 and torch
    assert without.returncode == 2 and "make venv" in without.stderr
    assert (book_run / "model.pt").read_bytes() == b"an earlier run" and not (tmp_path / "results").exists()


def test_what_the_script_writes_into_the_working_tree_is_ignored_by_git():
    """Carried paths must be ignored: untracked ones would travel in every call and overflow its 64 MiB."""
    written = [".gpu/png/part_aa", ".whl/optuna-5.0.0-py3-none-any.whl"]  # PARTS and WHEELS, as the script names them
    assert f"PARTS=${{PARTS:-{Path(written[0]).parent}}}" in SCRIPT.read_text()
    assert f"WHEELS=${{WHEELS:-{Path(written[1]).parent}}}" in SCRIPT.read_text()
    ignored = subprocess.run(["git", "check-ignore", *written], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == written
