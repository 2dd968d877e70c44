"""The trained x-vector TDNN: :class:`XVectorExtractor` (load, embed, classify) and its
evaluation (embeddings of a split, verification scores, closed-set accuracy).

It is trained by :func:`optin.training.xvector.train_xvector`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from optin.audio.features import FeatureConfig
from optin.checkpoint import (
    load_model,
    save_checkpoint,
)
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest, ManifestError
from optin.metrics.verification import (
    cosine_scores,
    eer,
    make_trials,
    min_dcf,
)
from optin.models.xvector import XVector
from optin.training.data import FeatureStore
from optin.training.runs import (
    resolve_device,
)

KIND = "xvector"
SPEAKER_COLUMN = "speaker"


class XVectorExtractor:
    """A trained x-vector network with its class names (the training speakers, or the classes
    of ``attribute``) and feature settings."""

    def __init__(self, model: XVector, speakers: tuple[str, ...], features: FeatureConfig,
                 config: dict[str, Any] | None = None, attribute: str = SPEAKER_COLUMN) -> None:
        if len(speakers) != model.config.n_speakers:
            raise ValueError(f"{len(speakers)} class names for a model with "
                             f"{model.config.n_speakers} outputs")
        self.model = model
        self.speakers = tuple(speakers)
        self.attribute = attribute
        self.features = features
        self.config = config or {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        return self.model.config.embed_dim

    @classmethod
    def load(cls, directory: str | os.PathLike, features: FeatureConfig | None = None,
             device: str | torch.device = "cpu") -> XVectorExtractor:
        """Load a checkpoint folder; refuse it if its feature settings differ from ``features``."""
        directory = Path(directory)
        loaded = load_model(directory, KIND, features=features, device=device)
        model, feats, config = loaded.module, loaded.features, loaded.config
        speakers, attribute = loaded.classes, loaded.attribute or SPEAKER_COLUMN
        return cls(model, speakers, feats, config, attribute)

    def save(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint folder (kind, architecture, features, speaker names, weights);
        ``extra`` adds fields such as provenance and metrics."""
        return save_checkpoint(directory, self.model.state_dict(), {
            "kind": KIND,
            "architecture": self.model.config.to_dict(),
            "parameters": self.model.num_parameters(),
            "features": self.features.to_dict(),
            "labels": {"attribute": self.attribute, "classes": list(self.speakers)},
            **(extra or {}),
        })

    @torch.no_grad()
    def embed(self, features: Tensor) -> Tensor:
        """(F, T) features of one whole utterance -> (E,) x-vector."""
        assert features.ndim == 2, f"expected (F, T), got {tuple(features.shape)}"
        return self.embed_batch([features])[0]

    @torch.no_grad()
    def embed_batch(self, utterances: Sequence[Tensor]) -> Tensor:
        """U whole utterances (F, T_u), padded together -> (U, E); same as one at a time."""
        self.model.eval()
        frames = [int(u.shape[1]) for u in utterances]
        x = utterances[0].new_zeros(len(utterances), utterances[0].shape[0], max(frames))
        for i, u in enumerate(utterances):
            x[i, :, : frames[i]] = u
        lengths = torch.tensor(frames, dtype=torch.long)
        return self.model.embed(x.to(self.device), lengths.to(self.device)).float().cpu()

    @torch.no_grad()
    def embed_store(self, store: FeatureStore,
                    transform: Callable[[Tensor], Tensor] | None = None,
                    batch_frames: int = 16000, progress: bool = False) -> Tensor:
        """x-vectors of every whole utterance of a store, optionally transformed first.

        Utterances are batched by similar length (at most ``batch_frames`` padded frames per
        batch); padding does not change the result.

        Returns:
            (N, E) in the store's row order.
        """
        order = sorted(range(len(store)), key=lambda i: store.frames[i])
        out = torch.empty(len(store), self.embed_dim)
        bar = tqdm(total=len(store), desc="x-vectors", unit="utt", disable=not progress,
                   leave=False)
        batch: list[int] = []
        for i in [*order, None]:
            longest = store.frames[batch[-1]] if batch else 0
            if batch and (i is None or (len(batch) + 1) * max(longest, store.frames[i])
                          > batch_frames):
                feats = [store.features(j) for j in batch]
                if transform is not None:
                    feats = [transform(f) for f in feats]
                out[batch] = self.embed_batch(feats)
                bar.update(len(batch))
                batch = []
            if i is not None:
                batch.append(i)
        bar.close()
        return out

    @torch.no_grad()
    def classify(self, embeddings: Tensor) -> Tensor:
        """(N, E) x-vectors -> (N, K) logits over the training classes."""
        self.model.eval()
        return self.model.classify(embeddings.to(self.device)).float().cpu()

    def score_classes(self, embeddings: Tensor, labels: Sequence[str]) -> dict[str, Any]:
        """Closed-set utterance accuracy and loss of the softmax head on N x-vectors (N, E)
        with their N class names; names the model never saw are an error."""
        known = {c: k for k, c in enumerate(self.speakers)}
        unseen = sorted(set(labels) - set(known))
        if unseen:
            raise ManifestError(f"'{self.attribute}' value(s) {', '.join(unseen[:8])} were not "
                                "in the training data of this x-vector classifier")
        target = torch.tensor([known[c] for c in labels])
        logits = self.classify(embeddings)
        return {"utterance_accuracy": float((logits.argmax(1) == target).float().mean()),
                "loss": float(F.cross_entropy(logits, target)), "utterances": len(labels),
                "predictions": [self.speakers[int(k)] for k in logits.argmax(1)]}


