"""CycleGAN-VC2 generator (2-1-2D CNN): the obfuscator F_sigma and the deobfuscator F_mu.

Follows the generator of jackaduma/CycleGAN-VC2 and GANtastic3/MaskCycleGAN-VC (one input
channel, no mask) with a configurable base width ``C`` (the reference uses C = 128):

====  =========  ==========================================================================
 #    stage      layers (``sigma`` = sigmoid, IN = InstanceNorm with affine terms)
====  =========  ==========================================================================
 1    input      Conv2d 1->C k(5,15) p(2,7), gated by a second conv: ``h * sigma(g)``
 2    down1      Conv2d C->2C k5 s2 p2 + IN2d, gated by a second conv + IN2d
 3    down2      Conv2d 2C->2C k5 s2 p2 + IN2d, gated by a second conv + IN2d
 4    to1d       reshape (2C, F/4, T/4) -> (2C*F/4, T/4); Conv1d 1x1 -> 2C; IN1d
 5..  res1..resR Conv1d 2C->4C k3 p1 + IN1d, gated; Conv1d 4C->2C k3 p1 + IN1d; add skip
 R+5  to2d       Conv1d 1x1 2C -> 2C*F/4; IN1d; reshape -> (2C, F/4, T/4)
 R+6  up1        Conv2d 2C->8C k5 p2; PixelShuffle(2) -> 2C; IN2d; ``x * sigma(x)``
 R+7  up2        Conv2d 2C->4C k5 p2; PixelShuffle(2) -> C; IN2d; ``x * sigma(x)``
 R+8  output     Conv2d C->1 k(5,15) p(2,7); crop back to (F, T)
====  =========  ==========================================================================

The upsample plan (2C -> 2C -> C, each self-gated with ``x * sigma(x)`` rather than by a second
conv) is the references' and the one that gives the paper's deobfuscator size: 6,844,225
parameters at C = 64, F = 161 (paper: 6.847M). A second gate conv in the upsample blocks would
give 9.30M; the plan 2C -> C -> C/2 would give 6.43M (gated) or 5.41M (self-gated).

Shapes: ``N`` batch, ``F`` frequency bins (``config.n_freq``, 161), ``T`` frames (any T >= 1),
``Fp``/``Tp`` the padded sizes (see :func:`padded_freq`, :func:`padded_frames`), ``C`` base width.

Padding (**choice**): the input is padded on the high-frequency end (bottom) and on the right
(end of the utterance) by repeating its last bin / frame (``pad_mode="replicate"``; ``"zeros"``
pads with 0, the mean of a normalized spectrogram), up to multiples of 4 (two stride-2 stages)
and to at least ``min_frames`` frames (8), so the 1D stages see >= 2 frames: InstanceNorm needs
more than one element per channel. The output is cropped back to exactly ``(F, T)``. The padded
cells take part in the InstanceNorm statistics, so the output on the valid cells depends (a
little) on how much padding an utterance gets: run whole utterances, or equal lengths per batch.
There is no BatchNorm: every item is normalized on its own, in train and eval mode alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from optin.settings import StrictConfig

# Two stride-2 stages: the padded frequency and time sizes are multiples of this.
DOWNSAMPLE_FACTOR = 4

# Base widths and residual blocks of the paper's two networks (see GeneratorConfig presets).
DEOBFUSCATOR_WIDTH = 64
DEOBFUSCATOR_RESIDUAL_BLOCKS = 6
OBFUSCATOR_WIDTH = 16
OBFUSCATOR_RESIDUAL_BLOCKS = 3

PAD_MODES = ("replicate", "zeros")


@dataclass
class GeneratorConfig(StrictConfig):
    """Constructor arguments of :class:`Generator`; stored in checkpoints.

    Attributes:
        n_freq: frequency bins F of the input spectrogram (161 for a 320-point STFT). Fixes the
            flattened size ``2C * ceil(F / 4)`` of the 2D <-> 1D convs.
        base_width: channels C of the first conv; the network runs at C, 2C and 4C.
            Reference CycleGAN-VC2: 128. Deobfuscator: 64 (6.84M parameters at F = 161).
            Obfuscator: 16, the reference's 128 cut by 8 (0.38M).
        residual_blocks: number R of 1D residual blocks (deobfuscator 6, obfuscator 3).
        min_frames: the padded length is at least this (a multiple of 4, >= 8) so that each
            1D InstanceNorm sees at least two frames.
        pad_mode: "replicate" (repeat the last bin / frame) or "zeros".
        residual: output ``x + net(x)`` with the output conv zero-initialised, so an untrained
            network is the identity (**choice**, not in the paper; see
            ``optin.training.obfuscator``).
    """

    n_freq: int = 161
    base_width: int = DEOBFUSCATOR_WIDTH
    residual_blocks: int = DEOBFUSCATOR_RESIDUAL_BLOCKS
    min_frames: int = 8
    pad_mode: Literal["replicate", "zeros"] = "replicate"
    residual: bool = False

    def __post_init__(self) -> None:
        for name in ("n_freq", "base_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.residual_blocks < 0:
            raise ValueError(f"residual_blocks must be >= 0, got {self.residual_blocks}")
        if self.min_frames < 2 * DOWNSAMPLE_FACTOR or self.min_frames % DOWNSAMPLE_FACTOR:
            raise ValueError(
                f"min_frames must be a multiple of {DOWNSAMPLE_FACTOR} and >= "
                f"{2 * DOWNSAMPLE_FACTOR}, got {self.min_frames}"
            )
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")

    @classmethod
    def deobfuscator(cls, n_freq: int = 161) -> GeneratorConfig:
        """The paper's deobfuscator F_mu: C = 64, 6 residual blocks (6,844,225 params at F=161)."""
        return cls(
            n_freq=n_freq,
            base_width=DEOBFUSCATOR_WIDTH,
            residual_blocks=DEOBFUSCATOR_RESIDUAL_BLOCKS,
        )

    @classmethod
    def obfuscator(cls, n_freq: int = 161) -> GeneratorConfig:
        """The paper's obfuscator F_sigma: C = 128 / 8 = 16, 3 residual blocks (379,441 at F=161).

        The paper reports 0.759M for "3 residual blocks, channels reduced by 8"; no natural
        reading of the layer list gives that (it is about twice this count).
        """
        return cls(
            n_freq=n_freq,
            base_width=OBFUSCATOR_WIDTH,
            residual_blocks=OBFUSCATOR_RESIDUAL_BLOCKS,
        )


