"""Picking the misclassified images, on real test images with hand-made predictions."""

from __future__ import annotations

import pytest
import torch

from erav1.errors import UsageError
from erav1.utils.evaluation import Predictions
from erav1.utils.misclassified import find_misclassified


@pytest.fixture(scope="module")
def images(small_splits):
    """The first 8 real test images and their labels."""
    return small_splits.test.take(torch.arange(8))


@pytest.fixture(scope="module")
def predictions(images):
    """Known mistakes at indices 1, 3, 4, 6; 3 and 6 equally confident; 4 the most confident."""
    targets = images.labels.clone()
    logits = torch.zeros(8, 10)
    logits[torch.arange(8), targets] = 3.0  # right, unless overwritten below
    wrong = {1: 1.0, 3: 2.0, 4: 6.0, 6: 2.0}  # index -> logit of the wrong class
    for i, value in wrong.items():
        logits[i] = 0.0
        logits[i, (targets[i] + 1) % 10] = value
    return Predictions(logits, targets)


def test_most_confident_mistakes_first_ties_by_index(predictions, images):
    items = find_misclassified(predictions, images, n=10)
    assert [item.index for item in items] == [4, 3, 6, 1]
    probs = predictions.probs
    for item in items:
        assert item.true == int(images.labels[item.index])
        assert item.pred == (item.true + 1) % 10 != item.true
        assert item.confidence == pytest.approx(probs[item.index, item.pred].item())
        assert item.image.dtype == torch.uint8 and item.image.shape == (3, 32, 32)
        assert torch.equal(item.image, images.images[item.index])
    assert items[0].confidence > items[1].confidence == items[2].confidence > items[3].confidence


def test_index_order_and_n(predictions, images):
    assert [item.index for item in find_misclassified(predictions, images, n=10, order="index")] == [1, 3, 4, 6]
    assert [item.index for item in find_misclassified(predictions, images, n=2, order="index")] == [1, 3]
    assert [item.index for item in find_misclassified(predictions, images, n=2)] == [4, 3]
    assert find_misclassified(predictions, images, n=0) == []


def test_the_selection_is_deterministic(predictions, images):
    first = find_misclassified(predictions, images, n=3)
    second = find_misclassified(predictions, images, n=3)
    assert [(i.index, i.pred, i.confidence) for i in first] == [(i.index, i.pred, i.confidence) for i in second]


def test_bad_arguments(predictions, images, small_splits):
    with pytest.raises(UsageError, match="unknown order 'loss'; choose one of: confidence, index"):
        find_misclassified(predictions, images, order="loss")
    with pytest.raises(ValueError, match="another dataset"):
        find_misclassified(predictions, small_splits.test.take(torch.arange(100, 108)))  # other labels
    with pytest.raises(ValueError, match="at least 0"):
        find_misclassified(predictions, images, n=-1)
