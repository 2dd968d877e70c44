"""int8 quantization of the exported obfuscator, and how much it changes the target's answers.

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

:func:`int8_agreement` measures what matters: does the target model T still give the same
utterance predictions on int8-obfuscated input as on float32-obfuscated input?
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
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

    def __init__(self, inputs: Sequence[np.ndarray], input_name: str = "features") -> None:
        self.inputs = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        self.input_name = input_name
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.inputs):
            return None
        self.position += 1
        return {self.input_name: self.inputs[self.position - 1]}

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


def quantize_features_model(model: onnx.ModelProto, inputs: Sequence[np.ndarray],
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


def int8_agreement(
    obfuscator_dir: str | os.PathLike,
    target_dir: str | os.PathLike,
    manifest: Manifest | str | os.PathLike,
    split: str = "test",
    *,
    calibration: str | os.PathLike | None = None,
    calibration_utterances: int = 32,
    cache_root: str | os.PathLike | None = None,
    threads: int | None = None,
    layers: str = "spatial",
) -> dict[str, Any]:
    """Does int8 keep the target's predictions on obfuscated input?

    Exports the features graph in float32 and int8 (calibrated on ``calibration``, default:
    the train rows of ``manifest``), obfuscates every utterance of ``split`` with each (and with
    PyTorch) and runs the target model T on the results.

    Returns:
        ``agreement_int8_vs_float32`` (fraction of utterances whose T prediction is the same),
        ``agreement_onnx_vs_torch`` (float32 ONNX vs PyTorch), T's utterance accuracy on each,
        the feature error of int8 (``int8_rel_rms_error``: RMS(int8 - float32) / RMS(float32)
        over all test features), counts and the quantization used.
    """
    from optin.deploy.export import export_onnx
    from optin.deploy.runtime import OnnxObfuscator
    from optin.training.classifier import Classifier, evaluate_classifier

    obfuscator = Obfuscator.load(obfuscator_dir)
    target = Classifier.load(target_dir, features=obfuscator.features)
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(obfuscator, Path(tmp) / "f32.onnx", include_frontend=False,
                           check=False)
        int8 = export_onnx(obfuscator, Path(tmp) / "int8.onnx", include_frontend=False,
                           int8=True, calibration=calibration or manifest,
                           calibration_utterances=calibration_utterances, check=False,
                           int8_layers=layers)
        runners = {"float32": OnnxObfuscator.load(fp32.path, threads=threads),
                   "int8": OnnxObfuscator.load(int8.path, threads=threads)}
        errors = {"diff": 0.0, "ref": 0.0}

        def int8_transform(features: torch.Tensor) -> torch.Tensor:
            out = runners["int8"].obfuscate_features(features)
            ref = runners["float32"].obfuscate_features(features)
            errors["diff"] += float(((out - ref) ** 2).sum())
            errors["ref"] += float((ref**2).sum())
            return out

        transforms = {"torch": obfuscator.obfuscate_features,
                      "float32": runners["float32"].obfuscate_features,
                      "int8": int8_transform}
        results = {name: evaluate_classifier(target_dir, manifest, split, transform=fn,
                                             progress=False, cache_root=cache_root,
                                             classifier=target, return_predictions=True)
                   for name, fn in transforms.items()}

    def agree(a: str, b: str) -> float:
        pa, pb = results[a]["predictions"], results[b]["predictions"]
        return sum(x == y for x, y in zip(pa, pb, strict=True)) / max(len(pa), 1)

    return {
        "split": split,
        "utterances": results["int8"]["utterances"],
        "attribute": results["int8"]["attribute"],
        "agreement_int8_vs_float32": agree("int8", "float32"),
        "agreement_onnx_vs_torch": agree("float32", "torch"),
        "target_accuracy_torch": results["torch"]["utterance_accuracy"],
        "target_accuracy_float32": results["float32"]["utterance_accuracy"],
        "target_accuracy_int8": results["int8"]["utterance_accuracy"],
        "int8_rel_rms_error": (errors["diff"] / max(errors["ref"], 1e-30)) ** 0.5,
        "quantization": int8.quantization,
        "calibration": int8.calibration,
        "obfuscator": str(obfuscator_dir),
        "target": str(target_dir),
    }
