"""The x-vector world: one extractor per seed, speaker verification for every system, and the
opt-out ADR baseline evaluated on x-vectors.

* :class:`SeedVectors` trains (or finds) the seed's x-vector extractor on the original training
  split and embeds any protected copy of the data; :meth:`SeedVectors.verification` gives the
  VoicePrivacy pairings (EER, minDCF) of a spectrogram-world system, including the
  semi-informed attacker whose extractor is retrained on protected training data.
* :func:`run_adr` evaluates ADR the way the paper does: its target task (speaker identity) and
  its attackers are classifiers on x-vectors; the target model is trained on ADR-transformed
  training x-vectors (what an app behind ADR receives; the unmodified model's accuracy on
  protected x-vectors is reported beside it), ignorant attackers are trained on original
  x-vectors, informed ones on ADR-transformed training x-vectors. Its "original" attacker
  accuracy is the x-vector counterpart of the spectrogram classifiers' (the paper's check that
  both representations carry about the same information on the attribute).

Vector classifiers are the small MLPs of :mod:`optin.evaluation.vector_classifier`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import LabelEncoder, Manifest, ManifestError
from optin.errors import ConfigError
from optin.evaluation.attackers import chance_on_test
from optin.evaluation.metrics import accuracy
from optin.evaluation.systems import SystemContext, key_of
from optin.evaluation.vector_classifier import (
    VectorClassifierConfig,
    train_vector_classifier,
    vector_accuracy,
    vector_predict,
)
from optin.training.checkpoint import read_config
from optin.training.data import FeatureStore
from optin.training.runs import STATE_DIR

SPLITS = ("train", "valid", "test")


def encode_splits(manifest: Manifest, attribute: str) -> dict[str, Tensor]:
    """Labels of ``attribute`` per split, encoded with the training split's classes.

    Raises:
        ValueError: a valid/test label the training split never has (names them).
    """
    train = manifest.split("train")
    encoder = LabelEncoder.fit(train, attribute)
    labels = {}
    for split in SPLITS:
        part = manifest.split(split)
        unknown = sorted({r[attribute] for r in part.rows} - set(encoder.classes))
        if unknown:
            raise ManifestError(f"split '{split}' has {attribute} value(s) absent from the "
                                f"training split ({', '.join(unknown[:8])}): a closed-set "
                                "x-vector classifier cannot be scored on them")
        labels[split] = torch.tensor(encoder.encode_all(part), dtype=torch.long)
    return labels


class SeedVectors:
    """The seed's x-vector extractor and the embeddings every system is scored with."""

    def __init__(self, manifest: Manifest, models_dir: Path, preset: str, seed: int,
                 options: dict[str, Any], progress: bool, log: Callable[[str], None]) -> None:
        self.manifest = manifest
        self.models_dir = models_dir
        self.preset = preset
        self.seed = seed
        self.options = options
        self.progress = progress
        self.log = log
        self._extractor: Any = None
        self.extractor_dir: Path | None = None
        self._original: dict[str, Tensor] = {}

    def _config(self) -> Any:
        from optin.training.xvector import preset_config

        return preset_config(self.preset, seed=self.seed, **self.options)

    def train(self, manifest: Manifest, transform: Callable[[Tensor], Tensor] | None = None,
              depends: str | None = None) -> Path:
        """Train (or find) an extractor on ``manifest``'s training split; returns its folder."""
        from optin.training.xvector import train_xvector

        config = self._config()
        kind = "xvector" + ("-protected" if depends else "")
        key = key_of(config.run_settings(), manifest, *([depends] if depends else []))
        out = self.models_dir / f"{kind}-{key}"
        train_xvector(manifest, config, out, transform=transform, progress=self.progress)
        return out

    @property
    def extractor(self) -> Any:
        """The extractor trained on the original training split (trained on first use)."""
        if self._extractor is None:
            from optin.training.xvector import XVectorExtractor

            self.log(f"seed {self.seed}: x-vector extractor on the original training split")
            self.extractor_dir = self.train(self.manifest)
            self._extractor = XVectorExtractor.load(self.extractor_dir)
        return self._extractor

    def embed(self, manifest: Manifest, split: str,
              transform: Callable[[Tensor], Tensor] | None = None, extractor: Any = None
              ) -> Tensor:
        """(N, 512) embeddings of one split of ``manifest`` (rows in manifest order)."""
        extractor = extractor or self.extractor
        store = FeatureStore(manifest.split(split), FeatureCache.for_manifest(manifest),
                             progress=False)
        return extractor.embed_store(store, transform=transform)

    def original(self, split: str) -> Tensor:
        """(N, 512) embeddings of the original data of one split (computed once)."""
        if split not in self._original:
            self._original[split] = self.embed(self.manifest, split)
        return self._original[split]

    def verification(self, manifest: Manifest | None,
                     transform: Callable[[Tensor], Tensor] | None,
                     fingerprint: str | None) -> dict[str, Any]:
        """VoicePrivacy pairings on the test split for protected inputs (``manifest`` with
        ``transform``); ``fingerprint`` None scores the original data only."""
        from optin.evaluation.verification import asv_pairings

        speakers = self.manifest.split("test").column("speaker")
        original = self.original("test")
        protected = semi = None
        if fingerprint is not None:
            data = manifest or self.manifest
            protected = self.embed(data, "test", transform)
            self.log(f"seed {self.seed}: x-vector extractor retrained on protected data "
                     "(semi-informed)")
            from optin.training.xvector import XVectorExtractor

            semi_extractor = XVectorExtractor.load(self.train(data, transform, fingerprint))
            semi = self.embed(data, "test", transform, extractor=semi_extractor)
        return asv_pairings(original, protected, speakers, semi_informed=semi,
                            seed=self.seed)


