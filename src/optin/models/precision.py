"""Mixed precision: the autocast dtype a device offers the networks.

On CUDA, float16 (with a gradient scaler). On a CPU whose cores have bfloat16 matrix units
(Intel AMX: Sapphire Rapids and later), bfloat16: oneDNN runs convolutions and matrix products
on the tiles, several times faster than float32, with float32's exponent range (no scaler).
Elsewhere (CPUs without AMX, where bf16 is emulated and slower), None: float32.
"""

from __future__ import annotations

import torch


def cpu_has_bf16_units() -> bool:
    """Whether this CPU has AMX tiles for bfloat16 (and torch can use them)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe and probe() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (RuntimeError, AttributeError):
        return False


def autocast_dtype(device: torch.device | str, amp: bool) -> torch.dtype | None:
    """The dtype to autocast to on ``device`` when mixed precision is asked for, or None."""
    if not amp:
        return None
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.float16
    if kind == "cpu" and cpu_has_bf16_units():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """"float32", "float16" or "bfloat16": how a run records the precision it trained in."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def autocast(device_type: str, dtype: torch.dtype | None) -> torch.autocast:
    """``torch.autocast`` to ``dtype`` on ``device_type``, or a disabled one for None."""
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def step_dtype(dtype: torch.dtype | None,
               scaler: torch.amp.GradScaler | None) -> torch.dtype | None:
    """A training step's autocast dtype: ``dtype`` if given, else float16 when a gradient
    scaler is on (CUDA AMP), else None (float32)."""
    if dtype is None and scaler is not None and scaler.is_enabled():
        return torch.float16
    return dtype
