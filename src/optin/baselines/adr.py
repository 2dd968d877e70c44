"""The ADR baseline: the adversarial disentangling autoencoder of Noé et al. (2020).

An opt-out protection of x-vectors. The encoder maps an L2-normalised x-vector to a code z from
which an adversary on z should not recover the protected binary attribute; the decoder rebuilds
the x-vector from z and a scalar attribute code w. In training w is the posterior of a
pre-trained attribute classifier; at inference w is fixed (0.5 by default), hiding the attribute.

Shapes: x-vectors (N, 512), z (N, 128), w (N, 1), adversary output (N, 1) probabilities.
This module holds the networks, their config, the losses and the checkpoint format; training
lives in :mod:`optin.baselines.adr_training`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optin.checkpoint import (
    ModelKind,
    load_model,
    save_checkpoint,
)
from optin.errors import OptinError
from optin.settings import Rule, StrictConfig, above, at_least, between, check_fields
from optin.training.presets import from_preset

KIND = "adr"


class ADRInputError(OptinError, ValueError):
    """Input the ADR cannot use; the message names the field (and the values found)."""


@dataclass
class ADRConfig(StrictConfig):
    """Everything that decides an ADR model and its training (stored in the checkpoint).

    Architecture: ``input_dim`` (x-vector size), ``latent_dim`` (z), ``adversary_hidden``.
    Autoencoder: SGD with ``lr`` and ``momentum`` on batches of ``batch_size`` for ``epochs``;
    its loss is reconstruction + ``adversarial_weight`` * BCE(1 - pred, attribute).
    Adversary: SGD with ``adversary_lr`` (None: ``lr``, as the reference) and ``momentum``, on
    detached z. ``reference_gradient`` also gives the encoder the adversary's own BCE gradient,
    as the reference code does by not detaching z (the encoder then pushes the adversary towards
    0.5 instead of towards the flipped label).
    Attribute classifier (gives w in training): ``classifier_*``.
    Inference: ``inference_w``, the attribute code fed to the decoder.
    Selection and convergence: see :mod:`optin.baselines.adr_training`; ``chance_margin`` is
    the distance from 0.5 balanced accuracy that counts as chance, ``min_reconstruction_drop``
    the fraction by which the reconstruction loss must fall from its untrained value.
    """

    UNKNOWN_ERROR: ClassVar[type[Exception]] = ADRInputError

    input_dim: int = 512
    latent_dim: int = 128
    adversary_hidden: int = 128
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-4
    momentum: float = 0.9
    adversarial_weight: float = 1.0
    adversary_lr: float | None = None
    reference_gradient: bool = False
    classifier_epochs: int = 15
    classifier_batch_size: int = 64
    classifier_lr: float = 1e-3
    classifier_momentum: float = 0.9
    inference_w: float = 0.5
    chance_margin: float = 0.05
    min_reconstruction_drop: float = 0.25
    seed: int = 0

    RANGES: ClassVar[dict[str, Rule]] = {
        **{name: at_least(1) for name in ("input_dim", "latent_dim", "adversary_hidden",
                                          "epochs", "batch_size", "classifier_epochs",
                                          "classifier_batch_size")},
        "lr": above(0), "classifier_lr": above(0), "adversary_lr": above(0),
        "momentum": between(0, 1), "classifier_momentum": between(0, 1),
        "inference_w": between(0, 1), "chance_margin": between(0, 1),
        "min_reconstruction_drop": between(0, 1), "adversarial_weight": at_least(0),
        "seed": at_least(0)}

    def __post_init__(self) -> None:
        check_fields(self, ADRInputError)

    @property
    def effective_adversary_lr(self) -> float:
        """The adversary's learning rate (``lr`` when ``adversary_lr`` is None)."""
        return self.lr if self.adversary_lr is None else self.adversary_lr

    def architecture(self) -> dict[str, int]:
        """The sizes that rebuild the networks."""
        return {"input_dim": self.input_dim, "latent_dim": self.latent_dim,
                "adversary_hidden": self.adversary_hidden}

    def run_settings(self) -> dict[str, Any]:
        """Everything that changes the trained model, for cache keys (the whole config)."""
        return self.to_dict()


