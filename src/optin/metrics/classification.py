"""Classification metrics: accuracy, balanced accuracy, confusion matrix, chance level."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def confusion_matrix(truth: Tensor, predicted: Tensor, n_classes: int) -> Tensor:
    """(K, K) counts; row = true class, column = predicted class."""
    index = truth.long() * n_classes + predicted.long()
    return torch.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(truth: Tensor, predicted: Tensor) -> float:
    """Share of exact matches (0 for empty input)."""
    return float((truth == predicted).float().mean()) if truth.numel() else 0.0


def balanced_accuracy(confusion: Tensor) -> float:
    """Mean per-class recall over the classes present in the truth."""
    support = confusion.sum(dim=1)
    present = support > 0
    if not present.any():
        return 0.0
    recall = confusion.diagonal()[present].float() / support[present].float()
    return float(recall.mean())


def chance_level(labels: Sequence[int] | Tensor) -> float:
    """Majority-class rate of a label set (the paper's chance line)."""
    t = torch.as_tensor(labels)
    if t.numel() == 0:
        return 0.0
    return float(torch.bincount(t).max()) / t.numel()
