"""The app's own pretrained model as the target T: loaded from a file, never modified.

A target file is a TorchScript module (``torch.jit.save``: ``.pt``, ``.jit``, ``.ts``...) or an ONNX
model (``.onnx``, run inside PyTorch by :class:`optin.models.onnx_graph.OnnxGraphModule`, so that
gradients reach its input). The name ``silero-vad`` loads the Silero VAD TorchScript model shipped
inside the ``silero-vad`` wheel (offline); ``silero-vad-onnx`` its ONNX twin.

TorchScript archives are read with ``torch.jit.load``, which restores TorchScript code and tensors
only (no arbitrary Python objects); optin never calls plain ``torch.load``.

Budgets, checked from the file system before a byte of the model is read: a target may hold at
most :data:`MAX_TARGET_BYTES` (512 MiB): the file itself, the sizes a TorchScript archive's zip
directory declares for its entries (a compressed entry can claim far more than the file), and
for ONNX every external-data file it names, measured with ``os.stat`` (and refused when its
location leaves the model's folder, is not a regular file, or the claimed range passes its
end) before ``onnx.load`` reads them. Loading and probing then run in a child process with a
deadline (:mod:`optin.privacy.probe_process`), so that a model that never returns, crashes
the interpreter or asks for all the memory there is ends in one line, and Ctrl-C stops it.

An *adapter* turns the model's output into class scores (logits):

* ``logits``: ``model(x) -> (B, K)`` per-utterance logits.
* ``frame-logits``: ``model(x) -> (B, N, K)`` per-frame logits.
* ``frame-probability``: ``model(x) -> (B, N)`` probability of a binary decision per frame
  (for example speech), turned into (B, N, 2) logits ``[log(1 - p), log(p)]``.
* ``silero-vad``: Silero VAD's streaming interface run over the whole input: 512-sample chunks at
  16 kHz, each with the previous 64 samples as context and the LSTM state carried from chunk to
  chunk (as ``silero_vad``'s own wrappers do), giving the speech probability per 32 ms chunk,
  N = samples // 512, as (B, N, 2) logits.

Every target is probed once at load (:mod:`optin.privacy.target_probe`): a file that cannot
serve (two inputs, a dict or integer output, NaN, no gradient to the input, a layout it rejects,
a tensor over the memory budget) is refused in one line naming it, before anything is written.

``input`` says what the model reads: ``waveform`` (B, S) float audio at the feature sample rate
(the obfuscator's output reaches it through a differentiable inverse STFT), or ``spectrogram``
(B, F, T) normalised features.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import onnx
import torch
from onnx.external_data_helper import ExternalDataInfo, uses_external_data
from torch import Tensor, nn

from optin.audio.features import FeatureConfig
from optin.files import file_problem
from optin.models.onnx_graph import OnnxGraphModule, UnsupportedOnnxModel
from optin.models.onnx_limits import format_bytes
from optin.privacy.probe_process import in_child
from optin.privacy.target_probe import TargetModelError, checked_output, one_line, probe_target

Adapter = Literal["logits", "frame-logits", "frame-probability", "silero-vad"]
ADAPTERS: tuple[str, ...] = ("logits", "frame-logits", "frame-probability", "silero-vad")
TargetInput = Literal["waveform", "spectrogram"]
BUILTIN_TARGETS = {"silero-vad": "silero_vad.jit", "silero-vad-onnx": "silero_vad_16k_op15.onnx"}
SILERO_RATE = 16000
SILERO_CHUNK = 512  # samples per decision at 16 kHz (32 ms)
SILERO_CONTEXT = 64  # samples of the previous chunk each call sees
SILERO_STATE = (2, 128)  # (h/c, hidden) per batch item
PROBABILITY_FLOOR = 1e-6
MAX_TARGET_BYTES = 512 << 20  # a target file with what it declares or names (see above)


@dataclass(frozen=True)
class TargetSpec:
    """Where a pretrained target comes from and how to read its output.

    ``source``: a file path, or a built-in name (``silero-vad``, ``silero-vad-onnx``).
    """

    source: str
    input: TargetInput = "waveform"
    adapter: Adapter = "logits"

    def __post_init__(self) -> None:
        if self.adapter not in ADAPTERS:
            raise TargetModelError(f"target adapter '{self.adapter}': expected one of "
                                   f"{', '.join(ADAPTERS)}")
        if self.input not in ("waveform", "spectrogram"):
            raise TargetModelError(f"target input '{self.input}': expected waveform or "
                                   "spectrogram")
        if self.adapter == "silero-vad" and self.input != "waveform":
            raise TargetModelError("the silero-vad adapter reads a waveform (--target-input "
                                   "waveform)")

    @classmethod
    def builtin(cls, name: str) -> TargetSpec:
        """The spec of a built-in name (its adapter and input are fixed)."""
        return cls(name, "waveform", "silero-vad")


def resolve_source(source: str) -> Path:
    """The file behind a target source: a built-in name or an existing path."""
    if source in BUILTIN_TARGETS:
        try:
            files = resources.files("silero_vad.data")
        except ModuleNotFoundError as err:
            raise TargetModelError(f"target '{source}' needs the silero-vad package "
                                   "(pip install silero-vad)") from err
        return Path(str(files.joinpath(BUILTIN_TARGETS[source])))
    path = Path(source)
    problem = file_problem(path)
    if problem == "does not exist":
        raise TargetModelError(f"{path}: target model file not found (a TorchScript or ONNX "
                               f"file, or one of {', '.join(BUILTIN_TARGETS)})")
    if problem:
        raise TargetModelError(f"{path}: {problem}; a target is a TorchScript or ONNX file")
    return path


def _over_budget(path: Path, what: str, size: int) -> TargetModelError:
    return TargetModelError(f"{path}: {what} {format_bytes(size)}, over the "
                            f"{format_bytes(MAX_TARGET_BYTES)} budget of a target model")


def check_archive(path: Path) -> None:
    """Refuse a TorchScript archive whose file or declared contents exceed the budget."""
    size = path.stat().st_size
    if size > MAX_TARGET_BYTES:
        raise _over_budget(path, "the file holds", size)
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise TargetModelError(f"{path}: not a loadable TorchScript module (a damaged zip "
                               f"archive: {one_line(err)})") from err
    if declared > MAX_TARGET_BYTES:
        raise _over_budget(path, "its archive declares", declared)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def external_bytes(proto: onnx.ModelProto, path: Path) -> int:
    """The bytes the external data of an ONNX model (read without it) claims, from the file
    system; refused when a location leaves the model's folder or a range passes a file's end."""
    base = path.parent.resolve()
    total = 0
    for tensor in _tensors(proto.graph):
        if not uses_external_data(tensor):
            continue
        try:
            info = ExternalDataInfo(tensor)
        except ValueError as err:
            raise TargetModelError(f"{path}: tensor {tensor.name!r}: {err}") from err
        data = (base / info.location).resolve()
        if not info.location or not data.is_relative_to(base):
            raise TargetModelError(f"{path}: tensor {tensor.name!r} names external data "
                                   f"{info.location!r} outside the model's folder")
        problem = file_problem(data)
        if problem:
            raise TargetModelError(f"{path}: external data {info.location!r} of tensor "
                                   f"{tensor.name!r} {problem}")
        size, offset = data.stat().st_size, info.offset or 0
        length = size - offset if info.length is None else info.length
        if offset + length > size:
            raise TargetModelError(f"{path}: tensor {tensor.name!r} claims bytes {offset} to "
                                   f"{offset + length} of {info.location!r}, which holds {size}")
        total += length
    return total


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_module(path: Path) -> nn.Module:
    """A TorchScript or ONNX file as a frozen torch module (eval mode, no parameter grads)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise TargetModelError(f"{path}: the target model file is empty")
    if head.startswith(b"PK"):  # a TorchScript archive is a zip file
        check_archive(path)
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:
            raise TargetModelError(f"{path}: not a loadable TorchScript module "
                                   f"({one_line(err)})") from err
    else:
        module = _load_onnx(path)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _load_onnx(path: Path) -> nn.Module:
    size = path.stat().st_size
    if size > MAX_TARGET_BYTES:
        raise _over_budget(path, "the file holds", size)
    try:
        proto = onnx.load(str(path), load_external_data=False)
        external = external_bytes(proto, path)
        if size + external > MAX_TARGET_BYTES:
            raise _over_budget(path, "the model and its external data hold", size + external)
        if external:
            onnx.load_external_data_for_model(proto, str(path.parent))
    except TargetModelError:
        raise
    except Exception as err:
        raise TargetModelError(f"{path}: neither a TorchScript archive nor a readable ONNX "
                               f"model ({one_line(err)})") from err
    try:
        return OnnxGraphModule(proto)
    except UnsupportedOnnxModel as err:
        raise TargetModelError(f"{path}: {err}") from err
    except Exception as err:  # a malformed graph: attributes, tensors, branches
        raise TargetModelError(f"{path}: not a usable ONNX model ({one_line(err)})") from err


