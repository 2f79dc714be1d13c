import pytest
import torch

from erav1.errors import UsageError
from erav1.utils.transforms import (
    CIFAR10_MEAN,
    Augmentation,
    cutout,
    denormalize,
    describe_augmentation,
    normalize,
    random_crop,
    random_horizontal_flip,
)


def coded_images(n: int, size: int = 32) -> torch.Tensor:
    """Images whose every pixel is unique and non-zero, so a shift can be read off exactly."""
    base = torch.arange(1, size * size + 1, dtype=torch.int64).view(1, 1, size, size)
    return base.expand(n, 3, size, size).clone()


def find_shift(original: torch.Tensor, cropped: torch.Tensor) -> tuple[int, int]:
    """(dy, dx) such that cropped[y, x] == original[y + dy, x + dx] wherever non-zero."""
    pos = (cropped[0] > 0).nonzero()[0]
    value = cropped[0, pos[0], pos[1]]
    src = (original[0] == value).nonzero()[0]
    return int(src[0] - pos[0]), int(src[1] - pos[1])


def test_random_crop_shifts_at_most_padding_and_pads_with_zeros():
    images = coded_images(64)
    out = random_crop(images, 4, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    shifts = set()
    for orig, crop in zip(images, out, strict=True):
        dy, dx = find_shift(orig, crop)
        assert abs(dy) <= 4 and abs(dx) <= 4
        shifts.add((dy, dx))
        # Every pixel is either the shifted original or a zero from the padding.
        shifted = torch.zeros_like(orig)
        ys, xs = slice(max(0, -dy), 32 - max(0, dy)), slice(max(0, -dx), 32 - max(0, dx))
        shifted[:, ys, xs] = orig[:, max(0, dy) : 32 + min(0, dy), max(0, dx) : 32 + min(0, dx)]
        assert torch.equal(crop, shifted)
    assert len(shifts) > 10  # independent draws per image


def test_flip_mirrors_about_half_the_images():
    images = coded_images(200)
    out = random_horizontal_flip(images, torch.Generator().manual_seed(1))
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, images, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images, strict=True)])
    assert bool((flipped | kept).all())
    assert 60 < int(flipped.sum()) < 140


def test_cutout_zeroes_16x16_inside_and_is_clipped_at_borders():
    images = torch.full((500, 3, 32, 32), 7, dtype=torch.uint8)
    out = cutout(images, 16, torch.Generator().manual_seed(2))
    zeros = (out == 0).all(dim=1)  # (N, H, W): a square is cut in every channel
    areas = zeros.sum(dim=(1, 2))
    assert bool(((out == 0) | (out == 7)).all())
    assert bool((areas == 256).any()) and bool((areas < 256).any())
    assert int(areas.max()) == 256 and int(areas.min()) >= 64  # centre in the image: at least 8x8 survives
    for mask in zeros:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        # the cut region is one axis-aligned rectangle
        assert int(mask.sum()) == len(rows) * len(cols)
        if len(rows) == 16 and len(cols) == 16:
            continue
        assert rows[0] == 0 or rows[-1] == 31 or cols[0] == 0 or cols[-1] == 31  # clipped at a border


def test_cutout_probability_applies_to_that_fraction():
    images = torch.full((1000, 3, 32, 32), 7, dtype=torch.uint8)
    out = cutout(images, 16, torch.Generator().manual_seed(3), p=0.5)
    cut = (out == 0).flatten(1).any(1)
    assert 430 < int(cut.sum()) < 570


def test_cutout_mean_fill_is_the_mean_colour_which_normalises_to_zero_in_the_same_squares():
    images = torch.randint(0, 256, (200, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    zero = cutout(images, 16, torch.Generator().manual_seed(4), p=0.5)
    mean = cutout(images, 16, torch.Generator().manual_seed(4), p=0.5, fill="mean")
    cut = (zero != images).any(1, keepdim=True)  # a random pixel is almost never (0, 0, 0) already
    assert 0 < int(cut.flatten(1).any(1).sum()) < 200
    assert torch.equal((mean != images).any(1, keepdim=True), cut), "the same squares, whatever the fill"
    expected = torch.tensor([round(255 * m) for m in CIFAR10_MEAN], dtype=torch.uint8).view(1, 3, 1, 1)
    assert bool((mean == expected).masked_select(cut.expand_as(mean)).all()), "every cut pixel is the mean colour"
    assert bool((zero == 0).masked_select(cut.expand_as(zero)).all()), "fill 'zero' is still black"
    normalised = normalize(mean).permute(1, 0, 2, 3)[:, cut[:, 0]]  # (channel, cut pixels)
    assert normalised.abs().max() < 0.01, "the mean colour is 0 once normalised, in every channel"
    floats = cutout(images.float() / 255, 16, torch.Generator().manual_seed(4), p=0.5, fill="mean")
    assert normalize(floats).permute(1, 0, 2, 3)[:, cut[:, 0]].abs().max() < 1e-6
    with pytest.raises(UsageError, match="choose one of: zero, mean"):
        cutout(images, 16, torch.Generator(), fill="grey")


def test_augmentation_passes_its_cutout_fill_and_the_book_says_which():
    images = torch.full((64, 3, 32, 32), 7, dtype=torch.uint8)
    mean_fill = Augmentation(crop_padding=0, flip=False, cutout_fill="mean")
    out = mean_fill(images, torch.Generator().manual_seed(6))
    assert {tuple(p) for p in out.permute(0, 2, 3, 1).reshape(-1, 3).tolist()} == {
        (7, 7, 7),
        tuple(round(255 * m) for m in CIFAR10_MEAN),
    }
    assert "set to zero" in describe_augmentation(Augmentation())
    assert "filled with the mean colour" in describe_augmentation(mean_fill)


def test_augmentation_is_reproducible_from_a_seed_and_independent_across_samples():
    images = coded_images(32).to(torch.uint8)
    augment = Augmentation()
    a = augment(images, torch.Generator().manual_seed(42))
    b = augment(images, torch.Generator().manual_seed(42))
    c = augment(images, torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({x.numpy().tobytes() for x in a}) == 32  # same input, 32 different outputs


def test_single_images_use_the_same_functions():
    image = coded_images(1)[0]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    single = random_crop(image, 4, g1)
    batch = random_crop(image.unsqueeze(0), 4, g2)[0]
    assert single.shape == (3, 32, 32) and torch.equal(single, batch)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_normalize_round_trips(dtype):
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    x = normalize(images if dtype == torch.uint8 else images.float() / 255)
    assert x.dtype == torch.float32
    assert torch.allclose(denormalize(x), images.float() / 255, atol=1e-6)
    mean_pixel = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(normalize(mean_pixel), torch.zeros(1, 3, 2, 2), atol=1e-6)
