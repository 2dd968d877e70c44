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
from torch import Tensor, nn

from optin.corpora.manifest import LabelEncoder, Manifest
from optin.evaluation.vector_classifier import (
    VectorClassifierConfig,
    train_vector_classifier,
    vector_predict,
)
from optin.metrics.classification import accuracy, chance_level
from optin.training.classifier import Classifier
from optin.training.data import FeatureStore


@dataclass(frozen=True)
class OutputOnlyConfig(VectorClassifierConfig):
    """The output-only attacker: a small MLP on T's log-posteriors, trained with Adam."""

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
    return train_vector_classifier(_log(posteriors), labels, n_classes,
                                   config=config or OutputOnlyConfig())


def output_only_predict(model: nn.Module, posteriors: Tensor) -> Tensor:
    """(U,) classes the output-only attacker predicts from (U, K) posteriors."""
    return vector_predict(model, _log(posteriors)).argmax(dim=1)


def _log(posteriors: Tensor) -> Tensor:
    return torch.log(posteriors.clamp_min(1e-8))  # log-posteriors: better conditioned inputs


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
    return accuracy(y_test, output_only_predict(model, p_test))


def chance_on_test(manifest: Manifest, attribute: str) -> float:
    """Majority-class rate of ``attribute`` on the test split (the paper's chance line)."""
    test = manifest.split("test")
    encoder = LabelEncoder.fit(manifest, attribute)
    return chance_level(encoder.encode_all(test))
