"""Issue 31, model files that hang or exhaust memory: checkpoints whose config.json was edited
and resealed, target files that never return, that are huge or that name huge external data.
Each is refused in one line naming the file, quickly, before the memory it claims is allocated."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tests.cli_checks import refused

from optin.audio.features import FeatureConfig
from optin.checkpoint import (
    CONFIG_HASHES,
    CheckpointError,
    load_model,
    save_checkpoint,
    seal_config,
    sha256_file,
)
from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config
from optin.privacy import pretrained, probe_process
from optin.privacy.pretrained import TargetSpec, load_pretrained_target
from optin.privacy.target_probe import TargetModelError

pytestmark = pytest.mark.usefixtures("one_thread")
KIND = "deepspeech2-classifier"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def classifier(tmp_path) -> Path:
    arch = DeepSpeech2Config(n_classes=2, conv_channels=4, hidden_size=8, rnn_layers=1)
    folder = tmp_path / "T"
    save_checkpoint(folder, DeepSpeech2Classifier(arch).state_dict(), {
        "kind": KIND, "architecture": arch.to_dict(), "features": FeatureConfig().to_dict(),
        "labels": {"attribute": "gender", "classes": ["f", "m"]}})
    return folder


def resealed(folder: Path, edit, text: str | None = None) -> Path:
    """``folder`` with its config edited and sealed again, as a forger would."""
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    config = seal_config({k: v for k, v in config.items() if k != CONFIG_HASHES})
    (folder / "config.json").write_text(text if text is not None else json.dumps(config))
    return folder


@pytest.mark.parametrize(("edit", "message"), [
    ({"hidden_size": float("nan")}, "the architecture cannot be built"),
    ({"hidden_size": 10**12}, "the architecture cannot be built"),
    ({"hidden_size": 16000, "rnn_layers": 3}, "weights do not fit the architecture"),
    ({"conv_channels": 5}, "weights do not fit the architecture"),
])
def test_an_architecture_edited_and_resealed_is_refused_before_it_is_built(classifier, edit,
                                                                           message):
    """hidden_size 16000 with 3 layers once allocated 24.3 GB before the weights were
    compared; now the module is built on the meta device first."""
    resealed(classifier, lambda c: c["architecture"].update(edit))
    start = peak_mib()
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(classifier, KIND)
    assert str(classifier) in str(info.value) and "\n" not in str(info.value)
    assert peak_mib() - start < 200


def test_a_config_nested_too_deeply_is_refused(classifier):
    body = json.dumps(seal_config(json.loads((classifier / "config.json").read_text())))
    resealed(classifier, lambda c: None, body[:-1] + ', "x": ' + "[" * 100_000
             + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_model(classifier, KIND)


def test_an_oversized_config_is_refused_before_it_is_read(classifier, monkeypatch):
    monkeypatch.setattr("optin.checkpoint.CONFIG_BUDGET", 100)
    with pytest.raises(CheckpointError, match=r"over the 100 a checkpoint's config\.json may"):
        load_model(classifier, KIND)


@pytest.mark.parametrize("dtype", [torch.int32, torch.float16, torch.float64])
def test_weights_of_another_dtype_are_refused(classifier, dtype, work, capsys):
    """int32 weights once loaded silently into a chance-level model (exit 0)."""
    weights = classifier / "model.safetensors"
    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()
    state = {k: v.to(dtype) if v.is_floating_point() else v
             for k, v in load_file(str(weights)).items()}
    save_file(state, str(weights), metadata=metadata)
    resealed(classifier, lambda c: c.update(weights_sha256=sha256_file(weights)))
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(CheckpointError, match=f"weights stored as .* {name}; the architecture "
                                              "holds float32"):
        load_model(classifier, KIND)
    refused(["eval", "--model", str(classifier), "--manifest", "corpus/manifest.csv"], capsys,
            str(classifier), name)


class Forever(torch.nn.Module):
    """A target whose forward never returns (inside TorchScript, where no signal reaches)."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        n = wave.new_zeros(1)
        while bool(n[0] >= 0):
            n = n + 1
        return wave[:, :2]


def test_a_target_that_never_returns_is_stopped_at_the_deadline(tmp_path, monkeypatch):
    path = tmp_path / "forever.pt"
    torch.jit.script(Forever()).save(str(path))
    monkeypatch.setattr(probe_process, "PROBE_TIMEOUT_SECONDS", 2.0)
    start = time.monotonic()
    with pytest.raises(TargetModelError, match=r"forever\.pt.* took over 2 s"):
        load_pretrained_target(TargetSpec(str(path), input="waveform"))
    assert time.monotonic() - start < 15


class Scale(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(64, 2))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return wave[:, :64] @ self.weight


def test_a_target_file_over_the_budget_is_refused_before_loading(tmp_path, monkeypatch):
    path = tmp_path / "big.pt"
    torch.jit.script(Scale()).save(str(path))
    monkeypatch.setattr(pretrained, "MAX_TARGET_BYTES", 1024)
    with pytest.raises(TargetModelError, match=r"big\.pt: .*budget of a target model"):
        load_pretrained_target(TargetSpec(str(path), input="waveform"))


def test_onnx_external_data_is_sized_from_the_file_system_before_loading(tmp_path):
    """A 210-byte ONNX file naming a 3 GiB (sparse) file beside it was read whole (37 s,
    6.5 GB) before the refusal; its size is now read from the file system."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3 << 28])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(3 << 30))):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [weight])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with open(tmp_path / "w.bin", "wb") as sparse:
        sparse.truncate(3 << 30)
    start, before = time.monotonic(), peak_mib()
    with pytest.raises(TargetModelError, match=r"tiny\.onnx: .*external data"):
        load_pretrained_target(TargetSpec(str(path), input="waveform"))
    assert time.monotonic() - start < 10 and peak_mib() - before < 200
