"""int8 quantization of the exported obfuscator's features graph.

Static quantization (QDQ) with ONNX Runtime: the float32 features graph is pre-processed
(ONNX shape inference, graph optimisation), then chosen Conv layers get per-channel int8
weights and int8 activations whose ranges come from running calibration features through it
(MinMax). Signed activations (S8S8) are ONNX Runtime's recommended x86 format: uint8
activations (U8S8) saturate in the AVX2 kernels of CPUs without VNNI, so the same graph gave a
different error on different machines (0.79 relative RMS on the CI machine, untrained model).

Which layers (``layers``): ``"spatial"`` (default) quantizes the 2-D convolutions with more
than one input and output channel and a kernel over 1x1: down1, down2 (conv and gate) and up1,
up2, 81 % of the FLOPs. The 1-channel input convs, the (folded) output conv and the 1-D
bottleneck (to1d, residual blocks, to2d) stay float32. ``"all"`` quantizes every Conv.
On the demo's trained obfuscator and speaker target (40 test, 40 valid, 160 train utterances)
the target's prediction on int8 input matched float32 on 100 % / 97.5 % / 100 % of utterances
with "all" and on 100 % / 100 % / 100 % with "spatial" (int8 output error 2.0 % relative RMS):
the one utterance that flipped did so through the 1-D layers.

:func:`optin.deploy.agreement.int8_agreement` measures what matters: does the target model T
still give the same utterance predictions on int8-obfuscated input as on float32?
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from optin.audio.features import FeatureConfig
from optin.corpora.feature_cache import compute_features
from optin.corpora.manifest import Manifest, ManifestError
from optin.errors import ConfigError
from optin.privacy.obfuscator import Obfuscator

LAYERS = ("spatial", "all")
QUANTIZATION = ("int8 static QDQ (ONNX Runtime): per-channel int8 weights, int8 activations, "
                "MinMax calibration; {layers}")
LAYER_TEXT = {"spatial": "2-D convs with >1 input and output channel, kernel > 1x1 (others "
                         "float32)",
              "all": "every Conv"}
# Calibration crops long utterances to this many frames (4 s): ranges, not lengths, matter.
CALIBRATION_MAX_FRAMES = 400


class FeatureCalibrationReader(CalibrationDataReader):
    """Feeds calibration arrays ``(1, F, T)`` to ONNX Runtime's calibrator, one per call."""

    def __init__(self, inputs: Sequence[np.ndarray] | Sequence[dict[str, np.ndarray]],
                 input_name: str = "features") -> None:
        # an array feeds ``input_name``; a dict (a graph of several inputs) is fed as it is
        self.inputs = [x if isinstance(x, dict) else
                       {input_name: np.ascontiguousarray(x, dtype=np.float32)} for x in inputs]
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.inputs):
            return None
        self.position += 1
        return self.inputs[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def manifest_calibration(manifest: Manifest | str | os.PathLike, features: FeatureConfig,
                         utterances: int = 32, seed: int = 0,
                         max_frames: int = CALIBRATION_MAX_FRAMES) -> list[np.ndarray]:
    """Features ``(1, F, T <= max_frames)`` of up to ``utterances`` rows drawn (seeded) from
    the manifest's train split, or from all its rows when it has no split."""
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    try:
        part = manifest.split("train")
    except ManifestError:
        part = manifest
    if len(part) == 0:
        raise ManifestError(f"manifest {manifest.source}: no rows to calibrate on")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(part), size=min(utterances, len(part)), replace=False)
    out = []
    for i in sorted(chosen.tolist()):
        spec = compute_features(part.audio_path(part.rows[i]), features)
        out.append(spec.features[None, :, :max_frames].numpy())
    return out


def calibration_inputs(calibration: str | os.PathLike | Manifest | Sequence[np.ndarray] | None,
                       obfuscator: Obfuscator, utterances: int = 32
                       ) -> tuple[list[np.ndarray], str]:
    """Calibration arrays and a description of where they came from.

    ``calibration`` is a manifest (or its path), a list of ``(1, F, T)`` arrays, or None for the
    manifest named in the obfuscator's checkpoint (``provenance.manifest``).
    """
    if calibration is None:
        named = (obfuscator.config.get("provenance") or {}).get("manifest")
        if not named or not Path(named).is_file():
            raise ConfigError("int8 export needs calibration data: pass a manifest "
                              "(--calibration MANIFEST); the obfuscator's checkpoint names "
                              + (f"'{named}', which does not exist" if named else "none"))
        calibration = named
    if isinstance(calibration, str | os.PathLike | Manifest):
        arrays = manifest_calibration(calibration, obfuscator.features, utterances)
        name = calibration.source if isinstance(calibration, Manifest) else calibration
        return arrays, f"{len(arrays)} utterances of {name}"
    arrays = [np.asarray(x, dtype=np.float32) for x in calibration]
    n_freq = obfuscator.features.n_freq
    for i, x in enumerate(arrays):
        if x.ndim != 3 or x.shape[:2] != (1, n_freq):
            raise ConfigError(f"calibration array {i}: expected (1, {n_freq}, T), got {x.shape}")
    if not arrays:
        raise ConfigError("calibration: no arrays given")
    return arrays, f"{len(arrays)} given feature arrays"


def quantization_text(layers: str) -> str:
    """How :func:`quantize_features_model` quantizes, in words (stored in the metadata)."""
    return QUANTIZATION.format(layers=LAYER_TEXT[layers])


def spatial_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes with a 4-D weight of more than one input and output channel
    and a kernel larger than 1x1."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    chosen = []
    for node in model.graph.node:
        dims = weights.get(node.input[1]) if node.op_type == "Conv" else None
        if dims is not None and len(dims) == 4 and min(dims[:2]) > 1 and dims[2] * dims[3] > 1:
            chosen.append(node.name)
    return chosen


def quantize_features_model(model: onnx.ModelProto,
                            inputs: Sequence[np.ndarray] | Sequence[dict[str, np.ndarray]],
                            layers: str = "spatial") -> onnx.ModelProto:
    """Static int8 (QDQ) version of a float32 features graph, calibrated on ``inputs``;
    ``layers`` picks the convolutions (see the module docstring)."""
    if layers not in LAYERS:
        raise ConfigError(f"int8 layers must be one of {', '.join(LAYERS)}, got '{layers}'")
    with tempfile.TemporaryDirectory() as tmp:
        plain, prepared, quantized = (Path(tmp) / n for n in ("f32.onnx", "pre.onnx",
                                                               "int8.onnx"))
        onnx.save(model, str(plain))
        # ONNX's own shape inference is enough for convs; ONNX Runtime's symbolic one fails on
        # the Pad of some exporter versions (torch 2.11: assert len(pads) == 2 * rank).
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        nodes = spatial_convs(onnx.load(str(prepared))) if layers == "spatial" else None
        quantize_static(
            str(prepared), str(quantized), FeatureCalibrationReader(inputs),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
            nodes_to_quantize=nodes,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        result = onnx.load(str(quantized))
    del result.metadata_props[:]
    # Shape inference renamed the symbolic axes; give back the float graph's names.
    for ours, theirs in ((result.graph.input, model.graph.input),
                         (result.graph.output, model.graph.output)):
        for q, f in zip(ours, theirs, strict=True):
            q.type.CopyFrom(f.type)
    return result
