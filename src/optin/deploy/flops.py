"""Counting the floating-point operations of a network, two independent ways.

:func:`conv_flops` reads them off the shapes: a forward hook on every ``nn.Conv1d``,
``nn.Conv2d`` and ``nn.Linear`` records its output shape, and each contributes
``2 * out.numel() * (in_channels / groups) * prod(kernel_size)`` (one multiply and one add per
weight tap; bias, normalisation and activations are not counted). :func:`counter_flops` asks
``torch.utils.flop_counter.FlopCounterMode``, which counts the same convolutions and matrix
products at the ATen level. The two agree for the obfuscator (a test checks it); the
elementwise work they both leave out (InstanceNorm, sigmoid gates, PixelShuffle) is a few
percent of the convolutions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def _layer_flops(module: nn.Module, output: Tensor) -> int:
    if isinstance(module, nn.Linear):
        return 2 * output.numel() * module.in_features
    assert isinstance(module, nn.Conv1d | nn.Conv2d)
    per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return 2 * output.numel() * per_output


def conv_flops(module: nn.Module, *inputs: Tensor) -> dict[str, int]:
    """FLOPs of one forward pass of ``module(*inputs)``, per conv / linear layer.

    Returns:
        {qualified layer name: FLOPs} in call order (a layer called twice is summed), plus
        ``"total"``.
    """
    counts: dict[str, int] = {}
    names = {m: n for n, m in module.named_modules()}
    handles = []

    def hook(layer: nn.Module, _args: tuple, output: Tensor) -> None:
        name = names[layer] or type(layer).__name__
        counts[name] = counts.get(name, 0) + _layer_flops(layer, output)

    for layer in module.modules():
        if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Linear):
            handles.append(layer.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    counts["total"] = sum(counts.values())
    return counts


def counter_flops(module: nn.Module, *inputs: Tensor) -> int:
    """FLOPs of ``module(*inputs)`` as counted by ``FlopCounterMode`` (convs and matmuls)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    return int(counter.get_total_flops())
