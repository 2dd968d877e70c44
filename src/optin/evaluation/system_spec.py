"""What a protection system is: its spec and what it is given to fit itself for one seed.

A system module writes a fit (spectrogram world) or a run (its own world, e.g. x-vectors);
:mod:`optin.evaluation.systems` registers it by name in ``SYSTEMS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from optin.corpora.manifest import Manifest
from optin.evaluation.seed_vectors import SeedVectors
from optin.training.permitted import TargetChoice


@dataclass
class SystemContext:
    """What a protection system may use to fit itself for one seed.

    ``options`` are the experiment config's section for this system (e.g. ``obfuscator:``,
    ``mcadams:``, ``adr:``); ``vectors`` gives the seed's x-vector extractor and embeddings
    (trained on first use).
    """

    manifest: Manifest
    target_dir: Path | None
    models_dir: Path
    preset: str
    seed: int
    options: dict[str, Any]
    progress: bool
    log: Callable[[str], None]
    vectors: SeedVectors | None = None
    targets: list[TargetChoice] | None = None  # several or pretrained targets (else target_dir)


@dataclass
class FittedSystem:
    """A spectrogram-world system ready to protect: evaluate on ``manifest`` (None: the
    experiment's own) with ``transform`` applied to its cached features (None: as they are).

    ``fingerprint`` names the protection exactly (weights hash or settings key); models trained
    on protected data are keyed on it.
    """

    transform: Callable[[Tensor], Tensor] | None
    model_dir: Path
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    manifest: Manifest | None = None


# A system that runs its own world: (ctx, permitted, attacked) -> its results for the seed
# ({"target", "attacks", "verification", ...}, the keys a spectrogram system's results have).
RunSystem = Callable[[SystemContext, str, list[str]], dict[str, Any]]


@dataclass(frozen=True)
class System:
    """A registered protection system.

    Attributes:
        label: how reports and figures name it.
        world: "spectrogram" (``fit``: the harness judges T and attacks its protected data)
            or another world whose ``run`` scores the system itself (``"x-vector"``: ADR).
        options_key: the experiment-config section holding its options.
        fit: spectrogram world: fit the protection for one seed.
        run: its own world: fit and score it for one seed (the harness only records it).
        colour: its colour in every figure (None: one drawn from its name).
        needs_vectors: it uses the seed's x-vectors (``ctx.vectors``).
    """

    label: str
    world: str
    options_key: str
    fit: Callable[[SystemContext], FittedSystem] | None = None
    run: RunSystem | None = None
    colour: str | None = None
    needs_vectors: bool = False
