"""Training and loading the DeepSpeech2 attribute classifier (the target model and attackers).

``train_classifier`` fits on the manifest's ``train`` split and selects on ``valid`` (never on
``test``): class-balanced sampling, AdamW, gradient clipping, a plateau learning-rate
schedule, early stopping on validation utterance accuracy (ties: loss lower by 1e-3; a stop
after two epochs at 100 %: the accuracy can go no higher),
``metrics.csv`` per epoch, and resume after a kill (the training state is saved every
``checkpoint_every`` steps or ``snapshot_seconds`` seconds, whichever comes first, and at every
epoch end; rerunning the same call continues).

The selected model is written to the run folder as a checkpoint (``config.json`` +
``model.safetensors``); :class:`Classifier` loads it back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from optin.audio.features import FeatureConfig
from optin.audio.segments import SegmentConfig
from optin.checkpoint import (
    CheckpointError,
    load_model,
    save_checkpoint,
)
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import LabelEncoder, Manifest, ManifestError
from optin.metrics.classification import accuracy, balanced_accuracy, chance_level, confusion_matrix
from optin.models.deepspeech2 import (
    DeepSpeech2Classifier,
    DeepSpeech2Config,
    utterance_posteriors,
    vote,
)
from optin.settings import Rule, above, at_least, between, check_fields
from optin.training.data import CropTraining, FeatureStore, eval_batches, segment_count
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
    resolve_device,
)

KIND = "deepspeech2-classifier"
Role = Literal["target", "attacker"]
ROLES: tuple[str, ...] = get_args(Role)


@dataclass
class ClassifierTrainConfig(RunSettings):
    """Everything that decides a classifier run (stored in the run folder and checkpoint)."""

    attribute: str
    role: Role = "target"
    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    patience: int = 4
    balanced: bool = True
    draws_per_epoch: int | None = None  # default: segments in the training split
    segment_length: int = 100
    segment_hop: int = 50
    conv_channels: int = 16
    hidden_size: int = 64
    rnn_layers: int = 3
    rnn_type: Literal["gru", "lstm"] = "gru"
    vote: Literal["majority", "mean"] = "majority"
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint_every: int = 50
    snapshot_seconds: float = SNAPSHOT_SECONDS
    valid_fraction: float = 0.1  # used only when the manifest's valid split cannot serve
    features: dict[str, Any] = field(default_factory=lambda: FeatureConfig().to_dict())

    HELP: ClassVar[dict[str, str]] = {
        "patience": "early-stopping patience in epochs", "workers": "DataLoader worker processes",
        "device": "auto (default), cpu, cuda, cuda:1 ...",
        "segment_length": "frames per segment (10 ms each)",
        "balanced": "class-balanced sampling", "amp": "mixed precision on a GPU",
        "draws_per_epoch": "training segments per epoch (default: those of the training split)",
        "checkpoint_every": "save the training state every N steps (default 50)",
        "snapshot_seconds": "... and every S seconds, whichever comes first (default 60)",
        "valid_fraction": "share of training rows held out when the manifest has no usable "
                          "valid split"}
    RANGES: ClassVar[dict[str, Rule]] = {
        "epochs": at_least(1), "batch_size": at_least(1), "lr": above(0),
        "weight_decay": at_least(0), "grad_clip": above(0), "patience": at_least(1),
        "draws_per_epoch": at_least(1), "segment_length": at_least(1),
        "segment_hop": at_least(1), "conv_channels": at_least(1), "hidden_size": at_least(1),
        "rnn_layers": at_least(1), "seed": at_least(0), "workers": at_least(0),
        "checkpoint_every": at_least(1), "snapshot_seconds": at_least(0),
        "valid_fraction": between(0, 1, low_open=True, high_open=True)}

    def __post_init__(self) -> None:
        check_fields(self)
        checked_features(self)

    @property
    def segments(self) -> SegmentConfig:
        return SegmentConfig(self.segment_length, self.segment_hop)

    @property
    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.features)



PRESETS: dict[str, dict[str, Any]] = {
    # minutes on a 2-core CPU for the built-in quick corpus
    "quick": {"epochs": 12, "batch_size": 32, "lr": 2e-3, "patience": 4, "rnn_layers": 2},
    # the paper's model size (C = 16, H = 64), trained to convergence
    "paper": {"epochs": 60, "batch_size": 64, "lr": 1e-3, "patience": 8, "rnn_layers": 3},
}


def preset_config(attribute: str, preset: str = "quick", **overrides: Any) -> ClassifierTrainConfig:
    """A training config from a named preset with explicit overrides (None values ignored)."""
    return from_preset(ClassifierTrainConfig, PRESETS, preset, overrides, attribute=attribute)


# ---------------------------------------------------------------------- the trained model
class Classifier:
    """A trained DeepSpeech2 attribute classifier with its labels, features and segments."""

    def __init__(self, model: DeepSpeech2Classifier, encoder: LabelEncoder,
                 features: FeatureConfig, segments: SegmentConfig, vote_method: str = "majority",
                 config: dict[str, Any] | None = None) -> None:
        self.model = model
        self.encoder = encoder
        self.features = features
        self.segments = segments
        self.vote_method = vote_method
        self.config = config or {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def load(cls, directory: str | os.PathLike, features: FeatureConfig | None = None,
             device: str | torch.device = "cpu") -> Classifier:
        """Load a checkpoint folder; refuse it if its feature settings differ from ``features``."""
        directory = Path(directory)
        loaded = load_model(directory, KIND, features=features, device=device)
        config = loaded.config
        try:
            if loaded.attribute is None:
                raise KeyError("labels.attribute")
            encoder = LabelEncoder(attribute=loaded.attribute, classes=loaded.classes)
            segs = SegmentConfig(**config["segments"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{directory / 'config.json'}: bad or missing field ({err})"
                                  ) from err
        model, feats = loaded.module, loaded.features
        return cls(model, encoder, feats, segs, config.get("vote", "majority"), config)

    @torch.no_grad()
    def predict(self, store: FeatureStore, transform: Callable[[Tensor], Tensor] | None = None,
                batch_segments: int = 256, progress: bool = False) -> dict[str, Tensor]:
        """Segment and utterance predictions for every row of a store.

        Returns a dict with ``segment_logits`` (S, K), ``segment_utterance`` (S,),
        ``utterance_pred`` (U,) by the checkpoint's vote and ``utterance_posteriors`` (U, K).
        """
        self.model.eval()
        logits, index = [], []
        total = segment_count(store, self.segments)
        bar = tqdm(total=total, desc="predict", unit="seg", disable=not progress, leave=False)
        for x, lengths, utt in eval_batches(store, self.segments, batch_segments, transform):
            out = self.model(x.to(self.device), lengths.to(self.device)).float().cpu()
            logits.append(out)
            index.append(utt)
            bar.update(len(utt))
        bar.close()
        seg_logits = torch.cat(logits)
        seg_utt = torch.cat(index)
        n = len(store)
        return {
            "segment_logits": seg_logits,
            "segment_utterance": seg_utt,
            "utterance_pred": vote(seg_logits, seg_utt, n, method=self.vote_method),
            "utterance_posteriors": utterance_posteriors(seg_logits, seg_utt, n),
        }


def score(predictions: dict[str, Tensor], labels: Tensor, classes: tuple[str, ...]
          ) -> dict[str, Any]:
    """Segment/utterance accuracy, balanced accuracy, confusion matrix and chance level."""
    k = len(classes)
    seg_truth = labels[predictions["segment_utterance"]]
    seg_pred = predictions["segment_logits"].argmax(dim=1)
    utt_pred = predictions["utterance_pred"]
    conf = confusion_matrix(labels, utt_pred, k)
    return {
        "utterances": int(labels.numel()),
        "segments": int(seg_truth.numel()),
        "segment_accuracy": accuracy(seg_truth, seg_pred),
        "utterance_accuracy": accuracy(labels, utt_pred),
        "balanced_accuracy": balanced_accuracy(conf),
        "chance": chance_level(labels),
        "classes": list(classes),
        "confusion": conf.tolist(),
    }


# ---------------------------------------------------------------------- training
def _select_validation(manifest: Manifest, train: Manifest, encoder: LabelEncoder,
                       cfg: ClassifierTrainConfig) -> tuple[Manifest, str]:
    """The validation rows, and a note on where they came from."""
    known = set(encoder.classes)
    valid = manifest.where(split="valid") if "split" in manifest.columns else None
    if valid is not None and len(valid):
        usable = valid.filter(lambda r: r[cfg.attribute] in known)
        if len(usable) >= max(1, len(valid) // 2) and len(
                {r[cfg.attribute] for r in usable.rows}) >= 2:
            return usable, "manifest valid split"
    # closed-set attributes under a speaker-disjoint split have unseen classes in 'valid':
    # hold out a stratified share of the training rows instead (never the test split)
    return hold_out_share(train, cfg.attribute, cfg.valid_fraction, cfg.seed), (
        f"{cfg.valid_fraction:.0%} of the training rows per class (the manifest's valid split "
        f"has no usable '{cfg.attribute}' classes)")


def train_classifier(
    manifest: Manifest | str | os.PathLike,
    config: ClassifierTrainConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
    cache_root: str | os.PathLike | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    data_note: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume, or return the finished) classifier run in ``out_dir``.

    Args:
        manifest: the corpus manifest with a ``split`` column.
        transform: optional (F, T) -> (F, T) map applied to every utterance's features
            (informed attackers train on obfuscated features this way).
        data_note: recorded in the checkpoint (e.g. which obfuscator produced the data).

    Returns:
        The final ``config.json`` content of the selected checkpoint.
    """
    out_dir = Path(out_dir)
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    manifest.require_column(config.attribute)
    train = manifest.split("train")
    encoder = LabelEncoder.fit(train, config.attribute)
    valid, valid_note = _select_validation(manifest, train, encoder, config)
    if len(valid) == 0:
        raise ManifestError(f"no validation rows for '{config.attribute}'")
    held_out = set(valid.column("id"))
    train = train.filter(lambda r: r["id"] not in held_out)

    run = open_run(out_dir, config.run_settings(), manifest, data_note)
    if run.finished is not None:
        return run.finished

    device, use_amp, train_store, valid_store = prepare_data(
        config, manifest, train, valid, cache_root, transform, progress)
    features = config.feature_config
    train_labels = encoder.encode_all(train_store.manifest)
    valid_labels = torch.tensor(encoder.encode_all(valid_store.manifest))
    segments = config.segments

    arch = DeepSpeech2Config(
        n_classes=len(encoder), n_freq=features.n_freq, conv_channels=config.conv_channels,
        hidden_size=config.hidden_size, rnn_layers=config.rnn_layers, rnn_type=config.rnn_type,
    )
    model = DeepSpeech2Classifier(arch).to(device)
    opt = Optimisation.adamw(model, device, use_amp, config.lr, config.weight_decay,
                             config.patience, mode="max")
    crops = CropTraining.build(train_store, train_labels, segments, config.batch_size,
                               config.draws_per_epoch, config.seed, config.balanced)
    log(f"training {config.role} classifier for '{config.attribute}' "
        f"({len(encoder)} classes, {len(train_store)} train / {len(valid_store)} valid "
        f"utterances; validation: {valid_note}) on {device}, "
        f"{model.num_parameters():,} parameters")
    classifier = Classifier(model, encoder, features, segments, config.vote)

    def validate() -> Validation:
        pred = classifier.predict(valid_store)
        loss = float(F.cross_entropy(pred["segment_logits"],
                                     valid_labels[pred["segment_utterance"]]))
        scores = score(pred, valid_labels, encoder.classes)
        accuracy = scores["utterance_accuracy"]
        return Validation(
            {"valid_loss": loss, "valid_segment_accuracy": scores["segment_accuracy"],
             "valid_utterance_accuracy": accuracy,
             "valid_balanced_accuracy": scores["balanced_accuracy"]},
            error=1.0 - accuracy, loss=loss, schedule=accuracy, scores=scores,
            text=f"valid loss {loss:.3f} utt acc {accuracy:.3f}")

    def save(epoch: int, validation: Validation) -> None:
        _save_classifier(out_dir, model, arch, encoder, features, config, manifest,
                         {"valid": validation.scores, "best_epoch": epoch}, data_note)

    task = FunctionTask(validate, save, lambda row: 1.0 - row["valid_utterance_accuracy"])
    return fit(task, run, opt, crops, LoopSettings.of(config), out_dir,
               accuracy_column="train_segment_accuracy",
               selection="highest validation utterance accuracy; on a tie, validation loss "
                         f"lower by at least {LOSS_MIN_DELTA}",
               validation_note=valid_note, progress=progress)


