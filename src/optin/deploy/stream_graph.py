"""``optin export --streaming``: one step of a causal obfuscator's stream as an ONNX graph.

The graph (``optin.graph = "stream-step"``) takes

* ``frames`` ``(1, F, n)`` float32: the next ``n >= 1`` frames' ``log1p`` STFT magnitudes (the
  front-end of :mod:`optin.audio.features` without its normalisation: the network needs none),
* ``valid`` ``(1, n)`` float32: 1 for frames of the stream, 0 for the ``lookahead`` frames of
  padding that end it,
* ``state_0 .. state_k``: the state (all zeros at the start of a stream),

and returns ``obfuscated`` ``(1, F, n)``: the output ``log1p`` magnitudes of the frames
``lookahead`` before the new ones (the first ``lookahead`` of a stream belong to no frame),
and ``state_0_out .. state_k_out``, the next call's state. It is
:meth:`~optin.models.causal_obfuscator.CausalObfuscator.step`, exported;
:class:`OnnxStepper` runs it chunk by chunk (a drop-in for the PyTorch stepper of
:class:`~optin.deploy.causal_stream.CausalStreamingObfuscator`).

int8: ONNX Runtime static QDQ quantization of every Conv, calibrated on the states a float
stream of calibration utterances passes through (so the convolutions see the activations of
real streams, history included).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from optin import __version__
from optin.deploy.export import _quiet_exporter, resolve_obfuscator
from optin.deploy.quantize import calibration_inputs, quantization_text, quantize_features_model
from optin.deploy.runtime import LOAD_ERRORS, OnnxModelError, make_session
from optin.errors import ConfigError
from optin.files import write_bytes
from optin.models.causal_obfuscator import CausalObfuscator, StreamState
from optin.privacy.obfuscator import Obfuscator

GRAPH = "stream-step"
STEP_FRAMES = 10  # frames per calibration step (100 ms)


class StepModule(nn.Module):
    """``(frames, valid, states) -> (obfuscated, *new states)`` of a causal obfuscator."""

    def __init__(self, network: CausalObfuscator) -> None:
        super().__init__()
        self.network = network

    def forward(self, frames: Tensor, valid: Tensor, states: list[Tensor]
                ) -> tuple[Tensor, ...]:
        out, state = self.network.step(frames, StreamState.from_tensors(list(states)), valid,
                                       matmul=False)  # Conv nodes: what ONNX Runtime runs fast
        return (out, *state.tensors())


def _state_arrays(network: CausalObfuscator) -> list[np.ndarray]:
    return [t.numpy() for t in network.initial_state(1).tensors()]


def step_inputs(network: CausalObfuscator, features: Sequence[np.ndarray],
                step_frames: int = STEP_FRAMES) -> list[dict[str, np.ndarray]]:
    """Every step's inputs while streaming each ``(1, F, T)`` array through the network in
    PyTorch, ``step_frames`` at a time, then its end padding (the int8 calibration data)."""
    feeds = []
    la = network.lookahead
    with torch.no_grad():
        for x in features:
            state = network.initial_state(1)
            x = torch.as_tensor(np.asarray(x, dtype=np.float32))
            pieces = [(x[:, :, i:i + step_frames], 1.0)
                      for i in range(0, x.shape[2], step_frames)]
            if la:
                pieces.append((torch.zeros(1, x.shape[1], la), 0.0))
            for frames, flag in pieces:
                valid = torch.full((1, frames.shape[2]), flag)
                feeds.append({"frames": frames.numpy(), "valid": valid.numpy(),
                              **{f"state_{i}": t.numpy()
                                 for i, t in enumerate(state.tensors())}})
                _, state = network.step(frames, state, valid)
    return feeds


def step_graph_model(network: CausalObfuscator) -> onnx.ModelProto:
    """The float32 step graph (a dynamic number of frames per call)."""
    network = network.eval()
    states = network.initial_state(1).tensors()
    example = (torch.randn(1, network.config.n_freq, 5), torch.ones(1, 5), states)
    frames = torch.export.Dim("frames", min=1)
    names = [f"state_{i}" for i in range(len(states))]
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            StepModule(network), example, dynamo=True, verbose=False,
            input_names=["frames", "valid", *names],
            output_names=["obfuscated", *[f"{n}_out" for n in names]],
            dynamic_shapes=({2: frames}, {1: frames}, [None for _ in states]))
    return program.model_proto


def export_streaming(model: str | os.PathLike | Obfuscator, out: str | os.PathLike,
                     int8: bool = False,
                     calibration: str | os.PathLike | Sequence[np.ndarray] | None = None
                     ) -> dict[str, str]:
    """Write the step graph of a causal obfuscator (run folder, checkpoint or loaded) to
    ``out``; returns its metadata. ``calibration`` (int8 only): a manifest, a list of
    ``(1, F, T)`` feature arrays, or None for the manifest the checkpoint names."""
    obfuscator, source = resolve_obfuscator(model)
    network = obfuscator.network
    if not isinstance(network, CausalObfuscator):
        raise ConfigError("--streaming exports a causal obfuscator (trained with "
                          "--obfuscator-arch causal); this one is the paper's offline network: "
                          "export it without --streaming, or stream it with `optin stream`")
    proto = step_graph_model(network)
    quantization, calibrated = "none (float32)", ""
    if int8:
        arrays, calibrated = calibration_inputs(calibration, obfuscator)
        proto = quantize_features_model(proto, step_inputs(network, arrays), layers="all")
        quantization = quantization_text("all")
    meta = {"graph": GRAPH, "version": __version__,
            "input": "frames (1, F, n) log1p STFT magnitudes, valid (1, n), state_0..k",
            "outputs": "obfuscated (1, F, n) log1p magnitudes of the frames `lookahead` "
                       "earlier, state_0_out..k_out",
            "features": json.dumps(obfuscator.features.to_dict()),
            "architecture": json.dumps(network.config.to_dict()),
            "lookahead": str(network.lookahead), "history": str(network.config.history),
            "states": str(len(network.initial_state(1).tensors())),
            "weights_sha256": obfuscator.weights_sha256(), "source": str(source or ""),
            "quantization": quantization, "calibration": calibrated}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"optin.{key}", value
    proto.doc_string = ("optin causal obfuscator, one stream step: " + meta["input"] + " -> "
                        + meta["outputs"])
    write_bytes(Path(out), proto.SerializeToString())
    return meta


class OnnxStepper:
    """The step graph in ONNX Runtime, holding a stream's state between calls."""

    def __init__(self, session: ort.InferenceSession, name: str = "model") -> None:
        self.session = session
        self.name = name
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get("optin.graph") != GRAPH:
            raise OnnxModelError(f"{name}: not a streaming export (optin.graph is "
                                 f"{meta.get('optin.graph')!r}, expected '{GRAPH}'); write one "
                                 "with `optin export --streaming`")
        self.lookahead = int(meta["optin.lookahead"])
        self.state_inputs = [i for i in session.get_inputs() if i.name.startswith("state_")]
        self.outputs = [o.name for o in session.get_outputs()]
        self.reset()

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int | None = None) -> OnnxStepper:
        path = Path(path)
        if not path.is_file():
            raise OnnxModelError(f"{path}: no such ONNX file")
        try:
            session = make_session(path, threads)
        except LOAD_ERRORS as err:
            raise OnnxModelError(f"{path}: ONNX Runtime cannot load it ({err})") from err
        return cls(session, str(path))

    def reset(self) -> None:
        kinds = {"tensor(double)": np.float64, "tensor(float)": np.float32}
        self.state = [np.zeros(i.shape, kinds[i.type]) for i in self.state_inputs]

    def __call__(self, frames: Tensor, valid: bool) -> Tensor:
        """(F, n) log magnitudes (or end padding) -> (F, n) outputs, lookahead frames late."""
        x = np.ascontiguousarray(frames.numpy()[None], dtype=np.float32)
        feed = {"frames": x, "valid": np.full((1, x.shape[2]), float(valid), np.float32),
                **{i.name: s for i, s in zip(self.state_inputs, self.state, strict=True)}}
        out, *self.state = self.session.run(self.outputs, feed)
        return torch.from_numpy(out[0])
