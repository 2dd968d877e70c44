"""Spectrogram pictures for the page: the features a model hears, drawn as a small PNG.

Drawn with matplotlib's object API (a ``Figure`` of its own, no pyplot), so requests served
in parallel threads share no figure state.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure
from torch import Tensor


def spectrogram_png(features: Tensor, hop_seconds: float, max_hz: float,
                    title: str = "") -> bytes:
    """PNG bytes of normalised features (F, T): time in seconds across, frequency up to
    ``max_hz`` (the Nyquist frequency) upward, one shared colour scale (-3 to 3 std)."""
    assert features.ndim == 2, f"expected (F, T), got {tuple(features.shape)}"
    data = features.detach().float().cpu().numpy()
    fig = Figure(figsize=(4.0, 1.7), dpi=100)  # no pyplot: no global figure state
    ax = fig.subplots()
    ax.imshow(data, origin="lower", aspect="auto", cmap="magma", vmin=-3.0, vmax=3.0,
              extent=(0.0, data.shape[1] * hop_seconds, 0.0, max_hz / 1000.0))
    ax.set_xlabel("s", fontsize=7, labelpad=1)
    ax.set_ylabel("kHz", fontsize=7, labelpad=1)
    ax.tick_params(labelsize=6, length=2, pad=1)
    if title:
        ax.set_title(title, fontsize=8, pad=2)
    fig.tight_layout(pad=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
