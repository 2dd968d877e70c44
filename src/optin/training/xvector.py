"""Training and loading the x-vector TDNN: the speaker-verification extractor, and an attacker.

``train_xvector`` fits the TDNN of :mod:`optin.models.xvector` as a classifier of
``config.attribute`` (the speakers by default) on the manifest's ``train`` split only: random
fixed-length crops (``RandomCropDataset``), drawn class-balanced (``BalancedSampler``), AdamW,
gradient clipping, cross-entropy over the training classes, a plateau learning-rate schedule on
the validation score.

Two selection rules (``config.selection``):

* ``eer`` (the speaker-verification extractor): validation is the manifest's ``valid`` split
  when it holds at least two speakers with two utterances each (open-set speakers are fine: it
  is scored by verification); otherwise a share of each training speaker's rows. After every
  epoch the whole validation utterances are embedded and scored by cosine on all (or up to
  ``max_trials``) pairs. The epoch with the lowest validation EER wins; on a tie, the one whose
  validation loss is lower by at least 1e-3 (the loss exists only when every validation speaker
  was seen in training; otherwise the earlier epoch is kept).
* ``accuracy`` (an attribute attacker of the x-vector family, any closed-set ``attribute``):
  validation is the ``valid`` split's rows whose class was seen in training (else a stratified
  share of the training rows); the epoch with the highest utterance accuracy of the softmax
  head on whole utterances wins; on a tie, validation loss lower by at least 1e-3.

``metrics.csv`` holds one row per epoch.

The run folder holds ``run.json`` (the settings; a different run there is refused),
``train_state/`` saved every ``checkpoint_every`` steps or ``snapshot_seconds`` seconds and at
every epoch end (rerunning resumes where it was saved, or returns at once when finished),
``metrics.csv`` and the selected checkpoint (``config.json`` + ``model.safetensors``), which
:class:`XVectorExtractor` loads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from torch import Tensor

from optin.audio.features import FeatureConfig
from optin.audio.segments import SegmentConfig
from optin.corpora.manifest import LabelEncoder, Manifest, ManifestError
from optin.errors import ConfigError
from optin.metrics.verification import (
    make_trials,
    trial_counts,
)
from optin.models.xvector import XVector, XVectorConfig
from optin.settings import Rule, above, at_least, between, check_fields
from optin.training.data import CropTraining
from optin.training.loop import LOSS_MIN_DELTA, FunctionTask, LoopSettings, Validation, fit
from optin.training.presets import from_preset
from optin.training.runs import (
    SNAPSHOT_SECONDS,
    Optimisation,
    RunSettings,
    checked_features,
    hold_out_share,
    log,
    open_run,
    prepare_data,
    provenance,
)
from optin.training.xvector_extractor import SPEAKER_COLUMN, XVectorExtractor, score_embeddings

SELECTIONS = {
    "eer": ("lowest validation EER; on a tie, validation loss lower by at least "
            f"{LOSS_MIN_DELTA} (closed-set validation only), else the earlier epoch"),
    "accuracy": ("highest validation utterance accuracy; on a tie, validation loss lower by at "
                 f"least {LOSS_MIN_DELTA}"),
}


@dataclass
class XVectorTrainConfig(RunSettings):
    """Everything that decides an x-vector run (stored in the run folder and checkpoint).

    ``segment_length`` is the training crop in frames (10 ms); ``draws_per_epoch`` defaults to
    the number of half-overlapping crops in the training split. ``max_trials`` caps the
    validation trial list.
    """

    attribute: str = SPEAKER_COLUMN
    selection: Literal["eer", "accuracy"] = "eer"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    patience: int = 5
    balanced: bool = True
    draws_per_epoch: int | None = None
    segment_length: int = 200
    n_mels: int = 30
    frame_channels: int = 512
    pool_channels: int = 1500
    embed_dim: int = 512
    segment_dim: int = 512
    max_trials: int = 20000
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint_every: int = 50
    snapshot_seconds: float = SNAPSHOT_SECONDS
    valid_fraction: float = 0.1  # used only when the manifest's valid split cannot serve
    features: dict[str, Any] = field(default_factory=lambda: FeatureConfig().to_dict())

    RANGES: ClassVar[dict[str, Rule]] = {
        "epochs": at_least(1), "batch_size": at_least(1), "lr": above(0),
        "weight_decay": at_least(0), "grad_clip": above(0), "patience": at_least(1),
        "draws_per_epoch": at_least(1), "segment_length": at_least(1), "n_mels": at_least(1),
        "frame_channels": at_least(1), "pool_channels": at_least(1), "embed_dim": at_least(1),
        "segment_dim": at_least(1), "max_trials": at_least(1), "seed": at_least(0),
        "workers": at_least(0), "checkpoint_every": at_least(1),
        "snapshot_seconds": at_least(0),
        "valid_fraction": between(0, 1, low_open=True, high_open=True)}

    def __post_init__(self) -> None:
        check_fields(self)
        checked_features(self)
        if self.selection == "eer" and self.attribute != SPEAKER_COLUMN:
            raise ConfigError(f"XVectorTrainConfig.selection: 'eer' scores speaker verification; "
                              f"a classifier of '{self.attribute}' needs 'accuracy'")

    @property
    def segments(self) -> SegmentConfig:
        """Training crops of ``segment_length`` frames (hop: half of it, for draw counts)."""
        return SegmentConfig(self.segment_length, max(1, self.segment_length // 2))

    @property
    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.features)

    def architecture(self, n_speakers: int) -> XVectorConfig:
        """The model these settings build for ``n_speakers`` training classes (speakers)."""
        features = self.feature_config
        return XVectorConfig(
            n_speakers=n_speakers, n_freq=features.n_freq, sample_rate=features.sample_rate,
            n_mels=self.n_mels, frame_channels=self.frame_channels,
            pool_channels=self.pool_channels, embed_dim=self.embed_dim,
            segment_dim=self.segment_dim,
        )



PRESETS: dict[str, dict[str, Any]] = {
    # about 25 s on the built-in quick corpus on one CPU core: narrow frame layers
    # (128, last 256) but the spec's 512-dim embedding and segment layers, 1.5 s crops
    "quick": {"epochs": 8, "batch_size": 32, "lr": 1.5e-3, "patience": 4, "segment_length": 150,
              "frame_channels": 128, "pool_channels": 256},
    # the spec's sizes (512 x 4, 1500; 512, 512), 3 s crops, trained to convergence
    "paper": {"epochs": 60, "batch_size": 64, "lr": 1e-3, "patience": 8, "segment_length": 300,
              "frame_channels": 512, "pool_channels": 1500},
}


def preset_config(preset: str = "quick", **overrides: Any) -> XVectorTrainConfig:
    """A training config from a named preset with explicit overrides (None values ignored)."""
    return from_preset(XVectorTrainConfig, PRESETS, preset, overrides)


def _usable_for_trials(speakers: Sequence[str]) -> bool:
    """Whether the utterances give both target and non-target trials."""
    return min(trial_counts(speakers)) > 0


def _select_validation(manifest: Manifest, train: Manifest, cfg: XVectorTrainConfig
                       ) -> tuple[Manifest, str]:
    """The validation rows, and a note on where they came from (never the test split)."""
    if cfg.selection == "accuracy":
        known = set(train.column(cfg.attribute))
        if "split" in manifest.columns:
            valid = manifest.where(split="valid").filter(lambda r: r[cfg.attribute] in known)
            if len({r[cfg.attribute] for r in valid.rows}) >= 2:
                return valid, "manifest valid split (classes seen in training)"
        return hold_out_share(train, cfg.attribute, cfg.valid_fraction, cfg.seed), (
            f"{cfg.valid_fraction:.0%} of the training rows per class (the manifest's valid "
            f"split has no usable '{cfg.attribute}' classes)")
    if "split" in manifest.columns:
        valid = manifest.where(split="valid")
        if len(valid) and _usable_for_trials(valid.column(SPEAKER_COLUMN)):
            return valid, "manifest valid split"
    held = hold_out_share(train, SPEAKER_COLUMN, cfg.valid_fraction, cfg.seed)
    if not _usable_for_trials(held.column(SPEAKER_COLUMN)):
        raise ManifestError("no usable validation rows: the valid split and a "
                            f"{cfg.valid_fraction:.0%} share of the training rows both lack "
                            "two speakers with two utterances each")
    return held, (f"{cfg.valid_fraction:.0%} of each training speaker's rows (the manifest's "
                  "valid split has no two speakers with two utterances each)")


def train_xvector(
    manifest: Manifest | str | os.PathLike,
    config: XVectorTrainConfig,
    out: str | os.PathLike,
    transform: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
    cache_root: str | os.PathLike | None = None,
    data_note: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume, or return the finished) x-vector run in ``out``.

    Args:
        manifest: the corpus manifest with ``speaker`` and ``split`` columns.
        transform: optional (F, T) -> (F, T) map applied once to every training and validation
            utterance (the semi-informed attacker retrains on protected speech this way).
        data_note: recorded in the run settings and checkpoint (e.g. which protection made
            the data); part of what must match to reuse the run.

    Returns:
        The final ``config.json`` of the selected checkpoint: its ``metrics`` (validation EER,
        minDCF, speaker accuracy of the selected epoch) and ``training`` (epochs run, selected
        epoch, stop reason, selection rule, seconds).
    """
    out_dir = Path(out)
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    manifest.require_column(config.attribute)
    train = manifest.split("train")
    valid, valid_note = _select_validation(manifest, train, config)
    held_out = set(valid.column("id"))
    train = train.filter(lambda r: r["id"] not in held_out)
    encoder = LabelEncoder.fit(train, config.attribute)
    by_accuracy = config.selection == "accuracy"

    run = open_run(out_dir, config.run_settings(), manifest, data_note)
    if run.finished is not None:
        return run.finished

    device, use_amp, train_store, valid_store = prepare_data(
        config, manifest, train, valid, cache_root, transform, progress)
    features = config.feature_config
    train_labels = encoder.encode_all(train_store.manifest)
    valid_labels = valid_store.manifest.column(config.attribute)
    valid_trials = None if by_accuracy else make_trials(valid_labels,
                                                        max_trials=config.max_trials,
                                                        seed=config.seed)

    arch = config.architecture(len(encoder))
    model = XVector(arch).to(device)
    opt = Optimisation.adamw(model, device, use_amp, config.lr, config.weight_decay,
                             config.patience, mode="min")
    crops = CropTraining.build(train_store, train_labels, config.segments, config.batch_size,
                               config.draws_per_epoch, config.seed, config.balanced)

    scored_by = (f"{int(valid_trials[2].numel())} valid trials" if valid_trials is not None
                 else "valid utterance accuracy")
    log(f"training x-vector {'classifier' if by_accuracy else 'extractor'} of "
        f"'{config.attribute}' ({len(encoder)} classes, {len(train_store)} train / "
        f"{len(valid_store)} valid utterances; validation: {valid_note}; {scored_by}) on "
        f"{device}, {model.num_parameters():,} parameters")
    extractor = XVectorExtractor(model, encoder.classes, features, attribute=config.attribute)

    def error_of(row: dict[str, Any]) -> float:
        # one "lower is better" number per rule: the EER, or the error rate 1 - accuracy
        return 1.0 - row["valid_speaker_accuracy"] if by_accuracy else row["valid_eer"]

    def validate() -> Validation:
        emb = extractor.embed_store(valid_store)
        if by_accuracy:
            closed = extractor.score_classes(emb, valid_labels)
            scores = {"eer": None, "min_dcf": None, "loss": closed["loss"],
                      "speaker_accuracy": closed["utterance_accuracy"]}
        else:
            scores = score_embeddings(extractor, emb, valid_labels, trials=valid_trials)
        columns = {"valid_eer": scores["eer"], "valid_min_dcf": scores["min_dcf"],
                   "valid_loss": scores["loss"],
                   "valid_speaker_accuracy": scores["speaker_accuracy"]}
        accuracy = scores["speaker_accuracy"]
        text = ("valid " + ("" if by_accuracy else
                            f"EER {scores['eer']:.3f} minDCF {scores['min_dcf']:.3f} ")
                + (f"{config.attribute} acc {accuracy:.3f}" if accuracy is not None else ""))
        error = error_of(columns)
        return Validation(columns, error=error,
                          loss=scores["loss"] if scores["loss"] is not None else math.inf,
                          schedule=error, scores=scores, text=text)

    def save(epoch: int, validation: Validation) -> None:
        _save_extractor(out_dir, model, encoder, features, config, manifest,
                        {"valid": validation.scores, "best_epoch": epoch}, data_note)

    return fit(FunctionTask(validate, save, error_of), run, opt, crops,
               LoopSettings.of(config), out_dir, accuracy_column="train_accuracy",
               selection=SELECTIONS[config.selection], validation_note=valid_note,
               progress=progress)


def _save_extractor(out_dir: Path, model: XVector, encoder: LabelEncoder,
                    features: FeatureConfig, config: XVectorTrainConfig, manifest: Manifest,
                    metrics: dict[str, Any], data_note: dict[str, Any] | None) -> None:
    extractor = XVectorExtractor(model, encoder.classes, features, attribute=encoder.attribute)
    extractor.save(out_dir, extra={
        "segments": config.segments.to_dict(),
        "provenance": provenance(config.run_settings(), config.seed, manifest, data_note),
        "metrics": metrics,
    })
