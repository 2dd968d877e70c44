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


def f1_score(truth: Tensor, predicted: Tensor, n_classes: int) -> float:
    """F1 of class 1 for two classes (e.g. speech), macro-averaged F1 above; (M,) each.

    A class absent from both ``truth`` and ``predicted`` counts as perfect (F1 1).
    """
    confusion = confusion_matrix(truth, predicted, n_classes).double()
    tp = confusion.diagonal()
    denominator = confusion.sum(dim=0) + confusion.sum(dim=1)  # predicted + true counts
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.ones_like(tp))
    return float(f1[1]) if n_classes == 2 else float(f1.mean())
