"""The run plumbing that the supervised trainers (classifier, x-vector) share.

A run folder holds ``run.json`` (the settings; a different run there is refused),
``train_state/`` (rerunning resumes from it, or returns at once when it says finished),
``metrics.csv`` and the selected checkpoint's ``config.json``. This module opens such a
folder, seeds torch and builds the training and validation feature stores, holds a stratified
share of training rows out for validation, and bundles the optimisation stack (AdamW, a
plateau learning-rate schedule, an AMP gradient scaler) with its saved and restored state.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from optin.audio.features import FeatureConfig
from optin.checkpoint import (
    load_module_state,
    load_state,
    read_config,
    save_state,
    write_config,
)
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.corpora.splits import cut_shares
from optin.errors import ConfigError
from optin.training.data import FeatureStore
from optin.training.records import check_run_settings

STATE_DIR = "train_state"
SNAPSHOT_SECONDS = 60.0  # default: a kill loses at most about a minute of training
# when to save the training state, not what is trained: left out of the run settings
SNAPSHOT_FIELDS = ("checkpoint_every", "snapshot_seconds")


class RunConfig(Protocol):
    """What :func:`prepare_data` reads from a trainer's config."""

    seed: int
    device: str
    amp: bool

    @property
    def feature_config(self) -> FeatureConfig: ...