def _round_up(n: int, multiple: int) -> int:
    # (n + m - 1) // m, not -(-n // m): the ONNX exporter turns the latter into a division
    # that truncates toward zero, which pads 101 frames to 100.
    return (n + multiple - 1) // multiple * multiple


def padded_freq(n_freq: int) -> int:
    """Frequency bins after padding: F rounded up to a multiple of 4 (161 -> 164)."""
    return _round_up(n_freq, DOWNSAMPLE_FACTOR)


def padded_frames(n_frames: int, min_frames: int = 8) -> int:
    """Frames after padding: T rounded up to a multiple of 4, and at least ``min_frames``."""
    return max(_round_up(n_frames, DOWNSAMPLE_FACTOR), min_frames)


def bottleneck_freq(n_freq: int) -> int:
    """Frequency bins of the 2D stages at 1/4 resolution: ``ceil(F / 4)`` (161 -> 41)."""
    return padded_freq(n_freq) // DOWNSAMPLE_FACTOR


class GatedConv2d(nn.Module):
    """``h * sigmoid(g)`` of two parallel Conv2d (each followed by InstanceNorm2d if ``norm``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int,
        padding: int | tuple[int, int],
        norm: bool,
    ) -> None:
        super().__init__()

        def branch() -> nn.Module:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
            if not norm:
                return conv
            return nn.Sequential(conv, nn.InstanceNorm2d(out_channels, affine=True))

        self.conv = branch()
        self.gate = branch()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` -> ``(N, C_out, H', W')`` (``H' = ceil(H / stride)`` here)."""
        assert x.ndim == 4, f"expected (N, C, H, W), got {tuple(x.shape)}"
        return self.conv(x) * self.gate(x).sigmoid()


