"""The paper's losses (eq. 1-4).

* ``reconstruction_loss`` L_a = MSE(F_mu(X~), X): the deobfuscator's objective.
* ``target_loss`` L_t = H(T(X~), T(X)): cross-entropy of the target model's prediction on
  obfuscated input against its prediction on the original (soft targets by default: the
  original posterior; ``hard=True`` uses its arg-max label).
* ``privacy_loss`` L_p = (1/M) sum_m |sigmoid(F_gamma(X~)_m - F_gamma(X)_m) - 0.5|, the distance
  in the latent space of the deobfuscator's first N layers; in [0, 0.5).
* ``obfuscator_objective`` = lambda_t * L_t - lambda_p * L_p, what the obfuscator minimises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reconstruction_loss(reconstruction: Tensor, original: Tensor) -> Tensor:
    """L_a: mean squared error over every element; (B, F, T) each -> scalar."""
    assert reconstruction.shape == original.shape, (reconstruction.shape, original.shape)
    return F.mse_loss(reconstruction, original)


def target_loss(obfuscated_logits: Tensor, original_logits: Tensor, hard: bool = False) -> Tensor:
    """L_t: cross-entropy H(T(X~), T(X)); (B, K) logits each -> scalar (mean over B).

    The original logits are treated as fixed targets (no gradient flows into them).
    """
    assert obfuscated_logits.ndim == 2 and obfuscated_logits.shape == original_logits.shape
    target = original_logits.detach()
    if hard:
        return F.cross_entropy(obfuscated_logits, target.argmax(dim=1))
    soft = target.softmax(dim=1)
    return -(soft * obfuscated_logits.log_softmax(dim=1)).sum(dim=1).mean()


def latent_distance(obfuscated_latent: Tensor, original_latent: Tensor) -> Tensor:
    """D per latent dimension: |sigmoid(a - b) - 0.5|, same shape as the inputs."""
    return (torch.sigmoid(obfuscated_latent - original_latent) - 0.5).abs()


def privacy_loss(obfuscated_latent: Tensor, original_latent: Tensor) -> Tensor:
    """L_p: mean of D over the M latent dimensions (and the batch); (B, ...) each -> scalar."""
    assert obfuscated_latent.shape == original_latent.shape
    return latent_distance(obfuscated_latent, original_latent).mean()


def obfuscator_objective(l_t: Tensor, l_p: Tensor, lambda_t: float = 1.0,
                         lambda_p: float = 1.0) -> Tensor:
    """lambda_t * L_t - lambda_p * L_p (the obfuscator wants L_t small and L_p large)."""
    return lambda_t * l_t - lambda_p * l_p


def agreement(obfuscated_logits: Tensor, original_logits: Tensor) -> Tensor:
    """Share of items where T(X~) and T(X) predict the same class; (B, K) each -> scalar."""
    return (obfuscated_logits.argmax(dim=1) == original_logits.argmax(dim=1)).float().mean()


def frame_target_loss(obfuscated_logits: Tensor, original_logits: Tensor, mask: Tensor,
                      hard: bool = False) -> Tensor:
    """L_t of a per-frame task: H(T(X~), T(X)) per frame, averaged over valid frames.

    Args:
        obfuscated_logits, original_logits: (B, N, K); mask: (B, N) bool, valid frames.
    """
    assert obfuscated_logits.ndim == 3 and obfuscated_logits.shape == original_logits.shape
    target = original_logits.detach()
    log_p = obfuscated_logits.log_softmax(dim=-1)
    if hard:
        per_frame = -log_p.gather(-1, target.argmax(dim=-1, keepdim=True))[..., 0]
    else:
        per_frame = -(target.softmax(dim=-1) * log_p).sum(dim=-1)  # (B, N)
    weights = mask.to(per_frame.dtype)
    return (per_frame * weights).sum() / weights.sum().clamp_min(1.0)


def frame_agreement(obfuscated_logits: Tensor, original_logits: Tensor,
                    mask: Tensor | None = None) -> Tensor:
    """Share of (valid) frames where T(X~) and T(X) decide alike; (B, N, K) each -> scalar."""
    same = (obfuscated_logits.argmax(dim=-1) == original_logits.argmax(dim=-1)).float()
    if mask is None:
        return same.mean()
    weights = mask.to(same.dtype)
    return (same * weights).sum() / weights.sum().clamp_min(1.0)