ADR_PRESETS: dict[str, dict[str, Any]] = {
    # Noé et al. exactly: batch 64, 100 epochs, SGD lr 1e-4 momentum 0.9 for the autoencoder
    # and the adversary, losses 1:1; classifier SGD lr 1e-3 momentum 0.9, 15 epochs.
    "paper": {"epochs": 100, "batch_size": 64, "lr": 1e-4, "momentum": 0.9,
              "adversarial_weight": 1.0, "adversary_lr": None,
              "classifier_epochs": 15, "classifier_batch_size": 64, "classifier_lr": 1e-3},
    # Small corpora (~150 training x-vectors). There the paper's schedule is ~300 steps of
    # 1e-4 and leaves the networks where they started (measured on the synthetic set of
    # tests/baselines/test_adr.py: reconstruction loss 0.996 -> 0.997, classifier balanced
    # accuracy 0.03). One larger lr for everything did not work either (on synthetic sets of
    # the same kind): at 1e-2 the game blew up (adversary logits in the hundreds, then NaN or a
    # dead adversary); at 3e-3 or below the reconstruction did not fit in 200 epochs (loss still
    # 0.78 at 3e-3). So two time scales: the autoencoder
    # learns the reconstruction at lr 0.1 (batch 16, 200 epochs, ~2000 steps) while the game
    # runs at an effective 3e-3 on both sides (adversary lr 3e-3; the encoder's adversarial
    # term weighted 0.03 = 3e-3 / 0.1). Measured over 5 seeds of that synthetic set: converged
    # every time, ignorant gender attacker 0.35-0.54 (original 0.97-0.99), speakers kept.
    # The classifier sees unit-norm inputs through one linear layer: lr 0.5 for 60 epochs.
    "quick": {"epochs": 200, "batch_size": 16, "lr": 0.1, "momentum": 0.9,
              "adversarial_weight": 0.03, "adversary_lr": 3e-3,
              "classifier_epochs": 60, "classifier_batch_size": 16, "classifier_lr": 0.5},
}


def adr_preset(preset: str = "quick", **overrides: Any) -> ADRConfig:
    """A config from a named preset ("paper" or "quick") with explicit overrides (None ignored)."""
    return from_preset(ADRConfig, ADR_PRESETS, preset, overrides)


# ---------------------------------------------------------------------- networks
class AttributeClassifier(nn.Module):
    """Linear(D, 1) + sigmoid: posterior of attribute value 1 given an x-vector."""

    def __init__(self, input_dim: int = 512) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, 1)

    def logits(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, 1) logits."""
        assert x.ndim == 2, x.shape
        return self.linear(x)

    def forward(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, 1) probabilities."""
        return torch.sigmoid(self.logits(x))


class ADREncoder(nn.Module):
    """Linear(D, L) -> ReLU -> BatchNorm1d(L): (N, D) x-vectors -> (N, L) codes z."""

    def __init__(self, input_dim: int = 512, latent_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_dim, latent_dim), nn.ReLU(),
                                 nn.BatchNorm1d(latent_dim))

    def forward(self, x: Tensor) -> Tensor:
        assert x.ndim == 2, x.shape
        return self.net(x)


class ADRDecoder(nn.Module):
    """concat(z, w) -> Linear(L + 1, D) -> tanh -> L2-normalise: (N, L), (N, 1) -> (N, D)."""

    def __init__(self, latent_dim: int = 128, output_dim: int = 512) -> None:
        super().__init__()
        self.linear = nn.Linear(latent_dim + 1, output_dim)

    def forward(self, z: Tensor, w: Tensor) -> Tensor:
        assert z.ndim == 2 and w.shape == (z.shape[0], 1), (z.shape, w.shape)
        return F.normalize(torch.tanh(self.linear(torch.cat([z, w], dim=1))), dim=1)


