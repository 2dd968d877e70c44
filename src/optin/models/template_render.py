"""Rendering answers as templates: the joint answer index, block quantisation of frame
decisions, and the cross-faded tiling of class templates along the output's time axis.

Shapes: ``B`` batch, ``J`` joint answers (the product of the tasks' class counts), ``L`` output
positions (spectrogram frames, or audio samples), ``N`` a frame task's decisions, ``P`` the
template period in positions, ``F`` frequency bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch import Tensor


def joint_strides(n_classes: Sequence[int]) -> list[int]:
    """Row-major strides of the joint answer (a_1, ..., a_n): index = sum_i a_i * stride_i."""
    strides, step = [], 1
    for k in reversed(list(n_classes)):
        strides.append(step)
        step *= k
    return strides[::-1]


def joint_count(n_classes: Sequence[int]) -> int:
    return math.prod(n_classes)


def split_joint(index: Tensor, n_classes: Sequence[int]) -> list[Tensor]:
    """The tasks' answers of joint indices (any shape) -> one tensor per task, same shape."""
    return [(index // s) % k for s, k in zip(joint_strides(n_classes), n_classes, strict=True)]


def quantise_blocks(decisions: Tensor, step: int, n_classes: int) -> Tensor:
    """Frame decisions (B, N) -> the same with every block of ``step`` frames replaced by its
    most frequent class (ties: the lowest class), so that boundaries fall on multiples of
    ``step`` frames. The last block may be shorter."""
    if step <= 1:
        return decisions
    batch, frames = decisions.shape
    blocks = math.ceil(frames / step)
    padded = nnf.pad(decisions, (0, blocks * step - frames), value=-1)  # -1: counted nowhere
    counts = torch.stack([(padded == k).reshape(batch, blocks, step).sum(-1)
                          for k in range(n_classes)], dim=-1)  # (B, blocks, K)
    winner = counts.argmax(dim=-1)  # first maximum: the lowest class on ties
    return winner.repeat_interleave(step, dim=1)[:, :frames]


def frame_positions(length: int, decisions: int, per_decision: float) -> Tensor:
    """(L,) index of the decision (0..N-1) covering each output position: ``per_decision``
    positions per decision; positions past the last decision take the last one."""
    pos = torch.arange(length, dtype=torch.float64)
    return (pos / per_decision).floor().long().clamp(0, decisions - 1)


def crossfade_weights(track: Tensor, n_joint: int, width: int) -> tuple[Tensor, Tensor]:
    """Per-position mixing weights of the templates a track uses.

    Args:
        track: (B, L) joint index at every output position.
        width: cross-fade length in positions (a Hann ramp; <= 1: hard switches).

    Returns:
        used (U,) the joint indices present, and weights (B, U, L) summing to 1 over U.
    """
    used = torch.unique(track)
    onehot = (track[:, None, :] == used[None, :, None]).to(torch.float32)  # (B, U, L)
    if width <= 1 or len(used) == 1:
        return used, onehot
    kernel = torch.hann_window(width + 2, periodic=False, dtype=torch.float32)[1:-1]
    kernel = (kernel / kernel.sum()).to(track.device)
    u = len(used)
    left, right = (width - 1) // 2, width // 2
    smooth = nnf.conv1d(nnf.pad(onehot.reshape(-1, 1, onehot.shape[-1]), (left, right),
                                mode="replicate"), kernel[None, None])
    return used, smooth.reshape(track.shape[0], u, -1)


def tile(templates: Tensor, length: int, offset: int = 0) -> Tensor:
    """Templates (J, ..., P) read circularly at positions offset..offset+L-1 -> (J, ..., L)."""
    period = templates.shape[-1]
    index = (torch.arange(length, device=templates.device) + offset) % period
    return templates[..., index]


def render_track(templates: Tensor, track: Tensor, crossfade: int) -> Tensor:
    """Templates (J, P) or (J, F, P) rendered along ``track`` (B, L) -> (B, L) or (B, F, L):
    at each position the template of its joint answer, read at that position modulo P, with a
    cross-fade of ``crossfade`` positions wherever the answer changes."""
    length = track.shape[1]
    constant = (track == track[:, :1]).all(dim=1)
    if bool(constant.all()):  # one answer per item: plain tiling, no mixing
        return tile(templates[track[:, 0]], length)
    used, weights = crossfade_weights(track, templates.shape[0], crossfade)
    tiled = tile(templates[used], length)  # (U, ..., L)
    if tiled.ndim == 2:
        return torch.einsum("bul,ul->bl", weights.to(tiled.dtype), tiled)
    return torch.einsum("bul,ufl->bfl", weights.to(tiled.dtype), tiled)
