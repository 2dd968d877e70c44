"""The volume normalisation of :func:`optin.audio.io.normalize_volume` on tensors, batched
and differentiable in the audio (the choice of active frames is not), so that a model can be
trained on exactly what an app hears after its own ``load_audio``."""

from __future__ import annotations

import torch
from torch import Tensor

ACTIVE_FRAME_SECONDS = 0.02
ACTIVE_WITHIN = 1e-4  # frames within 40 dB of the loudest count as active
PEAK_CAP = 0.999


def rms_normalise(wave: Tensor, sample_rate: int, target_dbfs: float = -25.0) -> Tensor:
    """(B, N) audio scaled so that the RMS of its active 20 ms frames is ``target_dbfs``, then
    down if its peak would pass 0.999 (the rule of ``normalize_volume(..., "rms")``). Silent
    items (peak 0) are returned as they are."""
    assert wave.ndim == 2, f"expected (B, N), got {tuple(wave.shape)}"
    frame = max(1, int(ACTIVE_FRAME_SECONDS * sample_rate))
    n = wave.shape[1] // frame
    if n >= 1:
        energy = wave[:, : n * frame].reshape(wave.shape[0], n, frame).double().pow(2).mean(-1)
        with torch.no_grad():
            active = energy >= energy.amax(dim=1, keepdim=True) * ACTIVE_WITHIN
        rms = ((energy * active).sum(1) / active.sum(1).clamp(min=1)).sqrt()
    else:
        rms = wave.double().pow(2).mean(1).sqrt()
    peak = wave.detach().abs().amax(dim=1).double()
    gain = (10 ** (target_dbfs / 20)) / rms.clamp(min=1e-12)
    gain = torch.minimum(gain, PEAK_CAP / peak.clamp(min=1e-30))
    gain = torch.where(peak > 0, gain, torch.ones_like(gain))
    return wave * gain.to(wave.dtype)[:, None]
