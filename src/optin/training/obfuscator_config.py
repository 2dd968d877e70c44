"""The obfuscator's training settings: :class:`ObfuscatorTrainConfig`, its presets and the
privacy-weight schedule. Trained by :func:`optin.training.obfuscator.train_obfuscator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from optin.settings import Rule, above, at_least, between, check_fields
from optin.training.presets import from_preset
from optin.training.runs import SNAPSHOT_SECONDS, RunSettings


@dataclass
class ObfuscatorTrainConfig(RunSettings):
    """Everything that decides an obfuscator run."""

    epochs: int = 5
    batch_size: int = 16
    segment_length: int = 100  # frames per training crop (a multiple of 4 avoids padding)
    draws_per_epoch: int | None = None  # default: segments in the training split
    optimizer: Literal["sgd", "adam"] = "sgd"  # sgd (paper) or adam
    lr: float = 1e-2
    momentum: float = 0.9
    lambda_t: float = 1.0
    lambda_p: float = 1.0
    privacy_layer: int = 3
    deobfuscator_steps: int = 1
    hard_targets: bool = False
    obfuscator_width: int = 16
    obfuscator_blocks: int = 3
    obfuscator_residual: bool = False
    obfuscator_arch: Literal["cyclegan-vc2", "causal"] = "cyclegan-vc2"
    causal_hidden: int = 128
    causal_blocks: int = 4
    lookahead: int = 2
    privacy_warmup: float = 0.0  # epochs over which lambda_p ramps linearly from 0
    contraction: float = 0.0  # weight of L_c (within-class contraction) relative to L_p
    template_momentum: float = 0.99
    deobfuscator_width: int = 64
    deobfuscator_blocks: int = 6
    grad_clip: float = 5.0
    min_agreement: float = 0.95
    window: int = 3
    tolerance: float = 0.1
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint_every: int = 50
    snapshot_seconds: float = SNAPSHOT_SECONDS

    HELP: ClassVar[dict[str, str]] = {
        "lr": "learning rate of both networks (paper: 1e-2)",
        "optimizer": "paper: sgd, momentum 0.9", "lambda_t": "weight of the target loss L_t",
        "lambda_p": "weight of the privacy loss L_p",
        "privacy_layer": "N: deobfuscator stages forming F_gamma",
        "deobfuscator_steps": "K: deobfuscator updates per obfuscator update",
        "hard_targets": "L_t against T(X)'s label instead of its posterior",
        "segment_length": "frames per training crop",
        "obfuscator_width": "base channels C (paper: 16)",
        "obfuscator_blocks": "residual blocks (paper: 3)",
        "deobfuscator_width": "base channels C (paper: 64)",
        "deobfuscator_blocks": "residual blocks (paper: 6)",
        "obfuscator_residual": "x + G(x), starting as the identity (real speech: with "
                               "--optimizer adam --lr 1e-3 --privacy-warmup 2)",
        "obfuscator_arch": "cyclegan-vc2 (the paper's, offline) or causal (streaming-native: "
                           "each frame computed once, a stream equals offline)",
        "causal_hidden": "channels of the causal obfuscator (default 128)",
        "causal_blocks": "residual blocks of the causal obfuscator (default 4)",
        "lookahead": "frames ahead the causal obfuscator reads (default 2: 20 ms)",
        "privacy_warmup": "epochs over which lambda_p ramps in from 0 (default 0)",
        "contraction": "weight of the within-class contraction L_c, times lambda_p (default 0)",
        "template_momentum": "EMA momentum of L_c's class templates (default 0.99)",
        "min_agreement": "validation agreement a selected epoch must reach (default 0.95)",
        "window": "epochs over which convergence is judged (default 3)",
        "tolerance": "relative spread of the validation losses that counts as converged",
        "device": "auto (default), cpu, cuda",
        "amp": "mixed precision: float16 on a GPU, bfloat16 on a CPU with AMX units (float32 "
               "elsewhere)",
        "checkpoint_every": "save the training state every N steps (default 50)",
        "snapshot_seconds": "... and every S seconds, whichever comes first (default 60)"}
    RANGES: ClassVar[dict[str, Rule]] = {
        "epochs": at_least(1), "batch_size": at_least(1), "segment_length": at_least(1),
        "draws_per_epoch": at_least(1), "lr": above(0), "momentum": between(0, 1),
        "lambda_t": at_least(0), "lambda_p": at_least(0), "privacy_layer": at_least(1),
        "deobfuscator_steps": at_least(1), "obfuscator_width": at_least(1),
        "obfuscator_blocks": at_least(0), "causal_hidden": at_least(1),
        "causal_blocks": at_least(0), "lookahead": at_least(0), "deobfuscator_width": at_least(1),
        "deobfuscator_blocks": at_least(0), "grad_clip": above(0),
        "min_agreement": between(0, 1), "window": at_least(1), "tolerance": above(0),
        "seed": at_least(0), "workers": at_least(0), "checkpoint_every": at_least(1),
        "snapshot_seconds": at_least(0), "privacy_warmup": at_least(0),
        "contraction": at_least(0), "template_momentum": between(0, 1, high_open=True)}

    def __post_init__(self) -> None:
        check_fields(self)



OBFUSCATOR_PRESETS: dict[str, dict[str, Any]] = {
    # minutes on a 2-core CPU for the built-in quick corpus: the paper's obfuscator, a
    # downsized deobfuscator
    "quick": {"epochs": 5, "batch_size": 16, "deobfuscator_width": 16,
              "deobfuscator_blocks": 3},
    # the paper's sizes: obfuscator B=16 with 3 residual blocks, deobfuscator B=64 with 6
    "paper": {"epochs": 60, "batch_size": 32, "deobfuscator_width": 64,
              "deobfuscator_blocks": 6},
}


def obfuscator_preset(preset: str = "quick", **overrides: Any) -> ObfuscatorTrainConfig:
    """A config from a named preset with explicit overrides (None values ignored)."""
    return from_preset(ObfuscatorTrainConfig, OBFUSCATOR_PRESETS, preset, overrides)


def privacy_ramp(config: ObfuscatorTrainConfig, epochs_done: float) -> float:
    """lambda_p after ``epochs_done`` epochs: a linear ramp from 0 over ``privacy_warmup``
    epochs, then ``config.lambda_p``."""
    if not config.privacy_warmup:
        return config.lambda_p
    return config.lambda_p * min(1.0, epochs_done / config.privacy_warmup)