class PretrainedTarget(nn.Module):
    """A frozen pretrained model with its adapter: input -> logits.

    ``forward(x)``: x (B, S) waveform or (B, F, T) features -> (B, K) utterance logits, or
    (B, N, K) frame logits (``level == "frame"``).
    """

    def __init__(self, module: nn.Module, spec: TargetSpec, sample_rate: int,
                 name: str, sha256: str) -> None:
        super().__init__()
        self.module = module
        self.spec = spec
        self.name = name
        self.label = spec.source  # what messages name: the file as given, or the built-in
        self.sha256 = sha256
        self.level = "utterance" if spec.adapter == "logits" else "frame"
        if spec.adapter == "silero-vad" and sample_rate != SILERO_RATE:
            raise TargetModelError(f"{name}: Silero VAD runs at {SILERO_RATE} Hz; the features "
                                   f"are at {sample_rate} Hz")
        self._silero = _silero_step(module, name) if spec.adapter == "silero-vad" else None

    @property
    def frame_samples(self) -> int | None:
        """Samples per output frame of a waveform frame target, when fixed (Silero: 512)."""
        return SILERO_CHUNK if self._silero is not None else None

    def forward(self, x: Tensor) -> Tensor:
        return self.adapt(self.raw_output(x))

    def raw_output(self, x: Tensor) -> Tensor:
        """The model's own answer, checked for type, rank and batch: (B, K), (B, N, K), or
        (B, N) probabilities (``frame-probability``, ``silero-vad``)."""
        if self._silero is not None:
            return silero_probabilities(self._silero, x)
        return checked_output(self.module(x), x.shape[0], self.spec.adapter, self.label)

    def adapt(self, raw: Tensor) -> Tensor:
        """:meth:`raw_output` -> logits, (B, K) or (B, N, K)."""
        return binary_logits(raw) if self.spec.adapter in ("frame-probability",
                                                           "silero-vad") else raw


