"""Within-class contraction: an opt-in privacy pressure that removes what the target ignores.

The paper's privacy loss L_p pushes the obfuscated signal away from the original in the
deobfuscator's latent space. Moving away is not forgetting: an invertible distortion scores
well on L_p and hides nothing from an informed attacker. This term asks for forgetting, still
without naming any attribute (opt-in): every obfuscated crop is pulled towards one running
template spectrum of the class the target model T gives it,

    L_c = mean over items, bins and frames of (X~[f, t] - M[T(X)][f])^2,

where ``M`` (K, F) holds, per class of T, an exponential moving average of the time-averaged
obfuscated spectra of that class. At L_c = 0 the output carries nothing but T's decision, and an
informed attacker is left with the output-only floor; L_t keeps T's answer, so the obfuscator
keeps exactly what T needs to tell its classes apart and lets the rest (the words, prosody,
emotion, and for a gender target the speaker) contract away.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class ClassTemplates:
    """Running template spectra ``(K, F)`` of the obfuscated output per target class.

    Args:
        n_classes: K, the target model's classes.
        n_freq: F, frequency bins.
        momentum: weight of the old template at each update (0.99: about 100 steps of memory).
    """

    def __init__(self, n_classes: int, n_freq: int, momentum: float = 0.99,
                 device: torch.device | str = "cpu") -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.means = torch.zeros(n_classes, n_freq, device=device)
        self.seen = torch.zeros(n_classes, dtype=torch.bool, device=device)

    def loss(self, obfuscated: Tensor, classes: Tensor) -> Tensor:
        """L_c of a batch against the current templates; 0 where a class has none yet.

        Args:
            obfuscated: (B, F, L) obfuscated crops.
            classes: (B,) T's class of each original crop.

        Returns:
            A scalar (gradients reach ``obfuscated`` only).
        """
        assert obfuscated.ndim == 3 and classes.shape == obfuscated.shape[:1]
        known = self.seen[classes]  # (B,)
        if not bool(known.any()):
            return obfuscated.sum() * 0.0
        target = self.means[classes][:, :, None]  # (B, F, 1), broadcast over frames
        error = (obfuscated.float() - target).pow(2).mean(dim=(1, 2))  # (B,)
        return (error * known).sum() / known.sum()

    @torch.no_grad()
    def update(self, obfuscated: Tensor, classes: Tensor) -> None:
        """Fold a batch's time-averaged spectra into its classes' templates (summed over all
        processes under torchrun, so every rank keeps the same templates)."""
        k, f = self.means.shape
        spectra = obfuscated.detach().float().mean(dim=2)  # (B, F)
        sums = torch.zeros(k, f, device=self.means.device).index_add_(0, classes, spectra)
        counts = torch.zeros(k, device=self.means.device).index_add_(
            0, classes, torch.ones_like(classes, dtype=torch.float32))
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        present = counts > 0
        batch_means = sums[present] / counts[present][:, None]
        fresh = present & ~self.seen
        old = self.momentum * self.means[present] + (1 - self.momentum) * batch_means
        self.means[present] = torch.where(fresh[present][:, None], batch_means, old)
        self.seen |= present

    def state_dict(self) -> dict[str, Tensor]:
        return {"means": self.means.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.means.copy_(state["means"])
        self.seen.copy_(state["seen"])