def _vector_attack_scores(x: dict[str, Tensor], p: dict[str, Tensor], labels: dict[str, Tensor],
                          target_posteriors: dict[str, Tensor], seed: int) -> dict[str, float]:
    """original / ignorant / informed / output-only accuracies for one attribute."""
    from optin.evaluation.attackers import OutputOnlyConfig, output_only_predict, train_output_only

    n = int(labels["train"].max()) + 1
    cfg = VectorClassifierConfig(seed=seed)
    original = train_vector_classifier(x["train"], labels["train"], n,
                                       (x["valid"], labels["valid"]), cfg)
    informed = train_vector_classifier(p["train"], labels["train"], n,
                                       (p["valid"], labels["valid"]), cfg)
    output_only = train_output_only(target_posteriors["train"], labels["train"], n,
                                    OutputOnlyConfig(seed=seed))
    floor = output_only_predict(output_only, target_posteriors["test"])
    return {
        "original": vector_accuracy(original, x["test"], labels["test"]),
        "ignorant": vector_accuracy(original, p["test"], labels["test"]),
        "informed": vector_accuracy(informed, p["test"], labels["test"]),
        "output_only": accuracy(labels["test"], floor),
    }


def run_adr(ctx: SystemContext, permitted: str, attacked: list[str]) -> dict[str, Any]:
    """Fit ADR on the seed's training x-vectors and score it like every system.

    Options (``adr:`` in the config): ``protect`` (the attribute ADR hides, default gender),
    ``preset`` (default: the experiment's) and any ADR config field (e.g. ``inference_w``, the
    attribute code at inference, 0.5).
    """
    from optin.baselines.adr import adr_preset, load_adr, save_adr
    from optin.baselines.adr_training import train_adr

    assert ctx.vectors is not None, "ADR needs the seed's x-vectors"
    options = dict(ctx.options)
    protect = options.pop("protect", "gender")
    preset = options.pop("preset", ctx.preset)
    ctx.manifest.require_column(protect)
    if protect == permitted:
        raise ConfigError(f"ADR cannot protect '{protect}', the permitted attribute (set "
                          "adr: {protect: ...} to another binary attribute)")
    x = {s: ctx.vectors.original(s) for s in SPLITS}
    options.setdefault("input_dim", int(x["train"].shape[1]))
    config = adr_preset(preset, seed=ctx.seed, **options)
    protect_labels = encode_splits(ctx.manifest, protect)
    classes = LabelEncoder.fit(ctx.manifest.split("train"), protect).classes
    if len(classes) != 2:
        raise ManifestError(f"ADR protects a binary attribute; '{protect}' has {len(classes)} "
                            f"values in the training split ({', '.join(classes[:8])})")
    assert ctx.vectors.extractor_dir is not None  # set when the x-vectors above were made
    extractor_hash = read_config(ctx.vectors.extractor_dir)["weights_sha256"]
    out = ctx.models_dir / f"adr-{key_of(config.to_dict(), ctx.manifest, protect, extractor_hash)}"
    if (out / "model.safetensors").is_file():
        adr = load_adr(out)
        history = (read_config(out).get("info") or {}).get("history") or {}
    else:
        ctx.log(f"seed {ctx.seed}: ADR protecting '{protect}' on x-vectors")
        adr, history = train_adr(x["train"], protect_labels["train"], config,
                                 valid=(x["valid"], protect_labels["valid"]),
                                 attribute_name=protect, class_names=list(classes),
                                 state_dir=out / STATE_DIR)
        save_adr(adr, out, {"protect": protect, "classes": list(classes), "history": history})
        shutil.rmtree(out / STATE_DIR, ignore_errors=True)  # done: the model is saved
    p = {s: adr.transform(x[s]) for s in SPLITS}

    # ADR hands the app protected x-vectors, so the app's speaker model is trained on them (as
    # Noé et al. score speakers on protected x-vectors); the unmodified model's accuracy on
    # them is kept in "info".
    target_labels = encode_splits(ctx.manifest, permitted)
    n_target = int(target_labels["train"].max()) + 1
    vector_cfg = VectorClassifierConfig(seed=ctx.seed)
    target = train_vector_classifier(x["train"], target_labels["train"], n_target,
                                     (x["valid"], target_labels["valid"]), vector_cfg)
    target_protected = train_vector_classifier(p["train"], target_labels["train"], n_target,
                                               (p["valid"], target_labels["valid"]), vector_cfg)
    pred_original = vector_predict(target, x["test"]).argmax(dim=1)
    pred_protected = vector_predict(target_protected, p["test"]).argmax(dim=1)
    unmodified = vector_accuracy(target, p["test"], target_labels["test"])
    posteriors = {s: vector_predict(target_protected, p[s]) for s in ("train", "test")}
    attacks = {}
    for attribute in attacked:
        scores = _vector_attack_scores(x, p, encode_splits(ctx.manifest, attribute),
                                       posteriors, ctx.seed)
        attacks[attribute] = {"chance": chance_on_test(ctx.manifest, attribute), **scores,
                              "excess_leakage": scores["informed"] - scores["output_only"]}
    from optin.evaluation.verification import asv_pairings

    speakers = ctx.manifest.split("test").column("speaker")
    verification = asv_pairings(x["test"], p["test"], speakers, semi_informed=None,
                                seed=ctx.seed)
    converged = history.get("converged") if isinstance(history, dict) else None
    return {
        "target": {"original": accuracy(target_labels["test"], pred_original),
                   "obfuscated": accuracy(target_labels["test"], pred_protected),
                   "agreement": float((pred_original == pred_protected).float().mean())},
        "attacks": attacks,
        "verification": verification,
        "info": {"converged": converged, "model_dir": str(out), "protects": protect,
                 "unmodified_target_on_protected": unmodified},
    }
