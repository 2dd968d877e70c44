"""Running an exported obfuscator in ONNX Runtime: ``OnnxObfuscator.load("obf.onnx")``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor

from optin.audio.features import FeatureConfig
from optin.errors import ConfigError, OptinError

_state = ort.capi.onnxruntime_pybind11_state
# What InferenceSession raises for a file it cannot use (they derive from Exception only).
LOAD_ERRORS = (_state.InvalidGraph, _state.InvalidProtobuf, _state.Fail, _state.NoSuchFile,
               _state.InvalidArgument)


class OnnxModelError(OptinError, ValueError):
    """An ONNX file that is not a usable optin obfuscator; the message names the file."""


def providers_for(device: str) -> list[str | tuple[str, dict[str, int]]]:
    """ONNX Runtime execution providers for "cpu" or "cuda"; a clear error when absent."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise ConfigError(
                "this onnxruntime has no CUDAExecutionProvider (it has "
                f"{', '.join(available)}): install onnxruntime-gpu, or use the torch backend "
                "for --device cuda"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise ConfigError(f"unknown device '{device}' (cpu or cuda)")


def make_session(model: str | os.PathLike | bytes, threads: int | None = None,
                 device: str = "cpu") -> ort.InferenceSession:
    """An InferenceSession with all graph optimisations; ``threads`` intra-op threads
    (None: ONNX Runtime's default, one per physical core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers_for(device))


class OnnxObfuscator:
    """An exported obfuscator (wave or features graph) with the settings in its metadata."""

    def __init__(self, session: ort.InferenceSession, name: str = "model") -> None:
        self.session = session
        self.name = name
        meta = session.get_modelmeta().custom_metadata_map
        self.metadata = {k[len("optin."):]: v for k, v in meta.items()
                         if k.startswith("optin.")}
        if self.metadata.get("graph") not in ("wave", "features"):
            raise OnnxModelError(f"{name}: not an optin obfuscator export (no optin.graph "
                                 "metadata)")
        self.graph = self.metadata["graph"]
        self.features = FeatureConfig.from_dict(json.loads(self.metadata["features"]))
        self.input_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int | None = None,
             device: str = "cpu") -> OnnxObfuscator:
        """Open an ``.onnx`` file written by :func:`optin.deploy.export.export_onnx`."""
        path = Path(path)
        if not path.is_file():
            raise OnnxModelError(f"{path}: no such ONNX file")
        try:
            session = make_session(path, threads, device)
        except LOAD_ERRORS as err:
            raise OnnxModelError(f"{path}: ONNX Runtime cannot load it ({err})") from err
        return cls(session, str(path))

    def run_arrays(self, x: np.ndarray) -> list[np.ndarray]:
        """Raw outputs for one input array: wave ``(B, N)`` -> [obfuscated ``(B, F, T)``,
        mean ``(B,)``, std ``(B,)``]; features ``(B, F, T)`` -> [obfuscated ``(B, F, T)``]."""
        expected = 2 if self.graph == "wave" else 3
        if x.ndim != expected:
            raise OnnxModelError(f"{self.name}: the {self.graph} graph takes a {expected}-D input "
                                 f"({self.metadata.get('input')}), got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run(self.output_names, {self.input_name: x})

    def obfuscate_features(self, features: Tensor) -> Tensor:
        """(F, T) or (B, F, T) normalised features -> obfuscated (features graph only); the
        same contract as :meth:`optin.privacy.obfuscator.Obfuscator.obfuscate_features`."""
        if self.graph != "features":
            raise OnnxModelError(f"{self.name}: is a wave graph; export with "
                                 "include_frontend=False to obfuscate features")
        single = features.ndim == 2
        x = features[None] if single else features
        out = self.run_arrays(x.detach().cpu().float().numpy())[0]
        result = torch.from_numpy(out).to(features.device, features.dtype)
        return result[0] if single else result
