"""Shared fixtures: real CIFAR-10, found the way ``data="cifar10"`` finds it, and one short real training run.

Our machines keep two copies beside the repository (../shared/data): the lossy JPEG copy, small and quick to
decode, for tests where the pixels do not matter, and the official pixels as PNG. A contributor's fresh clone has
neither: there the fixtures take the official pixels through the same ``cifar10`` resolution as erav1 itself
(the local copy that ERAV1_CIFAR10 names, else torchvision's download into a persistent cache) and write them
once, as an image-folder zip of PNGs, into that cache.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import pytest

# Keep kernels, matplotlib and friends out of $HOME.
_HOME = Path(tempfile.mkdtemp(prefix="erav1-test-home-"))
for var, sub in [
    ("MPLCONFIGDIR", "mpl"),
    ("IPYTHONDIR", "ipython"),
    ("XDG_CACHE_HOME", "cache"),
    ("XDG_CONFIG_HOME", "config"),
    ("XDG_DATA_HOME", "data"),
]:
    os.environ.setdefault(var, str(_HOME / sub))
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SHARED_ZIP = SHARED / "cifar10-jpeg.zip"
SHARED_PNG = SHARED / "cifar10-png.zip"
# Where a clone without ../shared keeps the download and the copy written from it (GitHub Actions caches it).
PERSISTENT_CACHE = Path(os.environ.get("ERAV1_TEST_CACHE", "~/.cache/erav1")).expanduser()


def write_image_zip(path: Path, splits: dict) -> Path:
    """An image-folder zip (``split/class/NNNNN.png``) of ``{split: ImageSet}``, written atomically."""
    from PIL import Image

    from erav1.utils.cifar10 import nhwc

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
        for split, part in splits.items():
            for i, (image, label) in enumerate(zip(nhwc(part.images), part.labels.tolist(), strict=True)):
                png = io.BytesIO()
                Image.fromarray(image).save(png, format="PNG")
                archive.writestr(f"{split}/{part.classes[label]}/{i:05d}.png", png.getvalue())
    partial.replace(path)
    return path


def official_copy() -> Path:
    """A lossless image-folder copy of the official pixels: ERAV1_CIFAR10's, the shared one, or one written once."""
    from erav1.utils import cifar10

    named = cifar10.local_copy()
    if named is not None and named.exists():
        return named
    if SHARED_PNG.exists():
        return SHARED_PNG
    written = PERSISTENT_CACHE / "tests" / "cifar10-official-png.zip"
    if not written.exists():
        from erav1.utils.data import load_data

        splits = load_data("cifar10", PERSISTENT_CACHE)  # torchvision's download, fingerprint-checked
        write_image_zip(written, {"train": splits.train, "test": splits.test})
    return written


@pytest.fixture(scope="session")
def cifar_zip() -> Path:
    """Real CIFAR-10 as an image-folder zip, read in place: ERAV1_TEST_DATA, the shared JPEG copy, else official."""
    if os.environ.get("ERAV1_TEST_DATA"):
        path = Path(os.environ["ERAV1_TEST_DATA"])
        if not path.exists():
            pytest.fail(f"ERAV1_TEST_DATA names {path}, which does not exist")
        return path
    return SHARED_ZIP if SHARED_ZIP.exists() else official_copy()


@pytest.fixture(scope="session")
def official_zip() -> Path:
    """The official pixels as an image-folder zip (what ``cifar10`` resolves to offline)."""
    return official_copy()


@pytest.fixture(scope="session")
def official_subset_zip(official_zip, cache_dir, tmp_path_factory) -> Path:
    """A stratified subset of the official pixels (30 train and 30 test images per class), as a PNG zip."""
    from erav1.utils.data import load_image_folder, stratified_subset

    train, test = load_image_folder(official_zip, cache_dir)
    subset = {"train": stratified_subset(train, 300), "test": stratified_subset(test, 300)}
    return write_image_zip(tmp_path_factory.mktemp("official-subset") / "cifar10-subset.zip", subset)


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
        data=str(cifar_zip),
        data_dir=str(cache_dir),
        subset=500,
        epochs=3,
        batch_size=32,
        cutout_size=0,
        device="cpu",
        precision="fp32",
        run_dir=str(run_dir),
        lr=0.02,
    )
    values.update(overrides)
    return Config(**values)


@pytest.fixture(scope="session")
def tiny_run(cifar_zip, cache_dir, tmp_path_factory):
    """A finished 3-epoch run on real images, shared by the tests that only read it."""
    from erav1.main import fit

    run_dir = tmp_path_factory.mktemp("tiny-run")
    return fit(tiny_config(cifar_zip, cache_dir, run_dir), progress=False)
