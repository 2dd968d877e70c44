"""Time-axis receptive field of the CycleGAN-VC2 generator, derived from its layers.

Each stage of :class:`~optin.models.cyclegan_vc2.Generator` is read as a chain of time-axis
operations: a convolution (kernel, stride, padding, dilation along the last axis) or an
upsampling by ``r`` (PixelShuffle). Walking the chain backwards from one output frame gives the
interval of input frames it depends on. The stride-2 stages make that interval depend on the
frame's phase modulo 4, so the extents are the maxima over one period.

This is the *convolutional* receptive field. InstanceNorm statistics run over the whole time
axis, so strictly every output frame depends on every input frame; :func:`measure_receptive_field`
removes the norms (identity) to measure the convolutional part alone.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from optin.models.cyclegan_vc2 import (
    GatedConv2d,
    Generator,
    ResidualBlock1d,
    To1d,
    To2d,
    UpsampleBlock,
)


@dataclass(frozen=True)
class TimeOp:
    """One time-axis operation: a convolution, or an upsampling when ``upsample > 1``."""

    kernel: int = 1
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    upsample: int = 1

    def input_span(self, first: int, last: int) -> tuple[int, int]:
        """Input frames ``[a, b]`` that output frames ``[first, last]`` read."""
        if self.upsample > 1:
            return first // self.upsample, last // self.upsample
        a = first * self.stride - self.padding
        return a, last * self.stride - self.padding + self.dilation * (self.kernel - 1)


@dataclass(frozen=True)
class ReceptiveField:
    """Input frames an output frame ``t`` depends on: ``[t - left, t + right]`` (worst phase).

    ``period`` is the product of the strides: the dependence pattern repeats every ``period``
    frames.
    """

    left: int
    right: int
    period: int

    @property
    def size(self) -> int:
        return self.left + self.right + 1


def _conv_op(conv: nn.Module) -> TimeOp:
    if not isinstance(conv, nn.Conv1d | nn.Conv2d):
        raise ValueError(f"expected a Conv1d or Conv2d, got {type(conv).__name__}")
    padding = conv.padding
    if isinstance(padding, str):
        raise ValueError(f"string padding '{padding}' is not supported")
    return TimeOp(kernel=conv.kernel_size[-1], stride=conv.stride[-1], padding=padding[-1],
                  dilation=conv.dilation[-1])


def _first_conv(branch: nn.Module) -> nn.Module:
    """The conv of ``conv`` or ``Sequential(conv, norm)``."""
    return branch[0] if isinstance(branch, nn.Sequential) else branch


def _parallel(*branches: nn.Module) -> TimeOp:
    """The op of parallel convs (a gated pair): they must share their time geometry."""
    ops = {_conv_op(_first_conv(b)) for b in branches}
    if len(ops) != 1:
        raise ValueError(f"parallel branches differ in time geometry: {sorted(map(str, ops))}")
    return ops.pop()


def stage_ops(stage: nn.Module) -> list[TimeOp]:
    """Time-axis operations of one generator stage, in data-flow order."""
    if isinstance(stage, GatedConv2d):
        return [_parallel(stage.conv, stage.gate)]
    if isinstance(stage, To1d | To2d):
        return [_conv_op(stage.conv)]
    if isinstance(stage, ResidualBlock1d):  # the skip path is shorter: it adds nothing
        return [_parallel(stage.conv, stage.gate), _conv_op(_first_conv(stage.out))]
    if isinstance(stage, UpsampleBlock):
        return [_conv_op(stage.conv), TimeOp(upsample=stage.shuffle.upscale_factor)]
    if isinstance(stage, nn.Conv1d | nn.Conv2d):
        return [_conv_op(stage)]
    raise ValueError(f"unknown generator stage type {type(stage).__name__}")


def generator_stages(network: Generator) -> list[nn.Module]:
    """The generator's stages in data-flow order (its children, residual list flattened)."""
    stages: list[nn.Module] = []
    for child in network.children():
        stages.extend(child if isinstance(child, nn.ModuleList) else [child])
    if len(stages) != network.num_stages:
        raise ValueError(f"found {len(stages)} stages, the generator declares "
                         f"{network.num_stages}")
    return stages


def time_ops(network: Generator) -> list[TimeOp]:
    """All time-axis operations of the generator, input to output."""
    return [op for stage in generator_stages(network) for op in stage_ops(stage)]


def receptive_field(network: Generator) -> ReceptiveField:
    """Convolutional receptive field along time, from the network's layers.

    For the paper's obfuscator (C = 16, 3 residual blocks) and deobfuscator alike the result
    depends only on the kernel sizes, strides and paddings, not on the widths.
    """
    ops = time_ops(network)
    strides = math.prod(op.stride for op in ops)
    ups = math.prod(op.upsample for op in ops)
    if strides != ups:
        raise ValueError(f"downsampling x{strides} and upsampling x{ups} do not match")
    base = 64 * strides  # any frame far enough from 0 that floor division is plain
    left = right = 0
    for t in range(base, base + strides):
        first, last = t, t
        for op in reversed(ops):
            first, last = op.input_span(first, last)
        left, right = max(left, t - first), max(right, last - t)
    return ReceptiveField(left=left, right=right, period=strides)


def without_norms(network: nn.Module) -> nn.Module:
    """A copy of ``network`` with every InstanceNorm replaced by identity."""
    clone = copy.deepcopy(network)
    for module in list(clone.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.InstanceNorm1d | nn.InstanceNorm2d):
                setattr(module, child_name, nn.Identity())
    return clone


@torch.no_grad()
def measure_receptive_field(network: Generator, n_frames: int = 256, seed: int = 0
                            ) -> ReceptiveField:
    """Receptive field measured by impulses on the network without its InstanceNorms.

    For each input frame ``s`` in one stride period in the middle of a random ``(1, F, T)``
    input, adds an impulse at ``s`` (all bins) and records which output frames change
    (float64, exact comparison). Output frame ``t`` depends on input ``s`` iff it changes, so
    ``left = max(t - s)`` and ``right = max(s - t)`` over the changed frames.
    """
    net = without_norms(network).double().eval()
    n_freq = network.config.n_freq
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n_freq, n_frames, generator=gen, dtype=torch.float64)
    base = net(x)
    period = math.prod(op.stride for op in time_ops(network))
    left = right = 0
    middle = n_frames // 2
    for s in range(middle, middle + period):
        bumped = x.clone()
        bumped[..., s] += 1.0
        changed = (net(bumped) != base).any(dim=1)[0].nonzero().flatten()
        if changed.numel() == 0:
            raise ValueError(f"no output frame depends on input frame {s}")
        first, last = int(changed.min()), int(changed.max())
        if first == 0 or last == n_frames - 1:
            raise ValueError(f"n_frames={n_frames} is too short to measure the receptive field")
        left, right = max(left, last - s), max(right, s - first)
    return ReceptiveField(left=left, right=right, period=period)
