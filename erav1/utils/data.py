"""CIFAR-10 as in-memory uint8 tensors, from torchvision or an image folder.

Two kinds of source sit behind :func:`load_data`:

* ``"cifar10"``: the official pixels, from torchvision's download or from a
  local lossless copy named by ``ERAV1_CIFAR10``, proven by a fingerprint
  (:mod:`erav1.utils.cifar10`);
* a path to a directory or ``.zip`` laid out as ``train/<class>/*`` and
  ``test/<class>/*`` (class names sorted give the label numbers), named as what
  it is.

Either way the images are decoded once into ``(N, 3, 32, 32)`` uint8 tensors.
Training then slices batches straight out of memory, so no per-image
DataLoader sits on the hot path.  Decoded image folders are cached, so the
second load of all 60,000 images takes about a second.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from erav1.errors import DataError
from erav1.utils import cifar10
from erav1.utils.checkpoint import atomic_save
from erav1.utils.text import Markdown, markdown_table

SPLITS = ("train", "test")
CACHE_VERSION = 2
LAYOUTS = (
    "erav1 reads either 'cifar10' (the official dataset: torchvision's download, or the lossless copy that "
    f"{cifar10.ENV_VAR} names) "
    "or a path to a directory or .zip laid out as train/<class>/<image> and "
    "test/<class>/<image>, with the same class folders in both."
)
OFFICIAL_ARCHIVE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# The label order of the official release, which sorted image-folder names also give.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ImageSet:
    """Images ``(N, 3, H, W)`` uint8, labels ``(N,)`` int64 and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices], self.classes)

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device), self.classes)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels.cpu(), minlength=len(self.classes)).tolist()

    def examples(self, per_class: int = 1) -> ImageSet:
        """The first ``per_class`` images of every class, class by class: a small varied sample."""
        labels = self.labels.cpu()
        chosen = [(labels == c).nonzero().flatten()[:per_class] for c in range(len(self.classes))]
        return self.take(torch.cat(chosen).to(self.labels.device))


@dataclass
class DataSplits:
    """Train, test, and an optional validation part held out of train."""

    train: ImageSet
    test: ImageSet
    val: ImageSet | None = None
    # What the images are and where they were read from, without this machine's folders, e.g.
    # 'CIFAR-10 (official pixels), read from cifar10-png.zip (60,000 .png files)' or 'my-data.zip (1,200 .jpg files)'.
    source: str = ""
    # Order-independent fingerprints of the whole train and test splits as loaded (before subset and validation).
    fingerprints: dict[str, str] | None = None

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def eval_name(self) -> str:
        """The split that is scored every epoch: validation when there is one."""
        return "test" if self.val is None else "val"

    @property
    def eval_set(self) -> ImageSet:
        return self.test if self.val is None else self.val


def load_data(
    data: str,
    data_dir: str | os.PathLike = "~/.cache/erav1",
    subset: int | None = None,
    val_fraction: float = 0.0,
    resize: bool = True,
    verbose: bool = True,
) -> DataSplits:
    """Load train/test, optionally shrink each split to ``subset`` images and hold out validation.

    ``subset`` keeps N images per split, stratified by class; ``val_fraction``
    moves a stratified part of train into ``val``.  Both are deterministic and
    independent of the training seed, so every run scores the same images.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    data_dir = Path(data_dir).expanduser()
    if data.lower() == "cifar10":
        train, test, source = _load_official(data_dir, verbose)
    else:
        train, test, contents = _read_image_folder(data, data_dir, resize, verbose=verbose)
        source = f"{Path(data).expanduser().name} ({contents})"
    fingerprints = {
        split: cifar10.fingerprint(cifar10.nhwc(part.images), part.labels.numpy())
        for split, part in zip(SPLITS, (train, test), strict=True)
    }
    if subset is not None:
        train, test = stratified_subset(train, subset), stratified_subset(test, subset)
    val = None
    if val_fraction > 0:
        train, val = split_validation(train, val_fraction)
    return DataSplits(train, test, val, source, fingerprints)


def _per_class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Indices of each class in a fixed shuffled order (seed 0)."""
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=generator)
    shuffled = labels[order]
    return [order[shuffled == c] for c in range(num_classes)]


