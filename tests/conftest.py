"""Shared fixtures: the real CIFAR-10 copy in ../shared, and one short real training run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Keep kernels, matplotlib and friends out of $HOME.
_HOME = Path(tempfile.mkdtemp(prefix="erav1-test-home-"))
for var, sub in [("MPLCONFIGDIR", "mpl"), ("IPYTHONDIR", "ipython"), ("XDG_CACHE_HOME", "cache"),
                 ("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data")]:
    os.environ.setdefault(var, str(_HOME / sub))
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
SHARED_ZIP = ROOT.parent / "shared" / "data" / "cifar10-jpeg.zip"


@pytest.fixture(scope="session")
def cifar_zip() -> Path:
    """The shared JPEG copy of CIFAR-10; tests read it in place."""
    path = Path(os.environ.get("ERAV1_TEST_DATA", SHARED_ZIP))
    if not path.exists():
        pytest.fail(f"real CIFAR-10 is needed at {path} (set ERAV1_TEST_DATA to its path)")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One decoded-array cache for the whole session: the zip is decoded once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def small_splits(cifar_zip, cache_dir):
    from erav1.utils.data import load_data

    return load_data(str(cifar_zip), cache_dir, subset=500)


def tiny_config(cifar_zip: Path, cache_dir: Path, run_dir: Path, **overrides):
    """A real run of about half a minute: 500 images per split, fp32 on the CPU.

    Cutout is off and the batch small so that 3 epochs on 500 images visibly learn.
    """
    from erav1.main import Config

    values = dict(
        data=str(cifar_zip), data_dir=str(cache_dir), subset=500, epochs=3, batch_size=32, cutout_size=0,
        device="cpu", precision="fp32", run_dir=str(run_dir), lr=0.02,
    )
    values.update(overrides)
    return Config(**values)


@pytest.fixture(scope="session")
def tiny_run(cifar_zip, cache_dir, tmp_path_factory):
    """A finished 3-epoch run on real images, shared by the tests that only read it."""
    from erav1.main import fit

    run_dir = tmp_path_factory.mktemp("tiny-run")
    return fit(tiny_config(cifar_zip, cache_dir, run_dir), progress=False)
