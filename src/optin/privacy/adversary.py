"""The deobfuscator F_mu: the obfuscator's adversary, with its own optimizer and step.

It trains on *detached* obfuscated input to reconstruct the original (L_a), and gives the
obfuscator its privacy loss L_p computed with itself frozen: gradients reach the obfuscated input,
never the deobfuscator's parameters.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn

from optin.models.precision import autocast as mixed_precision
from optin.models.precision import step_dtype
from optin.privacy.losses import privacy_loss, reconstruction_loss


@contextmanager
def frozen(module: nn.Module):
    """Temporarily stop gradients into ``module``'s parameters (restores the previous flags)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class Deobfuscator:
    """Wraps a generator network F_mu, its optimizer and (on a GPU) its gradient scaler.

    Args:
        network: the generator; must offer ``forward_features(x, n_layers)``.
        optimizer: optimizer over ``network``'s parameters.
        privacy_layer: N, the number of leading stages that form F_gamma.
        trainable: the module that receives the training forward pass (``network`` itself or
            its DistributedDataParallel wrapper).
        autocast: the mixed-precision dtype of its training step (default: float16 when
            ``scaler`` is enabled, else float32); see :mod:`optin.models.precision`.
    """

    def __init__(self, network: nn.Module, optimizer: torch.optim.Optimizer, privacy_layer: int,
                 trainable: nn.Module | None = None, grad_clip: float = 5.0,
                 scaler: torch.amp.GradScaler | None = None,
                 autocast: torch.dtype | None = None) -> None:
        self.network = network
        self.trainable = trainable if trainable is not None else network
        self.optimizer = optimizer
        self.privacy_layer = privacy_layer
        self.grad_clip = grad_clip
        self.scaler = scaler
        self.autocast = step_dtype(autocast, scaler)

    def step(self, original: Tensor, obfuscated: Tensor) -> float:
        """One update on L_a = MSE(F_mu(X~), X); ``obfuscated`` is detached here.

        Args:
            original, obfuscated: (B, F, T).

        Returns:
            The loss before the update.
        """
        self.trainable.train()
        device_type = original.device.type
        with mixed_precision(device_type, self.autocast):
            loss = reconstruction_loss(self.trainable(obfuscated.detach()).float(), original)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
            self.optimizer.step()
        return float(loss.detach())

    def privacy_loss(self, original: Tensor, obfuscated: Tensor) -> Tensor:
        """L_p between F_gamma(X~) and F_gamma(X), with the deobfuscator frozen.

        Gradients flow into ``obfuscated`` only. Returns a scalar.
        """
        with frozen(self.network):
            with torch.no_grad():
                reference = self.network.forward_features(original, self.privacy_layer)
            latent = self.network.forward_features(obfuscated, self.privacy_layer)
        return privacy_loss(latent.float(), reference.float())

    @torch.no_grad()
    def reconstruction_error(self, original: Tensor, obfuscated: Tensor) -> Tensor:
        """L_a without an update; scalar."""
        self.network.eval()
        value = reconstruction_loss(self.network(obfuscated).float(), original)
        self.network.train()
        return value
