"""``data="cifar10"`` means the official pixels: the fingerprint, the local stand-in and the canonical order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from erav1.errors import DataError
from erav1.utils import cifar10
from erav1.utils.data import CIFAR10_CLASSES, load_data, load_image_folder


@pytest.fixture(scope="module")
def official(official_zip, cache_dir):
    """The official train and test splits, decoded from the lossless copy."""
    return load_image_folder(official_zip, cache_dir)


def test_the_lossless_copy_has_the_official_fingerprints(official):
    train, test = official
    assert cifar10.fingerprint(cifar10.nhwc(train.images), train.labels.numpy()) == cifar10.FINGERPRINTS["train"]
    assert cifar10.fingerprint(cifar10.nhwc(test.images), test.labels.numpy()) == cifar10.FINGERPRINTS["test"]


def test_the_fingerprint_ignores_order_but_not_pixels_or_labels(official):
    _, test = official
    images, labels = cifar10.nhwc(test.images), test.labels.numpy()
    order = np.random.default_rng(0).permutation(len(labels))
    assert cifar10.fingerprint(images[order], labels[order]) == cifar10.FINGERPRINTS["test"]
    brighter = images.copy()
    brighter[1234, 5, 5, 0] ^= 1  # one bit of one pixel
    assert cifar10.fingerprint(brighter, labels) != cifar10.FINGERPRINTS["test"]
    relabelled = labels.copy()
    relabelled[1234] = (relabelled[1234] + 1) % 10
    assert cifar10.fingerprint(images, relabelled) != cifar10.FINGERPRINTS["test"]


def test_torchvision_arrays_and_image_folder_arrays_give_the_same_fingerprint(official):
    """torchvision hands over ``.data`` as N x 32 x 32 x 3 uint8 in batch order and ``.targets`` as a list."""
    _, test = official
    rng = np.random.default_rng(1)
    order = rng.permutation(len(test))  # another order, as the official batches have
    data = np.ascontiguousarray(test.images.permute(0, 2, 3, 1).numpy()[order])  # what CIFAR10(...).data is
    targets = test.labels.numpy()[order].tolist()  # what CIFAR10(...).targets is
    assert data.shape == (10_000, 32, 32, 3) and data.dtype == np.uint8
    assert cifar10.fingerprint(data, targets) == cifar10.fingerprint(cifar10.nhwc(test.images), test.labels.numpy())


class FakeTorchvisionCIFAR10:
    """torchvision's CIFAR10 as erav1 uses it (``.data``, ``.targets``, ``.classes``), over given arrays.

    The real class md5-checks the official batch files, which cannot be rebuilt offline, so the tests hand the
    same official images over in the same form instead.
    """

    arrays: dict[bool, tuple[np.ndarray, list[int]]] = {}

    def __init__(self, root: str, train: bool, download: bool) -> None:
        self.data, self.targets = self.arrays[train]
        self.classes = list(CIFAR10_CLASSES)


def test_torchvision_and_a_local_copy_load_the_same_images_in_the_same_order(
    official_subset_zip, cache_dir, monkeypatch
):
    """A seeded run sees the same images in the same order whichever source ``cifar10`` resolves to."""
    train, test = load_image_folder(official_subset_zip)
    rng = np.random.default_rng(2)
    shuffled = {}
    for is_train, part in ((True, train), (False, test)):
        order = rng.permutation(len(part))
        shuffled[is_train] = (np.ascontiguousarray(cifar10.nhwc(part.images)[order]), part.labels[order].tolist())
    monkeypatch.setattr(FakeTorchvisionCIFAR10, "arrays", shuffled)
    monkeypatch.setattr("torchvision.datasets.CIFAR10", FakeTorchvisionCIFAR10)

    monkeypatch.delenv(cifar10.ENV_VAR, raising=False)
    downloaded = load_data("cifar10", cache_dir, subset=100, val_fraction=0.2)
    monkeypatch.setenv(cifar10.ENV_VAR, str(official_subset_zip))
    local = load_data("cifar10", cache_dir, subset=100, val_fraction=0.2)
    for split in ("train", "val", "test"):
        a, b = getattr(downloaded, split), getattr(local, split)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels), split
    subset = "CIFAR-10 (official pixels, a subset: 300 of 50,000 train and 300 of 10,000 test images)"
    assert downloaded.source == f"{subset}, downloaded by torchvision"
    assert local.source.endswith(f"read from {official_subset_zip.name} (600 .png files)")
    assert downloaded.fingerprints == local.fingerprints


def test_the_official_copy_loads_as_cifar10_with_its_fingerprints(official_zip, cache_dir, monkeypatch):
    monkeypatch.setenv(cifar10.ENV_VAR, str(official_zip))
    splits = load_data("cifar10", cache_dir)
    assert splits.source == f"CIFAR-10 (official pixels), read from {official_zip.name} (60,000 .png files)"
    assert splits.fingerprints == cifar10.FINGERPRINTS
    assert len(splits.train) == 50_000 and len(splits.test) == 10_000
    assert str(official_zip.parent) not in splits.source, "a label names no folder of this machine"


def test_the_jpeg_copy_cannot_pass_as_cifar10(cifar_zip, cache_dir, monkeypatch):
    if cifar_zip.suffix != ".zip" or ".jpg" not in load_data(str(cifar_zip), cache_dir).source:
        pytest.skip("the lossy JPEG copy is not beside this clone")
    monkeypatch.setenv(cifar10.ENV_VAR, str(cifar_zip))
    with pytest.raises(DataError) as error:
        load_data("cifar10", cache_dir)
    message = str(error.value)
    assert "is not the official CIFAR-10: its train and test splits differ" in message
    assert "50,000 of its 50,000 train images" in message and "10,000 of its 10,000 test images" in message
    assert cifar10.ENV_VAR in message and "--data PATH" in message
    # under its own name it still loads, and says what it is
    assert load_data(str(cifar_zip), cache_dir).source == f"{cifar_zip.name} (60,000 .jpg files)"


def test_a_copy_with_one_changed_image_names_the_split_that_differs(official_subset_zip, tmp_path, monkeypatch):
    from conftest import write_image_zip

    train, test = load_image_folder(official_subset_zip)
    test.images[7, 0, 0, 0] ^= 1
    changed = write_image_zip(tmp_path / "changed.zip", {"train": train, "test": test})
    monkeypatch.setenv(cifar10.ENV_VAR, str(changed))
    with pytest.raises(DataError, match=r"its test split differs \(test: 1 of its 300 test images are not official"):
        load_data("cifar10", tmp_path / "cache")


def test_a_missing_local_copy_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(cifar10.ENV_VAR, str(tmp_path / "nowhere.zip"))
    with pytest.raises(DataError, match=f"{cifar10.ENV_VAR} names .*nowhere.zip.* does not exist.*unset it"):
        load_data("cifar10", tmp_path / "cache")
