import io
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from erav1.errors import DataError
from erav1.utils.cifar10 import ENV_VAR
from erav1.utils.data import load_data, load_image_folder, split_validation, stratified_subset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def full(cifar_zip, cache_dir):
    return load_data(str(cifar_zip), cache_dir)


def test_shared_zip_loads_all_images_in_official_class_order(full, cifar_zip):
    assert full.classes == CIFAR10_CLASSES
    assert full.train.images.shape == (50_000, 3, 32, 32) and full.train.images.dtype == torch.uint8
    assert full.test.images.shape == (10_000, 3, 32, 32)
    assert full.train.class_counts() == [5000] * 10 and full.test.class_counts() == [1000] * 10
    assert full.val is None and full.eval_name == "test"
    # real photographs, not blank arrays
    assert 90 < full.train.images.float().mean() < 160 and full.train.images.float().std() > 40
    suffix = {Path(n).suffix for n in zipfile.ZipFile(cifar_zip).namelist() if not n.endswith("/")}.pop()
    assert full.source == f"{cifar_zip.name} (60,000 {suffix} files)"  # says what it was, names no folder here


def test_source_counts_the_image_files_of_both_splits_only(tmp_path):
    root = make_folder(tmp_path / "mixed", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    (root / "train" / "a" / "0.jpg").rename(root / "train" / "a" / "0.png")
    (root / "README.txt").write_text("not an image, and not in a split")
    assert load_data(str(root), tmp_path / "cache").source == f"{root.name} (5 .jpg, 1 .png files)"


def test_cache_gives_back_the_same_arrays(cifar_zip, cache_dir, full):
    cached_files = list(cache_dir.glob(f"{cifar_zip.stem}-*.pt"))
    assert len(cached_files) == 1
    train, test = load_image_folder(cifar_zip, cache_dir=cache_dir)
    assert torch.equal(train.images, full.train.images) and torch.equal(test.labels, full.test.labels)
    uncached_train, _ = load_image_folder(cifar_zip, cache_dir=None)
    assert torch.equal(uncached_train.images, full.train.images)


def test_subset_is_stratified_and_deterministic(full):
    small = stratified_subset(full.train, 1000)
    assert len(small) == 1000 and small.class_counts() == [100] * 10
    assert torch.equal(small.images, stratified_subset(full.train, 1000).images)
    odd = stratified_subset(full.test, 25)
    assert sorted(odd.class_counts()) == [2] * 5 + [3] * 5


def test_validation_split_is_stratified_and_disjoint(full):
    small = stratified_subset(full.train, 2000)
    train, val = split_validation(small, 0.1)
    assert len(train) == 1800 and val.class_counts() == [20] * 10
    seen = {x.numpy().tobytes() for x in train.images}
    assert not any(x.numpy().tobytes() in seen for x in val.images)


def test_load_data_with_subset_and_val_fraction(cifar_zip, cache_dir):
    splits = load_data(str(cifar_zip), cache_dir, subset=500, val_fraction=0.2)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (400, 100, 500)
    assert splits.eval_name == "val"


# --- bad input: one clear message each -------------------------------------------------


def jpeg_bytes(color=(200, 30, 30), size=(32, 32), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 128).save(buf, format="JPEG" if mode != "RGBA" else "PNG")
    return buf.getvalue()


def make_folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    for split, classes in layout.items():
        for cls, n in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{i}.jpg").write_bytes(jpeg_bytes())
    return root


def test_missing_path_names_it_and_the_layouts(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*train/<class>.*test/<class>"):
        load_data(str(tmp_path / "nowhere"), tmp_path)


def test_zip_without_test_folder(tmp_path):
    path = tmp_path / "only-train.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("train/cat/0.jpg", jpeg_bytes())
    with pytest.raises(DataError, match=r"has no test/ folder"):
        load_data(str(path), tmp_path)


def test_empty_class_folder_is_named(tmp_path):
    root = make_folder(tmp_path / "ds", {"train": {"cat": 2, "dog": 0}, "test": {"cat": 1, "dog": 1}})
    with pytest.raises(DataError, match=r"train/dog hold no images"):
        load_data(str(root), tmp_path / "cache")


def test_train_and_test_with_different_classes(tmp_path):
    root = make_folder(tmp_path / "ds", {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "emu": 1}})
    with pytest.raises(DataError, match=r"only in train/: \['dog'\].*only in test/: \['emu'\]"):
        load_data(str(root), tmp_path / "cache")


def test_unreadable_image_is_named(tmp_path):
    root = make_folder(tmp_path / "ds", {"train": {"cat": 1}, "test": {"cat": 1}})
    (root / "train" / "cat" / "notes.jpg").write_text("not an image")
    with pytest.raises(DataError, match=r"train/cat/notes.jpg is not an image"):
        load_data(str(root), tmp_path / "cache")


def test_wrapping_folder_in_a_zip_is_accepted(tmp_path):
    path = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(path, "w") as z:
        for split in ("train", "test"):
            z.writestr(f"mydata/{split}/cat/0.jpg", jpeg_bytes())
            z.writestr(f"mydata/{split}/dog/0.jpg", jpeg_bytes((0, 0, 255)))
    splits = load_data(str(path), tmp_path / "cache")
    assert splits.classes == ["cat", "dog"] and len(splits.train) == 2


def test_official_cifar10_offline_says_what_to_do(tmp_path, monkeypatch):
    # Point every download at a closed local port, so the test is offline even on a machine with internet.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv(ENV_VAR, raising=False)  # `make test` names the local official copy; this test has none
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz by hand.*--data"):
        load_data("cifar10", tmp_path)