def embed_split(
    extractor: XVectorExtractor,
    manifest: Manifest | str | os.PathLike,
    split: str = "test",
    transform: Callable[[Tensor], Tensor] | None = None,
    cache_root: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[Tensor, list[str], list[str]]:
    """x-vectors of one split's utterances.

    Returns:
        embeddings (N, E), speakers (N,), ids (N,) in manifest order.
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    manifest.require_column(SPEAKER_COLUMN)
    part = manifest.split(split)
    cache = (FeatureCache(cache_root, extractor.features) if cache_root is not None
             else FeatureCache.for_manifest(manifest, extractor.features))
    store = FeatureStore(part, cache, progress=progress)
    emb = extractor.embed_store(store, transform=transform, progress=progress)
    return emb, store.manifest.column(SPEAKER_COLUMN), store.manifest.column("id")


def score_embeddings(extractor: XVectorExtractor, embeddings: Tensor, speakers: Sequence[str],
                     max_trials: int | None = 20000, seed: int = 0,
                     trials: tuple[Tensor, Tensor, Tensor] | None = None) -> dict[str, Any]:
    """Verification (cosine) and, when every speaker is a training speaker, closed-set
    identification of N embeddings (N, E).

    Returns:
        {"eer", "eer_threshold", "min_dcf", "trials", "target_trials", "utterances",
        "speaker_accuracy" (None when open-set), "loss" (None when open-set)}.
    """
    enroll, test, target = trials or make_trials(speakers, max_trials=max_trials, seed=seed)
    scores = cosine_scores(embeddings, embeddings, enroll, test)
    rate, threshold = eer(scores, target)
    result: dict[str, Any] = {
        "eer": rate, "eer_threshold": threshold, "min_dcf": min_dcf(scores, target),
        "trials": int(target.numel()), "target_trials": int(target.sum()),
        "utterances": len(speakers), "speaker_accuracy": None, "loss": None,
    }
    if extractor.attribute == SPEAKER_COLUMN and set(speakers) <= set(extractor.speakers):
        closed = extractor.score_classes(embeddings, speakers)
        result["speaker_accuracy"], result["loss"] = closed["utterance_accuracy"], closed["loss"]
    return result


def evaluate_xvector(
    model_dir: str | os.PathLike,
    manifest: Manifest | str | os.PathLike,
    split: str = "test",
    transform: Callable[[Tensor], Tensor] | None = None,
    max_trials: int | None = 20000,
    seed: int = 0,
    progress: bool = True,
    cache_root: str | os.PathLike | None = None,
    device: str = "auto",
    extractor: XVectorExtractor | None = None,
) -> dict[str, Any]:
    """EER, minDCF (and closed-set speaker accuracy when it applies) of a checkpoint on one
    split, optionally on transformed (protected) input; see :func:`score_embeddings`."""
    ext = extractor or XVectorExtractor.load(model_dir, device=resolve_device(device))
    emb, speakers, _ = embed_split(ext, manifest, split, transform, cache_root, progress)
    result = score_embeddings(ext, emb, speakers, max_trials=max_trials, seed=seed)
    result.update(split=split, model=str(model_dir))
    return result


def evaluate_xvector_classifier(
    model_dir: str | os.PathLike,
    manifest: Manifest | str | os.PathLike,
    split: str = "test",
    transform: Callable[[Tensor], Tensor] | None = None,
    cache_root: str | os.PathLike | None = None,
    extractor: XVectorExtractor | None = None,
) -> dict[str, Any]:
    """Closed-set utterance accuracy of an x-vector classifier of its attribute on one split,
    optionally on transformed (protected) input: {"utterance_accuracy", "loss", "utterances",
    "predictions", "ids", "attribute", "split", "model"}."""
    ext = extractor or XVectorExtractor.load(model_dir)
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    manifest.require_column(ext.attribute)
    cache = (FeatureCache(cache_root, ext.features) if cache_root is not None
             else FeatureCache.for_manifest(manifest, ext.features))
    store = FeatureStore(manifest.split(split), cache, progress=False)
    emb = ext.embed_store(store, transform=transform)
    result = ext.score_classes(emb, store.manifest.column(ext.attribute))
    result.update(ids=store.manifest.column("id"), attribute=ext.attribute, split=split,
                  model=str(model_dir))
    return result


