"""Does the target model T keep its answers on an exported obfuscator?

:func:`int8_agreement` exports the obfuscator's features graph in float32 and int8, obfuscates a
split with each (and with PyTorch), runs T on the results and compares its predictions: what
matters for a quantized obfuscator is not its feature error but whether the permitted task
survives it (``optin export --int8 --check-target``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from optin.corpora.manifest import Manifest
from optin.deploy.export import export_onnx
from optin.deploy.runtime import OnnxObfuscator
from optin.privacy.obfuscator import Obfuscator
from optin.training.classifier import Classifier, evaluate_classifier


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