def binary_logits(probability: Tensor) -> Tensor:
    """(B, N) probabilities of class 1 -> (B, N, 2) logits [log(1 - p), log(p)]."""
    p = probability.clamp(PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return torch.stack([torch.log1p(-p), torch.log(p)], dim=-1)


def _silero_step(module: nn.Module, name: str):
    """The chunk function of a Silero VAD model: (x (B, 576), state (2, B, 128)) ->
    (probability (B, 1), state)."""
    core = getattr(module, "_model", None)
    if core is not None:  # the TorchScript wrapper: its 16 kHz model is stateless
        return lambda x, state: core(x, state)
    names = list(getattr(module, "input_names", []))
    if names[:3] == ["input", "state", "sr"]:  # the ONNX export, converted
        rate = torch.tensor(SILERO_RATE, dtype=torch.int64)
        return lambda x, state: module(x, state, rate)[:2]
    raise TargetModelError(f"{name}: the silero-vad adapter needs Silero VAD's TorchScript "
                           "model (with its _model) or its ONNX model (inputs input, state, sr)")


def silero_probabilities(step, wave: Tensor) -> Tensor:
    """(B, S) waveform at 16 kHz -> (B, S // 512) speech probabilities, differentiable."""
    batch, samples = wave.shape
    chunks = samples // SILERO_CHUNK
    if chunks == 0:
        raise TargetModelError(f"Silero VAD needs at least {SILERO_CHUNK} samples; got "
                               f"{samples}")
    context = wave.new_zeros(batch, SILERO_CONTEXT)
    state = wave.new_zeros(SILERO_STATE[0], batch, SILERO_STATE[1])
    out = []
    for i in range(chunks):
        chunk = wave[:, i * SILERO_CHUNK:(i + 1) * SILERO_CHUNK]
        prob, state = step(torch.cat([context, chunk], dim=1), state)
        context = chunk[:, -SILERO_CONTEXT:]
        out.append(prob.reshape(batch))
    return torch.stack(out, dim=1)


def load_pretrained_target(spec: TargetSpec | str, sample_rate: int | None = None,
                           features: FeatureConfig | None = None) -> PretrainedTarget:
    """Load a pretrained target (a built-in name or a file) with its adapter, and probe it once
    on a short input of its kind (:mod:`optin.privacy.target_probe`).

    ``features``: the feature settings it will be fed at (the probe's sample rate and spectrogram
    shape); default :class:`FeatureConfig` at ``sample_rate`` (16 kHz).
    """
    if isinstance(spec, str):
        spec = TargetSpec.builtin(spec) if spec in BUILTIN_TARGETS else TargetSpec(spec)
    if features is None:
        features = FeatureConfig(sample_rate=sample_rate or SILERO_RATE)
    elif sample_rate is not None and sample_rate != features.sample_rate:
        raise ValueError(f"sample_rate {sample_rate} != features.sample_rate "
                         f"{features.sample_rate}")
    path = resolve_source(spec.source)
    name = spec.source if spec.source in BUILTIN_TARGETS else path.name
    sha = file_sha256(path)

    def loaded() -> PretrainedTarget:
        return PretrainedTarget(load_module(path), spec, features.sample_rate, name, sha)

    key = (sha, spec, features.fingerprint())
    if key not in _PROBED:  # once per file, settings and process, in a child with a deadline
        in_child(lambda: probe_target(loaded(), features), spec.source)
        _PROBED.add(key)
    return loaded()


_PROBED: set[tuple[str, TargetSpec, str]] = set()
