"""Thin exportable wrappers around the obfuscator and its spectrogram front-end.

Two graphs are exported (see :mod:`optin.deploy.export`):

* **features graph** (:class:`FeatureGraph`): normalised features ``(B, 161, T)`` exactly as
  :class:`~optin.audio.features.SpectrogramFrontEnd` makes them -> obfuscated features
  ``(B, 161, T)``.
* **wave graph** (:class:`FrontEndGraph`, then :class:`FeatureGraph`; joined in ONNX by
  :func:`optin.deploy.export.attach_frontend`): waveform ``(B, N)`` at the feature sample
  rate, already volume-normalised as ``load_audio`` does -> obfuscated features
  ``(B, 161, T)`` and the normalisation ``mean``, ``std`` ``(B,)`` that turn them back into
  audio. ``T = 1 + N // hop``. All items of a batch share N (there is no lengths input).

Three details make them export well, with dynamic batch and time:

* the STFT is a strided Conv1d with a windowed-DFT basis (:class:`DftSpectrogram`). ONNX's own
  STFT op, which ``torch.stft`` exports to, is about 1e-4 off in ONNX Runtime (features differ
  by ~2e-4 absolute); the conv matches ``torch.stft`` to ~1e-6 and is an ordinary Conv that
  every runtime optimises.
* :class:`FeatureGraph` runs a copy of the generator whose output conv (C -> 1 channel,
  kernel 5 x 15) is rewritten as :class:`FoldedConv2d`: a 1x1 conv to the 75 kernel taps and a
  Fold (col2im, ONNX Col2Im) that sums them into place. Same result to float32 rounding
  (~1e-6); a conv with one output channel uses 1/16 of the SIMD lanes, and this one took 37 %
  of ONNX Runtime's time for 4 % of the FLOPs. Folded, the whole network ran 1.3-1.5x faster
  in ONNX Runtime and 1.2x in PyTorch (1 thread, batch 1).
* :class:`FeatureGraph` pads the time axis itself, with ``(T + 3) // 4 * 4``. The generator's
  own padding rounds up with ``-(-T // 4) * 4``, which the ONNX exporter turns into an integer
  Div that truncates towards zero, so the exported graph padded 101 frames to 100 instead of
  104. After this pre-padding the generator pads nothing, and the result is the same as
  calling the generator directly (replicate padding of replicate padding is one padding).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from optin.audio.features import FeatureConfig, SpectrogramFrontEnd
from optin.models.cyclegan_vc2 import DOWNSAMPLE_FACTOR, Generator


def dft_basis(config: FeatureConfig) -> Tensor:
    """``(2 * F, 1, n_fft)`` Conv1d weight: windowed cosines (rows ``:F``), minus sines (``F:``).

    Row k gives the real / imaginary part of the one-sided DFT bin k of a windowed frame, as
    ``torch.stft(..., onesided=True)`` computes it (window zero-padded to ``n_fft``, centred).
    """
    window = SpectrogramFrontEnd(config).window.double()  # (win_length,)
    left = (config.n_fft - config.win_length) // 2
    window = nnf.pad(window, (left, config.n_fft - config.win_length - left))  # (n_fft,)
    n = torch.arange(config.n_fft, dtype=torch.float64)
    k = torch.arange(config.n_freq, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * n[None, :] / config.n_fft  # (F, n_fft)
    basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # (2F, n_fft)
    return basis.float()[:, None, :]


class DftSpectrogram(SpectrogramFrontEnd):
    """:class:`SpectrogramFrontEnd` whose STFT magnitude is a Conv1d with a DFT basis.

    Same features (to float32 rounding, ~1e-6), same normalisation code; exports to ONNX as a
    plain Conv. ``stft`` returns the magnitude ``|STFT|`` (real, >= 0), which the inherited
    ``forward`` passes through ``abs()`` unchanged.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.dft = nn.Conv1d(1, 2 * cfg.n_freq, cfg.n_fft, stride=cfg.hop_length, bias=False)
        self.dft.weight.data.copy_(dft_basis(cfg))
        self.dft.weight.requires_grad_(False)

    def stft(self, wave: Tensor) -> Tensor:
        """(B, N) -> (B, F, T) STFT magnitude, T = 1 + N // hop (centred, reflect padding)."""
        self.check_length(wave)
        cfg = self.config
        half = cfg.n_fft // 2
        padded = nnf.pad(wave[:, None, :], (half, half), mode="reflect")  # (B, 1, N + n_fft)
        parts = self.dft(padded)  # (B, 2F, T)
        real, imag = parts[:, : cfg.n_freq], parts[:, cfg.n_freq :]
        return (real * real + imag * imag).sqrt()  # (B, F, T)