class To1d(nn.Module):
    """Flatten the 2D feature map into 1D channels, then Conv1d 1x1 + InstanceNorm1d."""

    def __init__(self, channels: int, freq_bins: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels * freq_bins, channels, kernel_size=1)
        self.norm = nn.InstanceNorm1d(channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 2C, F/4, T/4)`` -> ``(N, 2C, T/4)``."""
        assert x.ndim == 4, f"expected (N, 2C, F/4, T/4), got {tuple(x.shape)}"
        n, c, f, t = x.shape
        x = x.reshape(n, c * f, t)  # (N, 2C, F/4, T/4) -> (N, 2C*F/4, T/4)
        return self.norm(self.conv(x))  # (N, 2C, T/4)


class To2d(nn.Module):
    """Conv1d 1x1 + InstanceNorm1d back to the flattened size, then unflatten to 2D."""

    def __init__(self, channels: int, freq_bins: int) -> None:
        super().__init__()
        self.channels = channels
        self.freq_bins = freq_bins
        self.conv = nn.Conv1d(channels, channels * freq_bins, kernel_size=1)
        self.norm = nn.InstanceNorm1d(channels * freq_bins, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 2C, T/4)`` -> ``(N, 2C, F/4, T/4)``."""
        assert x.ndim == 3, f"expected (N, 2C, T/4), got {tuple(x.shape)}"
        h = self.norm(self.conv(x))  # (N, 2C*F/4, T/4)
        n, _, t = h.shape
        return h.reshape(n, self.channels, self.freq_bins, t)  # (N, 2C, F/4, T/4)


class ResidualBlock1d(nn.Module):
    """``x + IN(Conv1d(GLU(IN(Conv1d(x)), IN(Conv1d_gate(x)))))``, width 2C -> 4C -> 2C."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()

        def conv_in(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv1d(c_in, c_out, kernel_size=3, padding=1),
                nn.InstanceNorm1d(c_out, affine=True),
            )

        self.conv = conv_in(channels, hidden)
        self.gate = conv_in(channels, hidden)
        self.out = conv_in(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 2C, T/4)`` -> ``(N, 2C, T/4)``."""
        assert x.ndim == 3, f"expected (N, 2C, T/4), got {tuple(x.shape)}"
        h = self.conv(x) * self.gate(x).sigmoid()  # (N, 4C, T/4)
        return x + self.out(h)


class UpsampleBlock(nn.Module):
    """Conv2d to ``4 * out`` channels, PixelShuffle(2), InstanceNorm2d, ``x * sigmoid(x)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4 * out_channels, kernel_size=5, padding=2)
        self.shuffle = nn.PixelShuffle(2)
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` -> ``(N, C_out, 2H, 2W)``."""
        assert x.ndim == 4, f"expected (N, C, H, W), got {tuple(x.shape)}"
        h = self.shuffle(self.conv(x))  # (N, 4*C_out, H, W) -> (N, C_out, 2H, 2W)
        h = self.norm(h)
        return h * h.sigmoid()


