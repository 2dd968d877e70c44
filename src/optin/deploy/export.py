"""ONNX export of a trained obfuscator, float32 or int8: ``export_onnx(model_dir, "obf.onnx")``.

The exported file is one of two graphs (see :mod:`optin.deploy.graphs`), both with a dynamic
batch axis ``batch`` and a dynamic time axis:

* ``include_frontend=True`` (default), the **wave graph**: input ``wave`` ``(batch, samples)``
  float32 at the feature sample rate (16 kHz), volume-normalised like ``load_audio`` (RMS to
  -25 dBFS by default), more than ``n_fft / 2`` samples; outputs ``obfuscated``
  ``(batch, 161, frames)`` with ``frames = 1 + samples // 160``, and ``mean``, ``std``
  ``(batch,)``: ``expm1(obfuscated * std + mean)`` is the obfuscated STFT magnitude.
* ``include_frontend=False``, the **features graph**: input ``features`` ``(batch, 161,
  frames)``, the normalised log1p-magnitude spectrogram exactly as
  :class:`~optin.audio.features.SpectrogramFrontEnd` makes it (per-utterance mean/std
  normalised); output ``obfuscated``, same shape.

Each file carries what a user needs in its ``metadata_props`` (``optin.*`` keys: the graph,
its input and outputs in words, the feature settings as JSON with their fingerprint, the
architecture, the source checkpoint's weights hash and target, the quantization) and a
``doc_string``; :func:`read_metadata` returns them.

int8 (``int8=True``) is ONNX Runtime **static** quantization in QDQ format, calibrated on
features from a manifest (:mod:`optin.deploy.quantize`): per-channel int8 weights and uint8
activations of the heavy 2-D Conv layers (or of all), run as QLinearConv: 2x faster than
float32 at 1 thread (6.4 vs 12.7 ms per second of audio on an AMD EPYC core). Dynamic
quantization was measured too and is not offered: ONNX Runtime's dynamic path turns the
convolutions into ConvInteger, which ran 3.6x *slower* than float32 on this network. In the
wave graph only the obfuscator is quantized; the front-end's DFT stays float32.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.compose
import torch
from torch import nn

from optin import __version__
from optin.audio.features import FeatureConfig
from optin.corpora.manifest import Manifest
from optin.deploy.graphs import FeatureGraph, FrontEndGraph
from optin.deploy.quantize import calibration_inputs, quantization_text, quantize_features_model
from optin.deploy.runtime import OnnxObfuscator
from optin.errors import ConfigError
from optin.files import write_bytes
from optin.models.cyclegan_vc2 import Generator
from optin.privacy.obfuscator import OBFUSCATOR_KIND, Obfuscator

WAVE_OUTPUTS = ("obfuscated", "mean", "std")
META_PREFIX = "optin."
# Example sizes the graphs are traced at; batch and time stay dynamic (not 1: torch.export
# specialises axes of size 1).
EXAMPLE_BATCH = 2
EXAMPLE_FRAMES = 101

GRAPH_TEXT = {
    "wave": (
        "input 'wave' (batch, samples) float32 at {sample_rate} Hz, volume-normalised "
        "({volume} to {target_dbfs} dBFS), more than {half} samples, all items the same "
        "length",
        "'obfuscated' (batch, {n_freq}, frames = 1 + samples // {hop_length}) normalised "
        "log1p-magnitude spectrogram; 'mean', 'std' (batch,) its normalisation: "
        "expm1(obfuscated * std + mean) is the STFT magnitude",
    ),
    "features": (
        "input 'features' (batch, {n_freq}, frames) float32: log1p |STFT| (n_fft {n_fft}, "
        "hop {hop_length}, {window} window, centred, reflect padding) of the volume-"
        "normalised wave, normalised per utterance to mean 0 and std 1, as made by "
        "optin.audio.features.SpectrogramFrontEnd",
        "'obfuscated' (batch, {n_freq}, frames), the same normalisation as the input",
    ),
}


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        graph: "wave" or "features".
        inputs, outputs: name -> shape (ints and axis names).
        int8: quantized or not; ``quantization`` describes how, ``calibration`` on what.
        opset: the ONNX opset of the default domain.
        bytes: file size.
        parity: ONNX Runtime against the PyTorch model on two batch sizes and lengths:
            ``max_rel_error`` (max |onnx - torch| / max |torch| over the outputs) and the
            ``shapes`` checked.
        metadata: the ``metadata_props`` stored in the file.
    """

    path: Path
    graph: str
    inputs: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    int8: bool
    quantization: str
    calibration: str | None
    opset: int
    bytes: int
    parity: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}

    def summary(self) -> str:
        """A few lines for people."""
        def shapes(items: dict[str, list[Any]]) -> str:
            return ", ".join(f"{k} ({', '.join(map(str, v))})" for k, v in items.items())

        lines = [f"{self.path}: {self.graph} graph, {self.bytes / 1e6:.2f} MB, opset "
                 f"{self.opset}, {self.quantization}",
                 f"  inputs:  {shapes(self.inputs)}", f"  outputs: {shapes(self.outputs)}"]
        if self.calibration:
            lines.append(f"  calibrated on {self.calibration}")
        if self.parity:
            lines.append(f"  ONNX Runtime vs PyTorch float32: max relative error "
                         f"{self.parity['max_rel_error']:.2e} at {self.parity['shapes']}")
        return "\n".join(lines)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's advisory warnings and logs (restored afterwards)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def to_onnx(module: nn.Module, example: torch.Tensor, input_name: str,
            output_names: Sequence[str], dynamic: dict[int, Any]) -> onnx.ModelProto:
    """Export ``module(example)`` with ``torch.onnx.export(dynamo=True)``; returns the model.

    ``dynamic`` maps axes of the input to ``torch.export.Dim`` objects.
    """
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module.eval(), (example,), dynamo=True, verbose=False, input_names=[input_name],
            output_names=list(output_names), dynamic_shapes={input_name: dynamic},
        )
    return program.model_proto


