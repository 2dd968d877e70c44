"""Using a trained obfuscator: ``Obfuscator.load(dir)(wave or spectrogram)``.

The obfuscator maps normalised features (F, T) to obfuscated features of the same shape, on a
whole utterance (fully convolutional). The obfuscated spectrogram keeps the original's mean and
std, so ``to_waveform`` turns it into audio (Griffin-Lim by default: no raw phase leaves the
device).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from optin.audio.features import (
    FeatureConfig,
    Spectrogram,
    SpectrogramFrontEnd,
    spectrogram,
    to_waveform,
)
from optin.audio.io import load_audio
from optin.checkpoint import CheckpointError, load_model, read_config
from optin.errors import ConfigError
from optin.models.causal_obfuscator import CausalObfuscator
from optin.models.cyclegan_vc2 import Generator
from optin.models.decision_template import DecisionTemplateProtector
from optin.privacy.pretrained import TargetSpec, file_sha256, load_pretrained_target

OBFUSCATOR_KIND = "cyclegan-vc2-obfuscator"
CAUSAL_OBFUSCATOR_KIND = "causal-obfuscator"
DEOBFUSCATOR_KIND = "cyclegan-vc2-deobfuscator"
TEMPLATE_KIND = "decision-template"

# A protector network: the paper's obfuscator (offline), the streaming-native one, or the
# decision-template limit (an output that depends on the input only through T's answer).
ObfuscatorNetwork = Generator | CausalObfuscator | DecisionTemplateProtector
PROTECTOR_KINDS = (OBFUSCATOR_KIND, CAUSAL_OBFUSCATOR_KIND, TEMPLATE_KIND)


def obfuscator_kind(network: ObfuscatorNetwork) -> str:
    """The checkpoint ``kind`` of an obfuscator network."""
    if isinstance(network, DecisionTemplateProtector):
        return TEMPLATE_KIND
    return CAUSAL_OBFUSCATOR_KIND if isinstance(network, CausalObfuscator) else OBFUSCATOR_KIND


def resolve_model_dir(directory: str | os.PathLike, part: str = "obfuscator") -> Path:
    """A run folder or the checkpoint folder itself -> the checkpoint folder."""
    directory = Path(directory)
    if (directory / part / "config.json").is_file():
        return directory / part
    return directory


def attach_deciders(protector: DecisionTemplateProtector, folder: Path, config: dict[str, Any],
                    features: FeatureConfig, device: str | torch.device = "cpu") -> None:
    """Load every decider a protector's checkpoint keeps as a file beside it (the app's own
    model), checked against the SHA-256 its sealed config gives, and attach it."""
    for entry in config.get("attached", []):
        try:
            path = folder / str(entry["file"])
            sha, task = str(entry["sha256"]), int(entry["task"])
            spec = TargetSpec(str(path), entry["input"], entry["adapter"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{folder / 'config.json'}: bad 'attached' entry ({err})"
                                  ) from err
        if Path(entry["file"]).name != entry["file"] or not path.is_file() or path.is_symlink():
            raise CheckpointError(f"{path}: the decider file this protector needs is missing")
        if file_sha256(path) != sha:
            raise CheckpointError(f"{path}: the decider file does not match the SHA-256 in "
                                  f"{folder / 'config.json'}")
        protector.attach(task, load_pretrained_target(spec, features=features).to(device))


class Obfuscator:
    """A trained obfuscator F_sigma with the feature settings it was trained on."""

    def __init__(self, network: ObfuscatorNetwork, features: FeatureConfig,
                 config: dict[str, Any] | None = None) -> None:
        self.network = network.eval()
        self.features = features
        self.config = config or {}
        self.frontend = SpectrogramFrontEnd(features)

    @property
    def streaming_native(self) -> bool:
        """Whether the network is causal (:class:`CausalObfuscator`): a stream computes each
        frame once and equals offline obfuscation."""
        return isinstance(self.network, CausalObfuscator)

    @property
    def whole_utterance(self) -> bool:
        """Whether the protector decides once per utterance (the decision-template limit): it
        protects files and corpora, not live streams or exported graphs."""
        return isinstance(self.network, DecisionTemplateProtector)

    def refuse_whole_utterance(self, what: str) -> None:
        """A ConfigError naming ``what`` (e.g. streaming) for a whole-utterance protector."""
        if self.whole_utterance:
            raise ConfigError(f"{what}: this is a decision-template protector, which decides "
                              "once per whole utterance; use it on files (optin obfuscate) or "
                              "in experiments")

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @classmethod
    def load(cls, directory: str | os.PathLike, features: FeatureConfig | None = None,
             device: str | torch.device = "cpu") -> Obfuscator:
        """Load from a training run folder or its ``obfuscator/`` checkpoint folder."""
        path = resolve_model_dir(directory)
        kind = read_config(path).get("kind")
        kind = kind if kind in PROTECTOR_KINDS else OBFUSCATOR_KIND
        loaded = load_model(path, kind, features=features, device=device)
        if loaded.features is None:
            raise CheckpointError(f"{path / 'config.json'}: bad or missing field ('features')")
        if isinstance(loaded.module, DecisionTemplateProtector):
            attach_deciders(loaded.module, path, loaded.config, loaded.features, device)
        return cls(loaded.module, loaded.features, loaded.config)

    def weights_sha256(self) -> str:
        """SHA-256 of the network's tensors (names, dtypes, shapes, values): which model this
        is, whether it was loaded from a folder or built in memory."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.network.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    @torch.no_grad()
    def obfuscate_features(self, features: Tensor) -> Tensor:
        """(F, T) or (B, F, T) normalised features -> obfuscated, same shape, on the input's
        device and dtype (a protector whose deciders read audio refuses: use :meth:`protect`)."""
        if isinstance(self.network, DecisionTemplateProtector) and self.network.needs_wave:
            raise ConfigError("this protector's deciders read audio: obfuscate waveforms or "
                              "files, not features")
        single = features.ndim == 2
        x = features[None] if single else features
        assert x.ndim == 3, f"expected (F, T) or (B, F, T), got {tuple(features.shape)}"
        out = self.network(x.to(self.device, torch.float32)).to(features.device, features.dtype)
        return out[0] if single else out

    def __call__(self, item: Spectrogram | np.ndarray | Tensor) -> Spectrogram:
        """Obfuscate a waveform (N,) at the feature sample rate, or a Spectrogram."""
        if isinstance(self.network, DecisionTemplateProtector):
            return self.protect(item)[0]
        spec = item if isinstance(item, Spectrogram) else self.spectrogram(item)
        out = self.obfuscate_features(spec.features)
        return Spectrogram(features=out, mean=spec.mean, std=spec.std,
                           n_samples=spec.n_samples, phase=spec.phase)

    @torch.no_grad()
    def protect(self, item: Spectrogram | np.ndarray | Tensor
                ) -> tuple[Spectrogram, np.ndarray | None]:
        """A decision-template protector on a waveform (N,) or a Spectrogram: the protected
        spectrogram, and its audio when the protector renders audio (waveform domain).

        The limit lets nothing of the input through but the answers and the quantised length:
        a fixed level, no input phase, the output's own length."""
        network = self.network
        assert isinstance(network, DecisionTemplateProtector)
        if isinstance(item, Spectrogram):
            if network.needs_wave:
                raise ConfigError("this protector's deciders read audio: give it the waveform, "
                                  "not a spectrogram")
            spec, wave = item, None
        else:
            wave = torch.as_tensor(np.asarray(item, dtype=np.float32) if not isinstance(
                item, Tensor) else item.float())
            spec = self.spectrogram(wave)
        x = spec.features[None].to(self.device, torch.float32)
        heard = wave[None].to(self.device) if wave is not None and network.needs_wave else None
        out = network.protect(x, None, heard)[0].cpu()
        if network.config.domain == "waveform":
            audio = out.numpy().astype(np.float32)
            return spectrogram(audio, self.features, return_phase=True,
                               frontend=self.frontend), audio
        config = network.config
        return Spectrogram(features=out, mean=config.level_mean, std=config.level_std,
                           n_samples=(out.shape[-1] - 1) * self.features.hop_length), None

    def spectrogram(self, wave: np.ndarray | Tensor) -> Spectrogram:
        """Features of a waveform with this obfuscator's settings."""
        return spectrogram(wave, self.features, frontend=self.frontend)

    def obfuscate_file(self, path: str | os.PathLike, n_iter: int = 64
                       ) -> tuple[Spectrogram, np.ndarray]:
        """Load an audio file; return the obfuscated spectrogram and its audio (Griffin-Lim)."""
        wave = load_audio(path, sample_rate=self.features.sample_rate,
                          normalize=self.features.volume, target_dbfs=self.features.target_dbfs)
        if isinstance(self.network, DecisionTemplateProtector):
            obf, audio = self.protect(wave)
            return obf, audio if audio is not None else self.to_waveform(obf, n_iter=n_iter)
        obf = self(wave)
        return obf, self.to_waveform(obf, n_iter=n_iter)

    def to_waveform(self, spec: Spectrogram, n_iter: int = 64, with_phase: bool = False
                    ) -> np.ndarray:
        """Audio of an (obfuscated) spectrogram; Griffin-Lim unless ``with_phase``."""
        return to_waveform(spec.features, spec.mean, spec.std,
                           phase=spec.phase if with_phase else None, config=self.features,
                           n_samples=spec.n_samples, n_iter=n_iter)
