"""The package helpers that write the numbers the chapters quote: each number is measured, none typed."""

from __future__ import annotations

import torch

from erav1.main import Config, describe_config
from erav1.models import compare_stems, count_parameters, describe_parameters, get_model, stage_sizes
from erav1.utils.data import DataSplits, ImageSet, describe_splits
from erav1.utils.policies import describe_schedule, lr_trajectory
from erav1.utils.rundir import describe_history
from erav1.utils.text import Markdown, markdown_table
from erav1.utils.transforms import Augmentation, describe_augmentation, describe_cutout_fill


def test_markdown_renders_in_notebooks_and_prints_as_text():
    text = Markdown(markdown_table(["a", "b"], [[1, 2]]))
    assert text._repr_markdown_() == str(text) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_describe_splits_counts_every_class_in_every_split():
    images = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    train = ImageSet(images, torch.tensor([0, 0, 0, 1, 1, 1]), ["cat", "dog"])
    test = ImageSet(images[:2], torch.tensor([0, 1]), ["cat", "dog"])
    text = describe_splits(DataSplits(train, test, source="here"))
    assert "6 train, 2 test images" in text and "32x32 pixels" in text
    assert "| cat | 3 | 1 |" in text and "| **all classes** | 6 | 2 |" in text


def test_examples_takes_the_first_images_of_each_class():
    images = torch.arange(5).view(5, 1, 1, 1).expand(5, 3, 2, 2).to(torch.uint8)
    dataset = ImageSet(images, torch.tensor([1, 0, 1, 0, 2]), ["a", "b", "c"])
    assert dataset.examples(per_class=1).labels.tolist() == [0, 1, 2]
    assert dataset.examples(per_class=1).images[:, 0, 0, 0].tolist() == [1, 0, 4]


def test_describe_augmentation_derives_its_numbers_from_the_recipe():
    text = describe_augmentation(Augmentation(crop_padding=4, flip=True, cutout_size=16, cutout_p=0.5))
    assert "one of 81 positions" in text and "at most 25% of the pixels" in text and "in 50% of the images" in text
    assert f"{81 * 2 * 32 * 32:,} different versions" in text
    assert "Cutout" not in describe_augmentation(Augmentation(cutout_size=0)) and "square" not in (
        describe_augmentation(Augmentation(cutout_size=0))
    )


def test_the_cutout_fill_text_names_the_recipes_fill_and_the_measured_offsets():
    black = describe_cutout_fill(Augmentation())
    assert '`cutout_fill="zero"`' in black and "published runs were trained with" in black
    assert "1.7 to 2.0 standard deviations below" in black and "RGB 125, 123, 114" in black
    chosen = describe_cutout_fill(Augmentation(cutout_fill="mean"))
    assert '`cutout_fill="mean"`' in chosen and "chose on validation data" in chosen


def test_stems_and_parameters_are_measured():
    model = get_model("resnet18")
    assert stage_sizes(model)["layer3"] == (256, 8, 8) and stage_sizes(model)["layer4"] == (512, 4, 4)
    table = compare_stems()
    assert "| stem | 32x32 (64 channels) | 8x8 (64 channels) |" in table
    assert "| layer4 | 4x4 (512 channels) | 1x1 (512 channels) |" in table
    assert f"{count_parameters(model):,} parameters in all" in describe_parameters(model)


def test_schedule_description_comes_from_the_real_scheduler():
    lrs = lr_trajectory("onecycle", 0.1, epochs=4, pct_start=0.25, steps_per_epoch=10)
    assert max(lrs) == 0.1 and lrs[0] < 0.1 and lrs[-1] < lrs[0]
    text = describe_schedule("onecycle", 0.1, 20, 0.25)
    assert "peak 0.1" in text and "during epoch 5 of 20" in text


def test_history_reports_the_final_epoch_with_the_best_beside_it():
    history = [
        {"epoch": 1, "train_acc": 0.5, "test_acc": 0.62, "seconds": 30.0, "images_per_s": 100.0},
        {"epoch": 2, "train_acc": 0.6, "test_acc": 0.60, "seconds": 30.0, "images_per_s": 110.0},
    ]
    text = describe_history(history)
    assert "After the final epoch (2), test accuracy is **60.00%**" in text
    assert "best epoch by test accuracy was epoch 1 (62.00%)" in text
    assert "60.00%: the same as the test accuracy" in text and "1.0 min for 2 epoch(s)" in text
    history[-1]["train_acc"] = 0.55
    assert "55.00%: 5.00 points below the test accuracy" in describe_history(history)


def test_config_table_lists_every_option():
    text = describe_config(Config(epochs=3))
    assert "| `epochs` | `3` | number of training epochs |" in text
    assert text.count("\n") == len(Config.__dataclass_fields__) + 1
