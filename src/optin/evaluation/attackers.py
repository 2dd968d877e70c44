"""Attackers on protected data, as in the paper, plus the output-only leakage floor.

For an attacked attribute A and a protection system with feature transform P (obfuscator):
* original: a classifier trained on original training data, tested on original test data;
* ignorant: the same classifier tested on protected test data P(X);
* informed: a classifier trained on protected training data P(X) with the true labels, tested
  on protected test data;
* output-only: a small classifier trained on the target model's utterance posteriors
  T(P(X)) alone (what the permitted output itself reveals), tested on T(P(X_test)).
  excess leakage = informed - output-only.
All share the target model's architecture (DeepSpeech2) except the output-only attacker, which
only ever sees K posteriors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optin.corpora.manifest import LabelEncoder, Manifest
from optin.evaluation.metrics import accuracy, chance_level
from optin.training.classifier import Classifier
from optin.training.data import FeatureStore


@dataclass(frozen=True)
class OutputOnlyConfig:
    """The output-only attacker: an MLP on T's posteriors, trained with Adam."""

    hidden: int = 32
    epochs: int = 200
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0


def utterance_posteriors(target: Classifier, store: FeatureStore,
                         transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """T's averaged segment posteriors per utterance of a store; (U, K)."""
    return target.predict(store, transform=transform)["utterance_posteriors"]


def train_output_only(posteriors: Tensor, labels: Tensor, n_classes: int,
                      config: OutputOnlyConfig | None = None) -> nn.Module:
    """Fit the output-only attacker on (U, K) posteriors and (U,) labels (full batch)."""
    cfg = config or OutputOnlyConfig()
    torch.manual_seed(cfg.seed)
    x = torch.log(posteriors.clamp_min(1e-8))  # log-posteriors: better conditioned inputs
    model = nn.Sequential(nn.Linear(x.shape[1], cfg.hidden), nn.ReLU(),
                          nn.Linear(cfg.hidden, n_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.epochs):
        optimizer.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()
    return model.eval()


def output_only_accuracy(target: Classifier, train: FeatureStore, test: FeatureStore,
                         attribute: str, transform: Callable[[Tensor], Tensor] | None = None,
                         config: OutputOnlyConfig | None = None) -> float:
    """Accuracy of the output-only attacker for ``attribute`` on the test store.

    Train and test posteriors are T's on the protected data (``transform``), which is what an
    app that runs T receives.
    """
    encoder = LabelEncoder.fit(train.manifest, attribute)
    known = set(encoder.classes)
    y_train = torch.tensor(encoder.encode_all(train.manifest))
    p_train = utterance_posteriors(target, train, transform)
    model = train_output_only(p_train, y_train, len(encoder), config)
    test_rows = [i for i, r in enumerate(test.manifest.rows) if r[attribute] in known]
    p_test = utterance_posteriors(target, test, transform)[test_rows]
    y_test = torch.tensor([encoder.encode(test.manifest.rows[i][attribute]) for i in test_rows])
    with torch.no_grad():
        predicted = model(torch.log(p_test.clamp_min(1e-8))).argmax(dim=1)
    return accuracy(y_test, predicted)


def chance_on_test(manifest: Manifest, attribute: str) -> float:
    """Majority-class rate of ``attribute`` on the test split (the paper's chance line)."""
    test = manifest.split("test")
    encoder = LabelEncoder.fit(manifest, attribute)
    return chance_level(encoder.encode_all(test))
