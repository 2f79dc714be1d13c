"""Batched, seeded augmentation as tensor ops on the training device.

Every function takes a batch ``(N, C, H, W)`` (or one image ``(C, H, W)``) of
any dtype, draws an independent random choice per image from ``generator``,
and never loops over samples in Python.  Training applies them to uint8
batches before normalisation; the book applies the very same functions to
single images to show what they do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erav1.utils.policies import check_choice
from erav1.utils.text import Markdown, percent

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The mean colour as uint8 pixels: what normalize() maps to (about) 0.
CIFAR10_MEAN_UINT8 = tuple(round(255 * m) for m in CIFAR10_MEAN)
FLIP_P = 0.5  # probability of a horizontal flip
CUTOUT_FILLS = ("zero", "mean")  # what Cutout's square holds: black, or the mean colour


def _stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (3, 1, 1) if like.dim() == 3 else (1, 3, 1, 1)
    mean = torch.tensor(CIFAR10_MEAN, device=like.device).view(shape)
    std = torch.tensor(CIFAR10_STD, device=like.device).view(shape)
    return mean, std


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (or floats in [0, 1]) -> float32 with CIFAR-10 mean 0, std 1."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    mean, std = _stats(x)
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo :func:`normalize`: back to RGB floats in [0, 1] for display."""
    mean, std = _stats(x)
    return (x.float() * std + mean).clamp(0.0, 1.0)


def _batched(fn):
    """Let a batch transform also accept a single (C, H, W) image."""

    def wrapper(images: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if images.dim() == 3:
            return fn(images.unsqueeze(0), *args, **kwargs).squeeze(0)
        return fn(images, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


@_batched
def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop(size, padding) with zero padding: each image shifts by up to ``padding`` px."""
    if padding == 0:
        return images
    n, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    rows = (dy[:, None] + torch.arange(h, device=device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device))[:, None, :]
    batch = torch.arange(n, device=device)[:, None, None]
    # Gather in NHWC; the permuted view back to NCHW is already channels_last.
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


@_batched
def random_horizontal_flip(images: torch.Tensor, generator: torch.Generator, p: float = FLIP_P) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(3), images)


@_batched
def cutout(
    images: torch.Tensor, size: int, generator: torch.Generator, p: float = 1.0, fill: str = "zero"
) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017): blank a ``size`` x ``size`` square per image.

    The centre is uniform over the image, so the square is clipped at the
    borders.  With ``p < 1`` only that fraction of images is cut; the random
    draws are the same either way, so a seed means the same squares.

    ``fill="zero"`` makes the square black.  ``fill="mean"`` gives it the mean
    colour, which is 0 after :func:`normalize`: what the paper gets by zeroing
    the normalised tensor, and the course's ``CoarseDropout(fill_value=mean)``.
    The fill changes no random draw, so a seed cuts the same squares.
    """
    n, _, h, w = images.shape
    device = images.device
    cy = torch.randint(0, h, (n, 1), generator=generator, device=device)
    cx = torch.randint(0, w, (n, 1), generator=generator, device=device)
    apply = torch.rand(n, generator=generator, device=device) < p
    top, left = cy - size // 2, cx - size // 2
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    in_rows = (ys >= top) & (ys < top + size)
    in_cols = (xs >= left) & (xs < left + size)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]
    if check_choice("cutout fill", fill, CUTOUT_FILLS) == "zero":
        return images.masked_fill(mask[:, None], 0)
    mean = CIFAR10_MEAN_UINT8 if images.dtype == torch.uint8 else CIFAR10_MEAN  # floats: in [0, 1], as normalize
    colour = torch.tensor(mean, dtype=images.dtype, device=device).view(1, -1, 1, 1)
    return torch.where(mask[:, None], colour, images)


@dataclass(frozen=True)
class Augmentation:
    """The training augmentation: crop with zero padding, flip, Cutout."""

    crop_padding: int = 4
    flip: bool = True
    cutout_size: int = 16
    cutout_p: float = 1.0
    cutout_fill: str = "zero"

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = random_crop(images, self.crop_padding, generator)
        if self.flip:
            images = random_horizontal_flip(images, generator)
        if self.cutout_size > 0 and self.cutout_p > 0:
            images = cutout(images, self.cutout_size, generator, self.cutout_p, self.cutout_fill)
        return images


_FILLED = {"zero": "set to zero", "mean": "filled with the mean colour"}


def describe_augmentation(augmentation: Augmentation, image_size: int = 32) -> Markdown:
    """What the training augmentation does to one image, with the numbers taken from ``augmentation``."""
    pad, size = augmentation.crop_padding, augmentation.cutout_size
    shifts = (2 * pad + 1) ** 2
    parts = []
    if pad:
        parts.append(
            f"it is padded with {pad} px of zeros on every side and cropped back to "
            f"{image_size}x{image_size} at a random offset, one of {shifts} positions"
        )
    if augmentation.flip:
        parts.append(f"it is mirrored left-right with probability {percent(FLIP_P, 0)}")
    if size and augmentation.cutout_p:
        parts.append(
            f"a {size}x{size} square, at most {percent(size**2 / image_size**2, 0)} of the pixels, "
            f"is {_FILLED[augmentation.cutout_fill]} in {percent(augmentation.cutout_p, 0)} of the images "
            "(centred anywhere, so it is clipped at the borders)"
        )
    variants = shifts * (2 if augmentation.flip else 1) * (image_size**2 if size and augmentation.cutout_p else 1)
    return Markdown(
        "Every time a training image is drawn, " + "; ".join(parts) + ". "
        f"That is up to {variants:,} different versions of each picture, and a new one every epoch."
    )


def describe_cutout_fill(augmentation: Augmentation) -> Markdown:
    """Which colour the recipe's Cutout square has, what each fill feeds the network, and why this one."""
    mean = ", ".join(str(v) for v in CIFAR10_MEAN_UINT8)
    below = [m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD, strict=True)]  # black, in standard deviations
    why = {
        "zero": "the fill the published runs were trained with. Which fill trains the better model in 20 epochs is a "
        "question for validation data, never the test set: chapter 3's recipe study searches "
        "`cutout_fill`, and the book's recipe changes only to the study's best recipe on validation, once its "
        "three seeds have trained on the whole training set. What the study measured for the mean fill alone:",
        "mean": "the fill that chapter 3's recipe study chose on validation data, never on the test set.",
    }[augmentation.cutout_fill]
    return Markdown(
        "The two fills differ in what the network sees where the square is. A black square is 0 in the stored "
        f"image, which normalisation turns into {min(below):.1f} to {max(below):.1f} standard deviations below the "
        f"mean in each channel, a strong and unusual input. The mean colour (RGB {mean}) becomes 0 after "
        "normalisation, as in DeVries & Taylor's Cutout (they zero the normalised tensor) and the course's "
        f'`CoarseDropout(fill_value=mean)`. This book\'s recipe uses **`cutout_fill="{augmentation.cutout_fill}"`**: '
        + why
    )