def log(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; any other name is taken as is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def checked_features(config: Any) -> FeatureConfig:
    """The ``features`` settings of a training config, refused by a ConfigError naming
    ``<Class>.features`` when they are wrong."""
    try:
        if not isinstance(config.features, dict):
            raise ConfigError(f"expected a mapping, got {config.features!r}")
        return FeatureConfig.from_dict(config.features)
    except ConfigError as err:
        raise ConfigError(f"{type(config).__name__}.features: {err}") from err


# ---------------------------------------------------------------------- run folder
def run_settings(train_config: dict[str, Any], manifest: Manifest,
                 data_note: dict[str, Any] | None) -> dict[str, Any]:
    """What must match to reuse a run folder: the config, the manifest and the data note."""
    return {"config": train_config, "manifest": manifest.fingerprint(), "data": data_note or {}}


def provenance(train_config: dict[str, Any], seed: int, manifest: Manifest,
               data_note: dict[str, Any] | None) -> dict[str, Any]:
    """The ``provenance`` section of a trained checkpoint's ``config.json``."""
    return {
        "manifest": str(manifest.source) if manifest.source else None,
        "manifest_fingerprint": manifest.fingerprint(),
        "seed": seed,
        "train_config": train_config,
        "data": data_note or {},
    }


@dataclass
class OpenedRun:
    """A run folder after its settings were checked: the saved state, if any.

    ``finished`` is the selected checkpoint's ``config.json`` when the run is already done.
    """

    state_dir: Path
    state: dict[str, Any] | None
    finished: dict[str, Any] | None


def open_run(out_dir: Path, train_config: dict[str, Any], manifest: Manifest,
             data_note: dict[str, Any] | None) -> OpenedRun:
    """Record (or check) the run settings and load the training state of ``out_dir``."""
    check_run_settings(out_dir, run_settings(train_config, manifest, data_note))
    state_dir = out_dir / STATE_DIR
    state = load_state(state_dir)
    finished = None
    if state is not None and state.get("progress", {}).get("finished"):
        log(f"{out_dir}: already trained; nothing to do")
        finished = json.loads((out_dir / "config.json").read_text())
    return OpenedRun(state_dir, state, finished)


def record_training(out_dir: Path, training: dict[str, Any]) -> dict[str, Any]:
    """Add the ``training`` summary to the selected checkpoint's ``config.json``; return it."""
    final = read_config(out_dir)
    final["training"] = training
    write_config(out_dir, final)
    return read_config(out_dir)


class RunSettings:
    """Base of the training configs (classifier, x-vector, obfuscator): the settings that must
    match to resume or reuse a run are all fields but ``workers``, ``device`` and the snapshot
    cadence, which may change between runs."""

    def run_settings(self) -> dict[str, Any]:
        data = asdict(self)  # type: ignore[call-overload]
        for key in ("workers", "device", *SNAPSHOT_FIELDS):
            data.pop(key)
        return data


# epochs in a row at zero validation error (100 % accuracy, or EER 0) after which a run stops:
# its selection score can go no higher, so more epochs could only move the tie-breaking loss
CEILING_EPOCHS = 2


def early_stop(errors: list[float], bad_epochs: int, patience: int) -> str | None:
    """Why a supervised run stops after its latest epoch, or ``None`` to go on.

    Args:
        errors: the validation error of every epoch so far (lower is better, 0 is perfect:
            1 - utterance accuracy, or the EER).
        bad_epochs: epochs since the error last fell.
        patience: the run's patience.
    """
    if len(errors) >= CEILING_EPOCHS and all(e <= 0.0 for e in errors[-CEILING_EPOCHS:]):
        return f"early stop: validation error 0 (its floor) for {CEILING_EPOCHS} epochs"
    if bad_epochs >= patience:
        return f"early stop: validation score not better for {patience} epochs"
    return None


class SnapshotTimer:
    """When a training loop saves its state before the end of an epoch: every ``every_steps``
    steps or once ``every_seconds`` have passed since the last save, whichever comes first, so
    a kill loses at most that much work whatever the length of an epoch."""

    def __init__(self, every_steps: int | None, every_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.clock = clock
        self.last = clock()

    def due(self, step: int, steps: int | None = None) -> bool:
        """Save after step ``step`` (counted from 1) of ``steps``? Never after the last step,
        which the epoch end saves; a yes restarts the clock."""
        if steps is not None and step >= steps:
            return False
        now = self.clock()
        if (self.every_steps and step % self.every_steps == 0) or \
                now - self.last >= self.every_seconds:
            self.last = now
            return True
        return False

    def saved(self) -> None:
        """Restart the clock after a save made elsewhere (at the end of an epoch)."""
        self.last = self.clock()


# ---------------------------------------------------------------------- data
def hold_out_share(train: Manifest, column: str, fraction: float, seed: int) -> Manifest:
    """A seeded ``fraction`` of the rows of every value of ``column`` (a stratified hold-out)."""
    rng = random.Random(seed)
    chosen: set[str] = set()
    groups: dict[str, list[str]] = {}
    for r in train.rows:
        groups.setdefault(r[column], []).append(r["id"])
    for value in sorted(groups):
        ids, names = cut_shares(sorted(groups[value]), (("train", 1 - fraction),
                                                        ("valid", fraction)), rng)
        chosen |= {i for i, n in zip(ids, names, strict=True) if n == "valid"}
    return train.filter(lambda r: r["id"] in chosen)


def prepare_data(
    config: RunConfig,
    manifest: Manifest,
    train: Manifest,
    valid: Manifest,
    cache_root: str | os.PathLike | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
) -> tuple[torch.device, bool, FeatureStore, FeatureStore]:
    """Seed torch, choose the device (AMP only on CUDA when asked) and build the stores.

    Returns (device, use_amp, train store, valid store). The stores read the manifest's
    feature cache unless ``cache_root``; with ``transform`` (protected data) every utterance
    is transformed once, in memory.
    """
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    use_amp = config.amp and device.type == "cuda"
    features = config.feature_config
    cache = (FeatureCache(cache_root, features) if cache_root is not None
             else FeatureCache.for_manifest(manifest, features))
    train_store = FeatureStore(train, cache, progress=progress)
    valid_store = FeatureStore(valid, cache, progress=progress)
    if transform is not None:
        train_store = train_store.transformed(transform, progress)
        valid_store = valid_store.transformed(transform, progress)
    return device, use_amp, train_store, valid_store


# ---------------------------------------------------------------------- optimisation
@dataclass
class Optimisation:
    """A model on its device with AdamW, a plateau schedule and an AMP gradient scaler."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    device: torch.device
    use_amp: bool

    @classmethod
    def adamw(cls, model: torch.nn.Module, device: torch.device, use_amp: bool, lr: float,
              weight_decay: float, patience: int, mode: str) -> Optimisation:
        """AdamW; the learning rate halves after ``max(1, patience // 2)`` flat epochs."""
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=0.5, patience=max(1, patience // 2))
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        return cls(model, optimizer, scheduler, scaler, device, use_amp)

    def restore(self, state: dict[str, Any], state_dir: Path) -> dict[str, Any]:
        """Load a saved training state (weights, optimizer, schedule, scaler, torch RNG);
        returns its ``progress``."""
        load_module_state(self.model, state["model"], state_dir)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.use_amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        return state["progress"]

    def save(self, state_dir: Path, progress: dict[str, Any]) -> None:
        """Save the whole training state with ``progress`` (what :meth:`restore` reads)."""
        save_state(state_dir, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.use_amp else {},
            "rng": torch.get_rng_state(), "progress": progress,
        })

    def forward(self, x: Tensor, lengths: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and cross-entropy loss of one batch (on the device), under AMP when on."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            logits = self.model(x, lengths)
            loss = F.cross_entropy(logits.float(), labels)
        return logits, loss

    def step(self, loss: Tensor, grad_clip: float) -> None:
        """Backpropagate ``loss``, clip the gradient norm and take one optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