class ADRDiscriminator(nn.Module):
    """The adversary on z: Linear(L, H) -> ReLU -> Linear(H, 1) -> sigmoid; (N, L) -> (N, 1)."""

    def __init__(self, latent_dim: int = 128, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def logits(self, z: Tensor) -> Tensor:
        """(N, L) -> (N, 1) logits (what training uses: BCE from logits never saturates)."""
        assert z.ndim == 2, z.shape
        return self.net(z)

    def forward(self, z: Tensor) -> Tensor:
        """(N, L) -> (N, 1) probabilities of attribute value 1."""
        return torch.sigmoid(self.logits(z))


def adr_losses(x: Tensor, x_hat: Tensor, pred: Tensor, attribute: Tensor,
               logits: bool = False) -> dict[str, Tensor]:
    """The three ADR losses, each a scalar.

    Args:
        x, x_hat: (N, D) original and reconstructed x-vectors.
        pred: (N, 1) or (N,) adversary probabilities of attribute value 1, or its logits when
            ``logits`` is True (same values, computed stably: 1 - sigmoid(l) = sigmoid(-l)).
        attribute: (N,) or (N, 1) binary labels (0 or 1).

    Returns:
        ``reconstruction`` mean(1 - cos(x_hat, x)); ``adversary`` BCE(pred, attribute), what the
        adversary minimises; ``flipped`` BCE(1 - pred, attribute), the autoencoder's adversarial
        term.
    """
    assert x.shape == x_hat.shape and x.ndim == 2, (x.shape, x_hat.shape)
    pred = pred.reshape(-1)
    target = attribute.reshape(-1).to(pred.dtype)
    assert pred.shape == target.shape == (x.shape[0],), (pred.shape, target.shape)
    if logits:
        adversary = F.binary_cross_entropy_with_logits(pred, target)
        flipped = F.binary_cross_entropy_with_logits(-pred, target)
    else:
        adversary = F.binary_cross_entropy(pred, target)
        flipped = F.binary_cross_entropy(1 - pred, target)
    return {"reconstruction": (1 - F.cosine_similarity(x_hat, x, dim=1)).mean(),
            "adversary": adversary, "flipped": flipped}


# ---------------------------------------------------------------------- input checks
def as_xvectors(xvectors: Any, input_dim: int, field: str = "xvectors") -> Tensor:
    """(N, D) float32 x-vectors, L2-normalised; refuses other shapes and non-finite values."""
    x = torch.as_tensor(np.asarray(xvectors) if not isinstance(xvectors, Tensor) else xvectors)
    if x.ndim != 2 or x.shape[1] != input_dim:
        raise ADRInputError(f"{field} must have shape (N, {input_dim}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ADRInputError(f"{field} is empty")
    x = x.detach().to(torch.float32)
    if not torch.isfinite(x).all():
        raise ADRInputError(f"{field} holds NaN or infinite values")
    norms = x.norm(dim=1)
    if (norms == 0).any():
        raise ADRInputError(f"{field} row {int((norms == 0).nonzero()[0])} is all zeros")
    return x / norms[:, None]


def as_binary(attribute: Any, name: str = "attribute",
              class_names: Sequence[str] | None = None) -> Tensor:
    """(N,) float32 labels in {0, 1}; anything else raises, naming the attribute and values.

    ``class_names`` (what 0 and 1 stand for, e.g. ("f", "m")) only enrich the message.
    """
    values = np.asarray(attribute.detach().cpu() if isinstance(attribute, Tensor) else attribute)
    meaning = f" ({class_names[0]!r} -> 0, {class_names[1]!r} -> 1)" if class_names else ""
    if values.ndim != 1:
        raise ADRInputError(f"ADR attribute '{name}' must be a 1-D array of 0/1 labels{meaning}, "
                            f"got shape {values.shape}")
    found = sorted(set(values.tolist()), key=repr)
    numeric = values.dtype == bool or np.issubdtype(values.dtype, np.number)
    if not numeric or not set(found) <= {0, 1}:
        shown = ", ".join(repr(v) for v in found[:10])
        if len(found) > 10:
            shown += ", ..."
        raise ADRInputError(f"ADR protects one binary attribute: '{name}' must hold only 0 and "
                            f"1{meaning}, found {len(found)} distinct value(s): {shown}")
    return torch.as_tensor(values.astype(np.float32))


# ---------------------------------------------------------------------- the trained system
class ADR(nn.Module):
    """A trained ADR: encoder, decoder and the attribute classifier that gives w in training.

    ``transform`` is the protection: x-vectors (N, D) -> protected x-vectors (N, D).
    """

    def __init__(self, config: ADRConfig, attribute: str = "attribute",
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.attribute = attribute
        self.class_names = tuple(class_names) if class_names is not None else None
        self.encoder = ADREncoder(config.input_dim, config.latent_dim)
        self.decoder = ADRDecoder(config.latent_dim, config.input_dim)
        self.classifier = AttributeClassifier(config.input_dim)

    def forward(self, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """(N, D) x-vectors and (N, 1) codes -> ((N, D) reconstruction, (N, L) z)."""
        z = self.encoder(x)
        return self.decoder(z, w), z

    @torch.no_grad()
    def transform(self, x: Any, w: float | Tensor | None = None) -> Tensor:
        """Protected x-vectors, computed in eval mode (batch-norm running statistics).

        Args:
            x: (N, D) x-vectors (L2-normalised here).
            w: the attribute code: a number, (N,) per-row codes, or None for
                ``config.inference_w``.

        Returns:
            (N, D) L2-normalised protected x-vectors.
        """
        x = as_xvectors(x, self.config.input_dim, "x")
        code = self.config.inference_w if w is None else w
        codes = torch.as_tensor(code, dtype=torch.float32).reshape(-1, 1)
        if codes.shape[0] == 1:
            codes = codes.expand(x.shape[0], 1)
        if codes.shape[0] != x.shape[0]:
            raise ADRInputError(f"w must be a number or hold one code per row ({x.shape[0]}), "
                                f"got {codes.shape[0]}")
        was_training = self.training
        self.eval()
        try:
            return self.decoder(self.encoder(x), codes)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def reconstruct(self, x: Any) -> Tensor:
        """(N, D) -> (N, D) with w = the classifier's posterior (the unprotected rebuild)."""
        x = as_xvectors(x, self.config.input_dim, "x")
        was_training = self.training
        self.eval()
        try:
            return self.decoder(self.encoder(x), self.classifier(x))
        finally:
            self.train(was_training)

    @torch.no_grad()
    def posterior(self, x: Any) -> Tensor:
        """(N, D) -> (N,) the attribute classifier's probability of value 1."""
        return self.classifier(as_xvectors(x, self.config.input_dim, "x")).reshape(-1)


# ---------------------------------------------------------------------- checkpoints
def save_adr(model: ADR, directory: str | os.PathLike,
             extra_info: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (encoder, decoder, classifier).

    ``extra_info`` (e.g. training history summary, provenance) is stored under ``info``.
    """
    return save_checkpoint(directory, model.state_dict(), {
        "kind": KIND,
        "architecture": model.config.architecture(),
        "adr_config": model.config.to_dict(),
        "labels": {"attribute": model.attribute,
                   "classes": list(model.class_names) if model.class_names else None},
        "info": _finite_json(extra_info or {}),
    })


def load_adr(directory: str | os.PathLike) -> ADR:
    """Rebuild an :class:`ADR` saved by :func:`save_adr` (in eval mode)."""
    module = load_model(directory, ADR_KIND).module
    assert isinstance(module, ADR)
    return module


def _build_adr(config: ADRConfig, checkpoint: dict[str, Any]) -> ADR:
    labels = checkpoint.get("labels") or {}
    return ADR(config, labels.get("attribute", "attribute"), labels.get("classes"))


# ADR checkpoints: the whole ADRConfig in ``adr_config``, label names in ``labels``
ADR_KIND = ModelKind(KIND, ADRConfig, _build_adr, field="adr_config")


def _finite_json(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value
