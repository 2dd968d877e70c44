"""Small MLP classifiers on fixed-size vectors (x-vectors, or a target model's posteriors).

One trainer serves the x-vector world's target model and attackers and the output-only
attacker: Linear(D, hidden) -> ReLU -> Linear(hidden, K), trained full-batch with Adam; the epoch
kept is the one with the best validation accuracy (the earliest on ties), or the last one
without validation data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optin.metrics.classification import accuracy
from optin.settings import Rule, above, at_least, check_fields


@dataclass(frozen=True)
class VectorClassifierConfig:
    """Sizes and the Adam schedule of a vector classifier."""

    hidden: int = 256
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 10
    seed: int = 0

    RANGES: ClassVar[dict[str, Rule]] = {
        "hidden": at_least(1), "epochs": at_least(1), "lr": above(0),
        "weight_decay": at_least(0), "eval_every": at_least(1), "seed": at_least(0)}

    def __post_init__(self) -> None:
        check_fields(self)


def train_vector_classifier(x: Tensor, y: Tensor, n_classes: int,
                            valid: tuple[Tensor, Tensor] | None = None,
                            config: VectorClassifierConfig | None = None) -> nn.Module:
    """Fit an MLP on (N, D) vectors and (N,) labels; returns it in eval mode.

    The initial weights come from ``config.seed`` without touching the global RNG.
    """
    cfg = config or VectorClassifierConfig()
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = nn.Sequential(nn.Linear(x.shape[1], cfg.hidden), nn.ReLU(),
                              nn.Linear(cfg.hidden, n_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    check = valid is not None and len(valid[1]) > 0
    best, best_state = -1.0, None
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if check and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            score = vector_accuracy(model, *valid)  # type: ignore[misc]
            if score > best:
                best, best_state = score, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


@torch.no_grad()
def vector_predict(model: nn.Module, x: Tensor) -> Tensor:
    """(N, D) -> (N, K) posteriors."""
    return model.eval()(x).softmax(dim=1)


def vector_accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Accuracy of ``model`` on (N, D) vectors with (N,) labels."""
    return accuracy(y, vector_predict(model, x).argmax(dim=1))