class FrontEndGraph(nn.Module):
    """``(B, N)`` wave -> features ``(B, F, T)``, mean ``(B,)``, std ``(B,)``."""

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.frontend = DftSpectrogram(config)

    def forward(self, wave: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        assert wave.ndim == 2, f"expected (B, N), got {tuple(wave.shape)}"
        features, mean, std, _ = self.frontend(wave)
        return features, mean, std


class FoldedConv2d(nn.Module):
    """A Conv2d with one output channel and "same" padding, as 1x1 taps + Fold (col2im).

    ``y[h, w] = b + sum_{i, j} W[:, i, j] . x[:, h + i - ph, w + j - pw]``: tap ``(i, j)`` of the
    1x1 conv carries ``W[:, kh-1-i, kw-1-j]``; Fold adds block ``(h, w)``'s tap ``(i, j)`` at
    ``(h + i, w + j)`` of the padded output and crops the padding.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        kh, kw = conv.kernel_size
        ph, pw = conv.padding
        if conv.out_channels != 1 or conv.stride != (1, 1) or conv.groups != 1 or \
                conv.dilation != (1, 1) or (2 * ph, 2 * pw) != (kh - 1, kw - 1):
            raise ValueError("FoldedConv2d needs a 1-output, stride-1, 'same'-padded Conv2d")
        self.kernel_size, self.padding = (kh, kw), (ph, pw)
        self.taps = nn.Conv2d(conv.in_channels, kh * kw, 1, bias=False)
        weight = conv.weight.detach()[0].flip(1, 2)  # (C, kh, kw), reversed taps
        self.taps.weight.data.copy_(weight.reshape(conv.in_channels, kh * kw).t()[:, :, None, None])
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(1)
        self.register_buffer("bias", bias.clone().reshape(1, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, 1, H, W)``."""
        n, _, h, w = x.shape
        taps = self.taps(x).reshape(n, -1, h * w)  # (N, kh*kw, H*W): one block per pixel
        out = nnf.fold(taps, (h, w), self.kernel_size, padding=self.padding)  # (N, 1, H, W)
        return out + self.bias


def inference_generator(generator: Generator) -> Generator:
    """A float32 eval copy of ``generator`` with its output conv folded (:class:`FoldedConv2d`)."""
    net = copy.deepcopy(generator).cpu().float().eval()
    net.output = FoldedConv2d(net.output)
    return net.to(next(generator.parameters()).device).requires_grad_(False)


class FeatureGraph(nn.Module):
    """``(B, F, T)`` normalised features -> ``(B, F, T)`` obfuscated, any B and T >= 1.

    Runs :func:`inference_generator` of ``generator`` (a copy; the original is untouched).
    """

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = inference_generator(generator)

    def forward(self, features: Tensor) -> Tensor:
        assert features.ndim == 3, f"expected (B, F, T), got {tuple(features.shape)}"
        t = features.size(2)
        step = DOWNSAMPLE_FACTOR
        # Positive floor division only: it exports exactly (see the module docstring).
        tp = torch.sym_max((t + step - 1) // step * step, self.generator.config.min_frames)
        mode = "replicate" if self.generator.config.pad_mode == "replicate" else "constant"
        h = nnf.pad(features, (0, tp - t), mode=mode)  # (B, F, Tp)
        out = self.generator(h)  # (B, F, Tp)
        return nnf.pad(out, (0, t - tp))  # crop by negative padding -> (B, F, T)