def _save_classifier(out_dir: Path, model: DeepSpeech2Classifier, arch: DeepSpeech2Config,
                     encoder: LabelEncoder, features: FeatureConfig,
                     config: ClassifierTrainConfig, manifest: Manifest,
                     metrics: dict[str, Any], data_note: dict[str, Any] | None) -> None:
    save_checkpoint(out_dir, model.state_dict(), {
        "kind": KIND,
        "role": config.role,
        "architecture": arch.to_dict(),
        "parameters": model.num_parameters(),
        "features": features.to_dict(),
        "segments": config.segments.to_dict(),
        "vote": config.vote,
        "labels": {"attribute": encoder.attribute, "classes": list(encoder.classes)},
        "provenance": provenance(config.run_settings(), config.seed, manifest, data_note),
        "metrics": metrics,
    })


# ---------------------------------------------------------------------- evaluation
def evaluate_classifier(
    model_dir: str | os.PathLike,
    manifest: Manifest | str | os.PathLike,
    split: str = "test",
    transform: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
    cache_root: str | os.PathLike | None = None,
    device: str = "auto",
    classifier: Classifier | None = None,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Accuracy of a checkpoint on one split of a manifest (optionally transformed input).

    Rows whose label the model never saw are an error naming them (an open-set split).
    With ``return_predictions`` the result also holds ``ids`` and ``predictions`` (class
    names after the vote), one per utterance.
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    clf = classifier or Classifier.load(model_dir, device=resolve_device(device))
    attribute = clf.encoder.attribute
    manifest.require_column(attribute)
    part = manifest.split(split)
    unknown = sorted({r[attribute] for r in part.rows} - set(clf.encoder.classes))
    if unknown:
        shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        raise ManifestError(
            f"split '{split}' has {attribute} value(s) the model was not trained on ({shown}); "
            "a closed-set classifier cannot be scored on them (speaker-disjoint split?)"
        )
    cache = (FeatureCache(cache_root, clf.features) if cache_root is not None
             else FeatureCache.for_manifest(manifest, clf.features))
    store = FeatureStore(part, cache, progress=progress)
    labels = torch.tensor(clf.encoder.encode_all(store.manifest))
    pred = clf.predict(store, transform=transform, progress=progress)
    result = score(pred, labels, clf.encoder.classes)
    result.update(attribute=attribute, split=split, model=str(model_dir))
    if return_predictions:
        result["ids"] = store.manifest.column("id")
        result["predictions"] = [clf.encoder.decode(int(i)) for i in pred["utterance_pred"]]
    return result
