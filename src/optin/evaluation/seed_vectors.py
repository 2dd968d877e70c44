"""The seed's x-vector world: one extractor per seed, embeddings of any protected copy of the
data, and speaker verification for every spectrogram-world system.

:class:`SeedVectors` trains (or finds) the seed's x-vector extractor on the original training
split and embeds any protected copy of the data; :meth:`SeedVectors.verification` gives the
VoicePrivacy pairings (EER, minDCF) of a system, including the semi-informed attacker whose
extractor is retrained on protected training data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.evaluation.keys import key_of
from optin.metrics.verification import asv_pairings
from optin.training.data import FeatureStore
from optin.training.xvector import preset_config, train_xvector
from optin.training.xvector_extractor import XVectorExtractor


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
        return preset_config(self.preset, seed=self.seed, **self.options)

    def train(self, manifest: Manifest, transform: Callable[[Tensor], Tensor] | None = None,
              depends: str | None = None) -> Path:
        """Train (or find) an extractor on ``manifest``'s training split; returns its folder."""
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
                     fingerprint: str | None, answers: Tensor | None = None
                     ) -> dict[str, Any]:
        """VoicePrivacy pairings on the test split for protected inputs (``manifest`` with
        ``transform``); ``fingerprint`` None scores the original data only. ``answers``
        (N, K), T's posteriors on the protected test split, adds the output-only pairing."""
        speakers = self.manifest.split("test").column("speaker")
        original = self.original("test")
        protected = semi = None
        if fingerprint is not None:
            data = manifest or self.manifest
            protected = self.embed(data, "test", transform)
            self.log(f"seed {self.seed}: x-vector extractor retrained on protected data "
                     "(semi-informed)")
            semi_extractor = XVectorExtractor.load(self.train(data, transform, fingerprint))
            semi = self.embed(data, "test", transform, extractor=semi_extractor)
        return asv_pairings(original, protected, speakers, semi_informed=semi,
                            output_only=answers, seed=self.seed)