def stratified_subset(dataset: ImageSet, n: int) -> ImageSet:
    """``n`` images with the classes as balanced as possible; deterministic."""
    if n <= 0:
        raise DataError(f"subset must be a positive number of images, got {n}")
    if n >= len(dataset):
        return dataset
    num_classes = len(dataset.classes)
    per_class = _per_class_indices(dataset.labels, num_classes)
    quota = [n // num_classes + (c < n % num_classes) for c in range(num_classes)]
    chosen = torch.cat([idx[:q] for idx, q in zip(per_class, quota, strict=True)])
    return dataset.take(chosen.sort().values)


def split_validation(dataset: ImageSet, fraction: float) -> tuple[ImageSet, ImageSet]:
    """Hold out ``fraction`` of every class; returns (train, val)."""
    per_class = _per_class_indices(dataset.labels, len(dataset.classes))
    n_val = [round(len(idx) * fraction) for idx in per_class]
    val = torch.cat([idx[:k] for idx, k in zip(per_class, n_val, strict=True)])
    train = torch.cat([idx[k:] for idx, k in zip(per_class, n_val, strict=True)])
    if len(val) == 0 or len(train) == 0:
        raise DataError(f"val_fraction={fraction} leaves an empty train or validation split")
    return dataset.take(train.sort().values), dataset.take(val.sort().values)


# --- the official dataset ------------------------------------------------------------


def _load_official(data_dir: Path, verbose: bool) -> tuple[ImageSet, ImageSet, str]:
    """The official pixels from the local copy that ``ERAV1_CIFAR10`` names, else torchvision's download.

    Either source is verified against the official fingerprints and put in the canonical order, so the
    same run sees the same images in the same order wherever its pixels came from.
    """
    copy = cifar10.local_copy()
    if copy is not None:
        if not copy.exists():
            raise DataError(
                f"{cifar10.ENV_VAR} names {copy} as the local copy of CIFAR-10, but it does not exist; "
                f"point {cifar10.ENV_VAR} at an image folder or .zip of the official pixels, or unset it to download "
                "them with torchvision"
            )
        train, test, contents = _read_image_folder(copy, data_dir, verbose=verbose)
        if train.classes != list(CIFAR10_CLASSES):
            raise DataError(
                f"{copy} (named by {cifar10.ENV_VAR}) has the classes {', '.join(train.classes)}, "
                f"not CIFAR-10's {', '.join(CIFAR10_CLASSES)}"
            )
        origin, where = f"read from {copy.name} ({contents})", f"{copy} (named by {cifar10.ENV_VAR})"
    else:
        train, test = _load_torchvision_cifar10(data_dir)
        origin, where = "downloaded by torchvision", f"the torchvision download in {data_dir}"
    sets = {"train": train, "test": test}
    orders = cifar10.verify_and_order(
        {split: (cifar10.nhwc(part.images), part.labels.numpy()) for split, part in sets.items()}, where
    )
    train, test = (sets[split].take(torch.from_numpy(orders[split])) for split in SPLITS)
    return train, test, cifar10.describe_official({"train": len(train), "test": len(test)}, origin)


def _load_torchvision_cifar10(root: Path) -> tuple[ImageSet, ImageSet]:
    from torchvision.datasets import CIFAR10

    sets = []
    for train in (True, False):
        try:
            ds = CIFAR10(root=str(root), train=train, download=True)
        except Exception as exc:  # URLError, socket errors, checksum failures ...
            raise DataError(
                f"could not get the official CIFAR-10 into {root} ({type(exc).__name__}: {exc}). "
                f"Offline, download {OFFICIAL_ARCHIVE} by hand and put it in {root}/, "
                "or point --data at an image folder or .zip (train/<class>/*, test/<class>/*)."
            ) from None
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        sets.append(ImageSet(images, torch.tensor(ds.targets, dtype=torch.long), list(ds.classes)))
    return sets[0], sets[1]


# --- image folders and zips ----------------------------------------------------------


class _Tree:
    """A read-only view of ``train/`` and ``test/`` in a directory or a zip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile:
                raise DataError(f"{path} is neither a directory nor a readable .zip. {LAYOUTS}") from None
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
            self.files = [n for n in names if not _hidden(n)]
        else:
            self.files = [
                p.relative_to(path).as_posix()
                for p in path.rglob("*")
                if p.is_file() and not _hidden(p.relative_to(path).as_posix())
            ]
        self.prefix = self._find_root()

    def _find_root(self) -> str:
        """'' when train/ and test/ sit at the top, or 'name/' for one wrapping folder."""
        tops = {f.split("/")[0] for f in self.files if "/" in f}
        for prefix in [""] + [t + "/" for t in sorted(tops)]:
            if all(any(f.startswith(f"{prefix}{s}/") for f in self.files) for s in SPLITS):
                return prefix
        missing = [s for s in SPLITS if not any(f.startswith(f"{s}/") for f in self.files)]
        raise DataError(f"{self.path} has no {' or '.join(m + '/' for m in missing)} folder. {LAYOUTS}")

    def split(self, split: str) -> dict[str, list[str]]:
        """{class name: sorted file names} for one split."""
        start = f"{self.prefix}{split}/"
        classes: dict[str, list[str]] = {}
        if self.zip is None:  # empty class folders exist only as directories
            for d in (self.path / start).iterdir():
                if d.is_dir() and not _hidden(d.name):
                    classes[d.name] = []
        else:
            for name in self.zip.namelist():
                parts = name[len(start) :].split("/")
                if name.startswith(start) and len(parts) == 2 and parts[1] == "" and not _hidden(parts[0]):
                    classes[parts[0]] = []
        for f in self.files:
            parts = f[len(start) :].split("/")
            if f.startswith(start) and len(parts) == 2:
                classes.setdefault(parts[0], []).append(f)
        return {c: sorted(files) for c, files in sorted(classes.items())}

    def opener(self, name: str) -> Callable[[], bytes]:
        if self.zip is not None:
            return lambda: self.zip.read(name)
        return lambda: (self.path / name).read_bytes()


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _fingerprint(path: Path, resize: bool) -> str:
    """Cache key: the source's identity and size/mtime, so an edited folder is re-read."""
    h = hashlib.sha1(f"v{CACHE_VERSION}|{path}|{resize}".encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_image_folder(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    resize: bool = True,
    size: int = 32,
    verbose: bool = True,
) -> tuple[ImageSet, ImageSet]:
    """Decode ``train/`` and ``test/`` of a directory or zip; cache the arrays in ``cache_dir``."""
    train, test, _ = _read_image_folder(path, cache_dir, resize, size, verbose)
    return train, test


def _file_kinds(layout: dict[str, dict[str, list[str]]]) -> str:
    """'60,000 .jpg files': what the decoded images were stored as, so a report can say they were JPEGs."""
    kinds = Counter(
        PurePosixPath(f).suffix.lower() or "(no suffix)"
        for classes in layout.values()
        for files in classes.values()
        for f in files
    )
    return ", ".join(f"{n:,} {suffix}" for suffix, n in kinds.most_common()) + " files"


def _read_image_folder(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    resize: bool = True,
    size: int = 32,
    verbose: bool = True,
) -> tuple[ImageSet, ImageSet, str]:
    """:func:`load_image_folder`, plus what the files were (kept in the cache, so a cached load lists nothing)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist. {LAYOUTS}")
    path = path.resolve()
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir).expanduser() / f"{path.stem}-{_fingerprint(path, resize)}.pt"
        if cache_file.exists():
            try:
                cached = torch.load(cache_file, weights_only=True)
                train, test = (ImageSet(*cached[s], cached["classes"]) for s in SPLITS)
                return train, test, cached["files"]
            except Exception:
                pass  # a stale or broken cache is simply rebuilt
    tree = _Tree(path)
    layout = {s: tree.split(s) for s in SPLITS}
    _check_classes(path, layout)
    classes = list(layout["train"])
    contents = _file_kinds(layout)
    repairs = {"converted to RGB": 0, f"resized to {size}x{size}": 0}
    sets = []
    for split in SPLITS:
        items = [(f, c) for c, files in enumerate(layout[split].values()) for f in files]
        images = np.empty((len(items), size, size, 3), dtype=np.uint8)
        for i, (name, _) in enumerate(items):
            images[i] = _decode(path, name, tree.opener(name), size, resize, repairs)
        labels = torch.tensor([c for _, c in items], dtype=torch.long)
        sets.append(ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, classes))
    done = [f"{n} images {what}" for what, n in repairs.items() if n]
    if done and verbose:
        print(f"note: {path.name}: " + ", ".join(done))
    if cache_file is not None:
        try:
            atomic_save(
                {
                    "classes": classes,
                    "files": contents,
                    **{s: (d.images, d.labels) for s, d in zip(SPLITS, sets, strict=True)},
                },
                cache_file,
            )
        except OSError:
            pass  # a read-only cache folder only costs speed
    return sets[0], sets[1], contents


def _check_classes(path: Path, layout: dict[str, dict[str, list[str]]]) -> None:
    for split, classes in layout.items():
        if not classes:
            raise DataError(f"{path}: {split}/ has no class folders. {LAYOUTS}")
        empty = [c for c, files in classes.items() if not files]
        if empty:
            raise DataError(f"{path}: class folder(s) {', '.join(f'{split}/{c}' for c in empty)} hold no images")
    train, test = set(layout["train"]), set(layout["test"])
    if train != test:
        only = [
            f"only in train/: {sorted(train - test)}" if train - test else "",
            f"only in test/: {sorted(test - train)}" if test - train else "",
        ]
        raise DataError(f"{path}: train/ and test/ have different class folders ({'; '.join(o for o in only if o)})")


def _decode(
    root: Path, name: str, read: Callable[[], bytes], size: int, resize: bool, repairs: dict[str, int]
) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(read())) as img:
            img.load()
            if img.mode != "RGB":
                img = img.convert("RGB")
                repairs["converted to RGB"] += 1
            if img.size != (size, size):
                if not resize:
                    raise DataError(
                        f"{root}/{name} is {img.size[0]}x{img.size[1]}, not {size}x{size}, and resizing is off; "
                        "drop --no-resize (resize=False) to have such images resized, or resize them yourself"
                    )
                img = img.resize((size, size), Image.BILINEAR)
                repairs[f"resized to {size}x{size}"] += 1
            return np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:  # its message would only name an in-memory buffer
        raise DataError(f"{root}/{name} is not an image Pillow can read; remove it from the folder") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{root}/{name} is damaged or truncated ({exc}); replace or remove it") from None


def iter_batches(n: int, batch_size: int, order: torch.Tensor | None = None) -> Iterator[torch.Tensor | slice]:
    """Index batches over ``n`` items: a permutation's chunks, or plain slices."""
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size] if order is not None else slice(start, start + batch_size)


def describe_splits(splits: DataSplits) -> Markdown:
    """The dataset at a glance: where it came from, split sizes, and images per class in every split."""
    sets = {"train": splits.train, "test": splits.test} | ({"val": splits.val} if splits.val is not None else {})
    counts = {name: part.class_counts() for name, part in sets.items()}
    rows = [[name] + [counts[split][c] for split in sets] for c, name in enumerate(splits.classes)]
    rows.append(["**all classes**"] + [len(part) for part in sets.values()])
    channels, height, width = splits.train.images.shape[1:]
    official = ""
    if splits.fingerprints == cifar10.FINGERPRINTS:
        official = (
            " Both splits match the fingerprints of the official release (train `"
            f"{splits.fingerprints['train'][:12]}…`, test `{splits.fingerprints['test'][:12]}…`), "
            "whichever copy they were read from: these are the official pixels."
        )
    return Markdown(
        f"Source: {splits.source}. {len(splits.classes)} classes; every image is {height}x{width} pixels with "
        f"{channels} colour channels, stored as `uint8`. "
        + ", ".join(f"{len(part):,} {name}" for name, part in sets.items())
        + " images."
        + official
        + "\n\n"
        + markdown_table(["class", *sets], rows)
    )
