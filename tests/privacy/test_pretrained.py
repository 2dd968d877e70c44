"""Pretrained targets from files: Silero VAD from its wheel (TorchScript and ONNX), adapters,
gradients to the audio, and bad files refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch
from torch import nn

from optin.corpora.espeak import ESpeak
from optin.privacy.pretrained import (
    TargetModelError,
    TargetSpec,
    binary_logits,
    load_pretrained_target,
)


def _speech_then_silence() -> torch.Tensor:
    """(2, 32000): one second of eSpeak NG speech then near silence, and the reverse."""
    samples, rate = ESpeak().synthesize("Please put the blue folder on the table.",
                                        voice="en-us", rate=190)
    speech = np.asarray(samples, dtype=np.float32)
    speech = soxr.resample(speech, rate, 16000) if rate != 16000 else speech
    speech = np.pad(speech, (0, max(0, 16000 - len(speech))))[:16000]
    speech = torch.from_numpy(0.3 * speech / np.abs(speech).max())
    quiet = torch.from_numpy(1e-4 * np.random.default_rng(0).standard_normal(16000)
                             .astype(np.float32))
    return torch.stack([torch.cat([speech, quiet]), torch.cat([quiet, speech])])


@pytest.fixture(scope="module")
def silero():
    return load_pretrained_target("silero-vad")


def test_silero_vad_hears_speech_where_it_is(silero):
    logits = silero(_speech_then_silence())  # (2, 62, 2)
    assert logits.shape == (2, 62, 2)
    speech = logits.argmax(dim=-1).float()
    assert speech[0, :31].mean() > 0.6 and speech[0, 36:].mean() < 0.1
    assert speech[1, :31].mean() < 0.1 and speech[1, 36:].mean() > 0.6


def test_silero_onnx_through_our_converter_equals_torchscript(silero):
    onnx_twin = load_pretrained_target("silero-vad-onnx")
    wave = _speech_then_silence()
    assert torch.allclose(onnx_twin(wave), silero(wave), atol=1e-4)


def test_gradients_reach_the_audio(silero):
    wave = (_speech_then_silence() + 1e-5 * torch.randn(2, 32000)).requires_grad_()
    silero(wave)[..., 1].sum().backward()
    assert torch.isfinite(wave.grad).all() and wave.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in silero.parameters())


def test_adapters_shape_a_file_models_output(tmp_path):
    class FrameProb(nn.Module):
        def forward(self, x):
            return torch.sigmoid(x.unfold(1, 160, 160).mean(-1) * 100)

    path = tmp_path / "prob.pt"
    torch.jit.script(FrameProb()).save(str(path))
    target = load_pretrained_target(TargetSpec(str(path), "waveform", "frame-probability"))
    assert target.level == "frame"
    assert target(torch.randn(3, 1600)).shape == (3, 10, 2)
    wrong = load_pretrained_target(TargetSpec(str(path), "waveform", "logits"))
    assert wrong.level == "utterance"
    wrong.spec = TargetSpec(str(path), "waveform", "frame-logits")
    with pytest.raises(TargetModelError, match=r"frame-logits.*3-D"):
        wrong(torch.randn(3, 1600))
    p = torch.tensor([[0.25, 0.9]])
    assert torch.allclose(binary_logits(p).softmax(-1)[..., 1], p, atol=1e-6)


def test_bad_target_files_are_refused_by_name(tmp_path):
    with pytest.raises(TargetModelError, match=r"missing\.onnx.*not found"):
        load_pretrained_target(str(tmp_path / "missing.onnx"))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(TargetModelError, match=r"empty\.pt.*empty"):
        load_pretrained_target(str(empty))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01garbage that is no model at all" * 10)
    with pytest.raises(TargetModelError, match=r"garbage\.onnx"):
        load_pretrained_target(str(garbage))
    zipped = tmp_path / "notscript.pt"
    import zipfile

    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("hello.txt", "not TorchScript")
    with pytest.raises(TargetModelError, match=r"notscript\.pt.*TorchScript"):
        load_pretrained_target(str(zipped))
    with pytest.raises(TargetModelError, match="16000 Hz"):
        load_pretrained_target("silero-vad", sample_rate=8000)
    with pytest.raises(TargetModelError, match="adapter 'nope'"):
        TargetSpec("x.onnx", "waveform", "nope")  # type: ignore[arg-type]
    with pytest.raises(TargetModelError, match="reads a waveform"):
        TargetSpec("x.pt", "spectrogram", "silero-vad")
