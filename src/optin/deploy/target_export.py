"""A DeepSpeech2 classifier as an app would ship it: one TorchScript file, audio in, logits out.

``export_torchscript_classifier(dir, out)`` writes the classifier of ``optin train target`` as a
TorchScript module ``forward(wave (B, S)) -> (B, K)`` (16 kHz float audio; the project's
front-end inside; the mean of the frame logits over the whole input: no segments, no vote),
or ``forward(features (B, F, T)) -> (B, K)`` with ``input="spectrogram"``. Loaded with
``--target FILE`` (adapter ``logits``) it is a pretrained target like any app's model: the
experiments use it to check that everything a user gets for their own model works.

The file is checked before it is written: the traced module must equal the eager one on inputs
of other lengths and batch sizes than the one it was traced at.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from optin.audio.features import SpectrogramFrontEnd
from optin.files import write_bytes
from optin.training.classifier import Classifier

TRACE_SECONDS = 2.0
CHECK_SECONDS = (1.0, 3.3)
TOLERANCE = 1e-4


class WaveformClassifier(nn.Module):
    """(B, S) audio -> (B, K) logits of a DeepSpeech2 classifier over the whole input."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.frontend = SpectrogramFrontEnd(classifier.features)
        self.model = classifier.model.eval()

    def forward(self, wave: Tensor) -> Tensor:
        features = self.frontend(wave)[0]  # (B, F, T)
        return self.model(features)


class SpectrogramClassifier(nn.Module):
    """(B, F, T) normalised features -> (B, K) logits over the whole input."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.model = classifier.model.eval()

    def forward(self, features: Tensor) -> Tensor:
        return self.model(features)


def _example(classifier: Classifier, input: str, seconds: float, batch: int) -> Tensor:
    rate = classifier.features.sample_rate
    gen = torch.Generator().manual_seed(0)
    wave = 0.1 * torch.randn(batch, int(seconds * rate), generator=gen)
    if input == "waveform":
        return wave
    return SpectrogramFrontEnd(classifier.features)(wave)[0]


def export_torchscript_classifier(model_dir: str | os.PathLike, out: str | os.PathLike,
                                  input: str = "waveform") -> Path:
    """Write the classifier at ``model_dir`` as a TorchScript file ``out``; returns ``out``.

    Raises:
        ValueError: ``input`` is neither waveform nor spectrogram, or the traced module does
            not match the eager one at other lengths (nothing is written then).
    """
    if input not in ("waveform", "spectrogram"):
        raise ValueError(f"input '{input}': expected waveform or spectrogram")
    clf = Classifier.load(model_dir)
    module = (WaveformClassifier(clf) if input == "waveform" else SpectrogramClassifier(clf)).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # checked below instead
        traced = torch.jit.trace(module, _example(clf, input, TRACE_SECONDS, 1),
                                 check_trace=False)
        for seconds, batch in zip(CHECK_SECONDS, (2, 1), strict=True):
            x = _example(clf, input, seconds, batch)
            gap = float((traced(x) - module(x)).abs().max())
            if not gap <= TOLERANCE:
                raise ValueError(f"{model_dir}: the traced module differs from the model by "
                                 f"{gap:.2e} on {seconds} s (batch {batch})")
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return write_bytes(Path(out), buffer.getvalue())