def feature_graph_model(generator: Generator) -> onnx.ModelProto:
    """The features graph: ``features (batch, F, frames)`` -> ``obfuscated``."""
    graph = FeatureGraph(generator).cpu()  # a float32 eval copy, output conv folded
    example = torch.randn(EXAMPLE_BATCH, generator.config.n_freq, EXAMPLE_FRAMES)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("frames")}
    return to_onnx(graph, example, "features", ["obfuscated"], dims)


def frontend_model(config: FeatureConfig) -> onnx.ModelProto:
    """The front-end alone: ``wave (batch, samples)`` -> ``features``, ``mean``, ``std``."""
    example = torch.randn(EXAMPLE_BATCH, (EXAMPLE_FRAMES - 1) * config.hop_length)
    dims = {0: torch.export.Dim("batch"),
            1: torch.export.Dim("samples", min=config.n_fft // 2 + 1)}
    return to_onnx(FrontEndGraph(config), example, "wave", ["features", "mean", "std"], dims)


def attach_frontend(frontend: onnx.ModelProto, features: onnx.ModelProto) -> onnx.ModelProto:
    """Join the front-end and a features graph into the wave graph (outputs obfuscated, mean,
    std). Internal names get the prefixes ``frontend/`` and ``obfuscator/``."""
    keep = {"wave", "features", "mean", "std", "obfuscated"}

    def prefixed(model: onnx.ModelProto, prefix: str) -> onnx.ModelProto:
        model = onnx.compose.add_prefix(model, prefix)
        for value in [*model.graph.input, *model.graph.output]:
            value.name = value.name[len(prefix):]  # the public names stay as they are
        renames = {prefix + name: name for name in keep}
        for node in model.graph.node:
            node.input[:] = [renames.get(n, n) for n in node.input]
            node.output[:] = [renames.get(n, n) for n in node.output]
        return model

    merged = onnx.compose.merge_models(prefixed(frontend, "frontend/"),
                                       prefixed(features, "obfuscator/"),
                                       io_map=[("features", "features")])
    order = {name: i for i, name in enumerate(WAVE_OUTPUTS)}
    outputs = sorted(merged.graph.output, key=lambda v: order[v.name])
    del merged.graph.output[:]
    merged.graph.output.extend(outputs)
    return merged


def _shape(value: onnx.ValueInfoProto) -> list[Any]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def build_metadata(obfuscator: Obfuscator, graph: str, quantization: str,
                   source: str | None) -> dict[str, str]:
    """The ``optin.*`` metadata_props of an exported file."""
    feats = obfuscator.features
    words = {**feats.to_dict(), "n_freq": feats.n_freq, "half": feats.n_fft // 2}
    inputs, outputs = (text.format(**words) for text in GRAPH_TEXT[graph])
    config = obfuscator.config
    meta = {
        "kind": OBFUSCATOR_KIND,
        "graph": graph,
        "input": inputs,
        "outputs": outputs,
        "features": json.dumps(feats.to_dict(), sort_keys=True),
        "feature_fingerprint": feats.fingerprint(),
        "architecture": json.dumps(obfuscator.network.config.to_dict(), sort_keys=True),
        "parameters": str(obfuscator.network.num_parameters()),
        "quantization": quantization,
        "source": source or "",
        "weights_sha256": str(config.get("weights_sha256", "")),
        "target": json.dumps(config.get("target")),
        "code_version": __version__,
    }
    return {META_PREFIX + k: v for k, v in meta.items()}


def read_metadata(model: str | os.PathLike | onnx.ModelProto) -> dict[str, str]:
    """The ``optin.*`` metadata of an exported file, without the prefix."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(
        str(model), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props
            if p.key.startswith(META_PREFIX)}


def resolve_obfuscator(model: str | os.PathLike | Obfuscator) -> tuple[Obfuscator, str | None]:
    """An Obfuscator and the folder it came from (None when given as an object)."""
    if isinstance(model, Obfuscator):
        return model, None
    return Obfuscator.load(model), str(model)


def export_onnx(
    model: str | os.PathLike | Obfuscator,
    out_path: str | os.PathLike,
    *,
    int8: bool = False,
    calibration: str | os.PathLike | Manifest | Sequence[np.ndarray] | None = None,
    include_frontend: bool = True,
    calibration_utterances: int = 32,
    int8_layers: str = "spatial",
    check: bool = True,
) -> ExportReport:
    """Export an obfuscator to ONNX (see the module docstring for the two graphs).

    Args:
        model: a training run folder, its ``obfuscator/`` checkpoint, or an Obfuscator.
        out_path: the ``.onnx`` file to write (its folder is created).
        int8: static int8 quantization of the obfuscator's convolutions; ``int8_layers``
            picks which: "spatial" (default) or "all" (see :mod:`optin.deploy.quantize`).
        calibration: for int8, a manifest (features of up to ``calibration_utterances`` of
            its train rows) or a list of ``(1, F, T)`` feature arrays. Default: the manifest
            the obfuscator was trained on, when its checkpoint names one that exists.
        include_frontend: the wave graph (True) or the features graph (False).
        check: run the file in ONNX Runtime and compare with PyTorch (``report.parity``).
    """
    obfuscator, source = resolve_obfuscator(model)
    obfuscator.refuse_whole_utterance("ONNX export")
    if obfuscator.streaming_native:
        raise ConfigError("this is a causal obfuscator: export it with --streaming "
                          "(export_streaming); its step graph run once on a whole utterance "
                          "from a zero state, then once on the look-ahead's padding, is "
                          "offline obfuscation")
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".onnx":
        raise ConfigError(f"{out_path}: the output file should end in .onnx")
    graph = "wave" if include_frontend else "features"
    quantization, described = "none (float32)", None
    if int8:  # calibration first: a missing manifest fails before the slow export
        inputs, described = calibration_inputs(calibration, obfuscator,
                                               calibration_utterances)
    proto = feature_graph_model(obfuscator.network)
    if int8:
        proto = quantize_features_model(proto, inputs, int8_layers)
        quantization = quantization_text(int8_layers)
    if include_frontend:
        proto = attach_frontend(frontend_model(obfuscator.features), proto)
    meta = build_metadata(obfuscator, graph, quantization, source)
    if described:
        meta[META_PREFIX + "calibration"] = described
    doc = "; ".join(f"{k[len(META_PREFIX):]}: {v}" for k, v in meta.items()
                    if k.endswith(("input", "outputs")))
    proto.doc_string = f"optin obfuscator, {graph} graph. {doc}"
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    write_bytes(out_path, proto.SerializeToString())
    report = ExportReport(
        path=out_path, graph=graph,
        inputs={v.name: _shape(v) for v in proto.graph.input},
        outputs={v.name: _shape(v) for v in proto.graph.output},
        int8=int8, quantization=quantization, calibration=described,
        opset=next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        bytes=out_path.stat().st_size, metadata=read_metadata(proto),
    )
    if check:
        report.parity = parity(out_path, obfuscator)
    return report


def reference_outputs(obfuscator: Obfuscator, graph: str, x: np.ndarray) -> list[np.ndarray]:
    """What the library's own PyTorch path (``obfuscator.frontend``, ``obfuscate_features``)
    gives for an input of an exported graph: the outputs the export must reproduce."""
    inputs = torch.from_numpy(x)
    with torch.no_grad():
        if graph == "wave":
            features, mean, std, _ = obfuscator.frontend(inputs)
            return [obfuscator.obfuscate_features(features).numpy(), mean.numpy(), std.numpy()]
        return [obfuscator.obfuscate_features(inputs).numpy()]


def probe_input(graph: str, config: FeatureConfig, batch: int, frames: int,
                seed: int = 0) -> np.ndarray:
    """A speech-like test input: ``(batch, samples)`` harmonic tones for the wave graph, or
    their features ``(batch, F, frames)``."""
    rng = np.random.default_rng(seed)
    samples = (frames - 1) * config.hop_length
    t = np.arange(samples) / config.sample_rate
    waves = []
    for _ in range(batch):
        f0 = rng.uniform(90.0, 280.0) * (1 + 0.03 * np.sin(2 * np.pi * 4 * t))
        phase = 2 * np.pi * np.cumsum(f0) / config.sample_rate
        x = sum(np.sin(k * phase) / k for k in range(1, 12))
        x = x * (0.3 + 0.7 * np.sin(2 * np.pi * 1.5 * t + rng.uniform(0, 3)) ** 2)
        x = x + 0.01 * rng.standard_normal(samples)
        waves.append(0.1 * x / np.sqrt(np.mean(x**2)))  # about -20 dBFS RMS
    wave = np.stack(waves).astype(np.float32)  # (batch, samples)
    if graph == "wave":
        return wave
    with torch.no_grad():
        features = FrontEndGraph(config)(torch.from_numpy(wave))[0]
    return features.numpy()


def max_rel_error(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    """max over outputs of ``max |actual - expected| / max |expected|``."""
    return max(float(np.abs(a - e).max() / max(np.abs(e).max(), 1e-12))
               for a, e in zip(actual, expected, strict=True))


def parity(path: str | os.PathLike, obfuscator: Obfuscator,
           shapes: Sequence[tuple[int, int]] = ((1, 57), (3, 212))) -> dict[str, Any]:
    """Run an exported file in ONNX Runtime and PyTorch at ``(batch, frames)`` sizes."""
    runner = OnnxObfuscator.load(path, threads=1)
    errors = []
    for batch, frames in shapes:
        x = probe_input(runner.graph, obfuscator.features, batch, frames)
        expected = reference_outputs(obfuscator, runner.graph, x)
        errors.append(max_rel_error(runner.run_arrays(x), expected))
    return {"max_rel_error": max(errors), "per_shape": errors,
            "shapes": [list(s) for s in shapes]}
