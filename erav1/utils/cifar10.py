"""The official CIFAR-10 pixels, wherever they come from, proven by a fingerprint.

``data="cifar10"`` means the official release (Krizhevsky, 2009), pixel for pixel.
It has two sources:

* a local lossless copy, an image folder or ``.zip`` laid out as
  ``train/<class>/*`` and ``test/<class>/*``, named by the environment variable
  ``ERAV1_CIFAR10``: how a machine without internet (or a book build that must
  not download) stands in for the download;
* otherwise torchvision's download into ``data_dir``, which torchvision
  md5-checks file by file.

Either way the decoded images are checked against :data:`FINGERPRINTS`, an
order-independent fingerprint of every split: a JPEG re-encoding, a resized
copy or a relabelled image cannot pass as ``cifar10``. A smaller copy (a
stratified subset for tests, say) passes when every one of its images is an
official image of its split with its official label; :data:`DIGEST_TABLE`
holds a short digest of each official image for that check.

The images are then put in one canonical order (by digest), so that
``subset``, the validation split and a seeded run pick the same images whether
the pixels came from torchvision (batch order) or from an image folder (sorted
by class and name).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from erav1.errors import DataError

ENV_VAR = "ERAV1_CIFAR10"
NAME = "CIFAR-10 (official pixels)"
SIZES = {"train": 50_000, "test": 10_000}
# sha256 over the sorted per-image digests (label + HWC pixels) of each official split; computed from the
# lossless copy that was checked pixel for pixel against the official batch files (scripts/fingerprint_cifar10.py).
FINGERPRINTS = {
    "train": "d59acf989e068e709ce686cda292672c7b212c08d29d3d3e6d8c3aa99eba6a85",
    "test": "899683d46c3a8c66fd56e1af12202e69fe5a4517be10b0f68e04c78fe585c57c",
}
# The first 8 bytes of every official image's digest, sorted, per split: a foreign image matches one of them by
# chance about once in 3e14 tries (4 bytes would let one of the JPEG copy's 50,000 images through), at 480 KB
# instead of the 1.9 MB of whole digests.
DIGEST_TABLE = Path(__file__).with_name("cifar10_digests.npz")
PREFIX_BYTES = 8


def image_digests(images: np.ndarray, labels: Sequence[int] | np.ndarray) -> list[bytes]:
    """sha256 of each image's label byte and pixels; ``images`` is N x H x W x 3 uint8, like torchvision's ``.data``."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be N x H x W x 3 uint8, got shape {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    pairs = zip(images, labels, strict=True)
    return [hashlib.sha256(bytes([int(label)]) + image.tobytes()).digest() for image, label in pairs]


def fingerprint(images: np.ndarray, labels: Sequence[int] | np.ndarray) -> str:
    """One hex digest for a whole split that ignores the order of its images."""
    return _fingerprint_of(image_digests(images, labels))


def _fingerprint_of(digests: list[bytes]) -> str:
    return hashlib.sha256(b"".join(sorted(digests))).hexdigest()


def nhwc(images: torch.Tensor) -> np.ndarray:
    """erav1's ``N x 3 x H x W`` tensors as the ``N x H x W x 3`` arrays that torchvision hands over."""
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def local_copy() -> Path | None:
    """The lossless copy that ``ERAV1_CIFAR10`` names, if any (an empty value means none)."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def _official_prefixes(split: str) -> np.ndarray:
    with np.load(DIGEST_TABLE) as table:
        return table[split]


def digest_prefixes(digests: list[bytes]) -> np.ndarray:
    """The first :data:`PREFIX_BYTES` of each digest as integers, the form :data:`DIGEST_TABLE` stores."""
    return np.frombuffer(b"".join(d[:PREFIX_BYTES] for d in digests), dtype=">u8").astype(np.uint64)


def _problems(split: str, digests: list[bytes]) -> list[str]:
    """What keeps these images from being official images of ``split``: nothing, for the split or a subset."""
    if len(digests) == SIZES[split] and _fingerprint_of(digests) == FINGERPRINTS[split]:
        return []
    problems = []
    foreign = int((~np.isin(digest_prefixes(digests), _official_prefixes(split))).sum())
    if foreign:
        problems.append(
            f"{foreign:,} of its {len(digests):,} {split} images are not official {split} images "
            "with their official label"
        )
    repeated = len(digests) - len(set(digests))
    if repeated:
        problems.append(f"{repeated:,} {split} images appear more than once")
    if len(digests) > SIZES[split]:
        problems.append(f"it has {len(digests):,} {split} images, more than the official {SIZES[split]:,}")
    return problems


def verify_and_order(splits: dict[str, tuple[np.ndarray, np.ndarray]], origin: str) -> dict[str, np.ndarray]:
    """Check that every split holds official images only; return each split's canonical order.

    ``splits`` maps a split name to its images (``N x H x W x 3`` uint8) and labels. A copy that fails gets one
    :class:`DataError` naming every split that differs and what to do; ``origin`` says where the copy came from.
    The canonical order sorts the images by digest, so it does not depend on the order the copy stores them in.
    """
    digests = {split: image_digests(images, labels) for split, (images, labels) in splits.items()}
    problems = {split: _problems(split, d) for split, d in digests.items()}
    differing = [split for split, found in problems.items() if found]
    if differing:
        detail = "; ".join(f"{split}: {', '.join(problems[split])}" for split in differing)
        raise DataError(
            f"{origin} is not the official CIFAR-10: its {' and '.join(differing)} split"
            f"{'s differ' if len(differing) > 1 else ' differs'} ({detail}). 'cifar10' means the official pixels: "
            f"point {ENV_VAR} at a lossless copy of them, or unset it to download the official release with "
            "torchvision. To train on this copy anyway, pass its path as the data (--data PATH), which names it "
            "as what it is."
        )
    return {split: np.array(sorted(range(len(d)), key=d.__getitem__), dtype=np.int64) for split, d in digests.items()}


def describe_official(counts: dict[str, int], origin: str) -> str:
    """'CIFAR-10 (official pixels), read from ...', saying so when the copy holds only part of a split."""
    partial = [f"{counts[s]:,} of {SIZES[s]:,} {s}" for s in SIZES if counts[s] != SIZES[s]]
    name = NAME if not partial else f"{NAME[:-1]}, a subset: {' and '.join(partial)} images)"
    return f"{name}, {origin}"