class TapConv2d(nn.Conv2d):
    """A "same"-padded, stride-1 Conv2d with one output channel, computed as its kernel taps
    (a 1x1 conv to ``kh * kw`` channels) summed into place by ``fold`` (col2im).

    The same parameters and the same result as ``nn.Conv2d`` (to float32 rounding), without
    the ``C * kh * kw``-row im2col matrix a plain conv builds for every output pixel: 1.7x
    faster forward + backward on the CPU for the generator's 16 -> 1, 5 x 15 output conv.
    Under bfloat16 (autocast on a CPU with AMX, :mod:`optin.models.precision`) oneDNN's own
    convolution is 6x faster than the taps, so it runs as the plain conv there.
    """

    def __init__(self, in_channels: int, kernel_size: tuple[int, int],
                 padding: tuple[int, int]) -> None:
        super().__init__(in_channels, 1, kernel_size, padding=padding)
        kh, kw = self.kernel_size
        if (2 * padding[0], 2 * padding[1]) != (kh - 1, kw - 1):
            raise ValueError("TapConv2d needs 'same' padding: (kh - 1) / 2, (kw - 1) / 2")

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, 1, H, W)``."""
        assert x.ndim == 4, f"expected (N, C, H, W), got {tuple(x.shape)}"
        if x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu") and x.device.type
                                         == "cpu" and torch.get_autocast_dtype("cpu")
                                         == torch.bfloat16):
            return super().forward(x)
        n, c, h, w = x.shape
        kh, kw = self.kernel_size
        # tap (i, j) of output block (h, w) lands at (h + i, w + j): reversed kernel taps
        taps = self.weight[0].flip(1, 2).reshape(c, kh * kw).t()[:, :, None, None]
        blocks = nnf.conv2d(x, taps).reshape(n, kh * kw, h * w)  # (N, kh*kw, H*W)
        out = nnf.fold(blocks, (h, w), self.kernel_size, padding=self.padding)  # (N, 1, H, W)
        return out + self.bias.reshape(1, 1, 1, 1)


class Generator(nn.Module):
    """CycleGAN-VC2 generator: ``(N, F, T)`` spectrogram -> ``(N, F, T)`` spectrogram.

    Fully convolutional in time: any T >= 1. F must equal ``config.n_freq`` (the flattened size
    of the 2D <-> 1D convs depends on it). See the module docstring for the layer list, the
    padding rule and :attr:`stage_names` for the stages :meth:`forward_features` counts.
    """

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else GeneratorConfig()
        cfg = self.config
        c = cfg.base_width
        self.freq_bins = bottleneck_freq(cfg.n_freq)  # F/4 at the bottleneck (41 for F = 161)
        self.input = GatedConv2d(1, c, (5, 15), stride=1, padding=(2, 7), norm=False)
        self.down1 = GatedConv2d(c, 2 * c, 5, stride=2, padding=2, norm=True)
        self.down2 = GatedConv2d(2 * c, 2 * c, 5, stride=2, padding=2, norm=True)
        self.to1d = To1d(2 * c, self.freq_bins)
        self.residual = nn.ModuleList(
            ResidualBlock1d(2 * c, 4 * c) for _ in range(cfg.residual_blocks)
        )
        self.to2d = To2d(2 * c, self.freq_bins)
        self.up1 = UpsampleBlock(2 * c, 2 * c)
        self.up2 = UpsampleBlock(2 * c, c)
        self.output = TapConv2d(c, (5, 15), padding=(2, 7))
        if cfg.residual:  # start as the identity: x + 0
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)

    def _stages(self) -> list[nn.Module]:
        return [
            self.input,
            self.down1,
            self.down2,
            self.to1d,
            *self.residual,
            self.to2d,
            self.up1,
            self.up2,
            self.output,
        ]

    @property
    def num_stages(self) -> int:
        """Top-level stages: 8 + residual blocks (9 for the obfuscator, 14 for the deobfuscator)."""
        return 8 + self.config.residual_blocks

    @property
    def stage_names(self) -> list[str]:
        """Names of the stages in order; ``forward_features(x, n)`` stops after ``[:n]``."""
        res = [f"res{i + 1}" for i in range(self.config.residual_blocks)]
        return ["input", "down1", "down2", "to1d", *res, "to2d", "up1", "up2", "output"]

    def _check_n_layers(self, n_layers: int) -> None:
        if not 0 <= n_layers <= self.num_stages:
            raise ValueError(f"n_layers must be in [0, {self.num_stages}], got {n_layers}")

    def latent_shape(self, n_layers: int, n_frames: int) -> tuple[int, ...]:
        """Per-item shape of ``forward_features(x, n_layers)`` for ``n_frames`` input frames.

        ``n_layers = 0`` is the input ``(F, T)`` and ``num_stages`` the output ``(F, T)``; the
        stages between live on the padded grid ``(Fp, Tp)`` (uncropped):
        ``(C, Fp, Tp)``, ``(2C, Fp/2, Tp/2)``, ``(2C, Fp/4, Tp/4)``, then ``(2C, Tp/4)`` for
        to1d and every residual block, ``(2C, Fp/4, Tp/4)``, ``(2C, Fp/2, Tp/2)``, ``(C, Fp, Tp)``.
        """
        self._check_n_layers(n_layers)
        if n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        cfg = self.config
        c = cfg.base_width
        if n_layers in (0, self.num_stages):
            return (cfg.n_freq, n_frames)
        fp, tp = padded_freq(cfg.n_freq), padded_frames(n_frames, cfg.min_frames)
        r = cfg.residual_blocks
        full, half, quarter = (fp, tp), (fp // 2, tp // 2), (fp // 4, tp // 4)
        if n_layers == 1:
            return (c, *full)
        if n_layers == 2:
            return (2 * c, *half)
        if n_layers == 3:
            return (2 * c, *quarter)
        if n_layers <= 4 + r:  # to1d and the residual blocks
            return (2 * c, quarter[1])
        if n_layers == 5 + r:  # to2d
            return (2 * c, *quarter)
        if n_layers == 6 + r:  # up1
            return (2 * c, *half)
        return (c, *full)  # up2

    def latent_size(self, n_layers: int, n_frames: int) -> int:
        """M: elements per item of ``forward_features(x, n_layers)`` (the privacy loss's M)."""
        return math.prod(self.latent_shape(n_layers, n_frames))

    def pad(self, x: Tensor) -> Tensor:
        """``(N, F, T)`` -> ``(N, 1, Fp, Tp)``, padded at the bottom / right per the config."""
        assert x.ndim == 3, f"expected (N, F, T), got {tuple(x.shape)}"
        _, f, t = x.shape
        pad_f = padded_freq(f) - f
        pad_t = padded_frames(t, self.config.min_frames) - t
        h = x.unsqueeze(1)  # (N, F, T) -> (N, 1, F, T)
        # No shortcut for zero padding: a branch on T would break export with a dynamic T.
        if self.config.pad_mode == "replicate":
            return nnf.pad(h, (0, pad_t, 0, pad_f), mode="replicate")
        return nnf.pad(h, (0, pad_t, 0, pad_f))  # (N, 1, Fp, Tp)

    def forward_features(self, x: Tensor, n_layers: int) -> Tensor:
        """Output of the first ``n_layers`` stages (F_gamma), see :meth:`latent_shape`.

        Args:
            x: ``(N, F, T)`` normalized log spectrogram, F = ``config.n_freq``, T >= 1.
            n_layers: in ``[0, num_stages]``; 0 returns ``x``, ``num_stages`` equals ``forward``.

        Returns:
            ``(N, *latent_shape(n_layers, T))``.
        """
        assert x.ndim == 3, f"expected (N, F, T), got {tuple(x.shape)}"
        assert x.size(1) == self.config.n_freq, f"expected F={self.config.n_freq}, got {x.size(1)}"
        self._check_n_layers(n_layers)
        if n_layers == 0:
            return x
        _, f, t = x.shape
        h = self.pad(x)  # (N, 1, Fp, Tp)
        for stage in self._stages()[:n_layers]:
            h = stage(h)
        if n_layers == self.num_stages:
            # Crop by negative padding, not slicing: a slice guards on T == Tp, which breaks
            # torch.export with a dynamic T.
            out = nnf.pad(h[:, 0], (0, t - h.size(-1), 0, f - h.size(-2)))  # (N, F, T)
            return x + out if self.config.residual else out
        return h

    def forward(self, x: Tensor) -> Tensor:
        """``(N, F, T)`` -> ``(N, F, T)``: the transformed spectrogram, same shape as ``x``."""
        assert x.ndim == 3, f"expected (N, F, T), got {tuple(x.shape)}"
        return self.forward_features(x, self.num_stages)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
