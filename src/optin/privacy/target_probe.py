"""A pretrained target tried once at load, so that a file that cannot serve fails in one line.

:func:`probe_target` runs the loaded target (:class:`optin.privacy.pretrained.PretrainedTarget`)
on a short input of the kind it declares, :data:`PROBE_BATCH` items of :data:`PROBE_SECONDS`:
a (2, S) seeded noise waveform at 0.1 at the feature sample rate, or (2, F, T) seeded N(0, 1)
normalised features, and checks, in this order:

* weights: no NaN in any parameter or buffer;
* arity: one input (an ONNX graph input, or a TorchScript ``forward`` argument without default);
* the forward: it runs, and returns a float tensor (or a tuple whose first item is one) of the
  adapter's rank that keeps the batch (:func:`checked_output`, also applied on every later call);
  when it fails, the other layouts are tried to say what the model reads instead (features
  or (B, 1, S) audio for a waveform target, (B, S) audio for a spectrogram one);
* values: finite, not empty, and within [0, 1] for the probability adapters;
* gradient: a backward pass reaches the input, finite and not zero everywhere.

Every failure is a :class:`TargetModelError` of one line, ``<file>: <what is wrong>``. Memory:
the ONNX converter refuses any tensor over its per-tensor budget before making it
(:data:`optin.models.onnx_limits.MAX_TENSOR_BYTES`, 1 GiB); the probe as a whole runs under an
address-space cap (Linux) of :data:`PROBE_MEMORY_BYTES` (4 GiB) plus
:data:`PROBE_THREAD_BYTES` (128 MiB, thread stacks and allocator arenas) per torch thread above
what the process holds, so that a model asking for far more fails at once in one line instead of
exhausting the machine.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from optin.audio.features import FeatureConfig
from optin.errors import ConfigError, OptinError
from optin.models.onnx_limits import format_bytes
from optin.models.onnx_ops import UnsupportedOnnxModel

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

PROBE_BATCH = 2
PROBE_SECONDS = 1.0
PROBE_AMPLITUDE = 0.1
PROBE_MEMORY_BYTES = 4 << 30
PROBE_THREAD_BYTES = 128 << 20
MAX_REASON = 240  # characters of a foreign error message kept in the line
OUTPUT_RANK = {"logits": 2, "frame-logits": 3, "frame-probability": 2}
OUTPUT_LAYOUT = {"logits": "(B, K)", "frame-logits": "(B, N, K)", "frame-probability": "(B, N)",
                 "silero-vad": "(B, N)"}
PROBABILITY_ADAPTERS = ("frame-probability", "silero-vad")


class TargetModelError(ConfigError):
    """A pretrained target that cannot be used; the message names the file and the reason."""


class Probed(Protocol):
    """What the probe needs of a loaded target (a :class:`PretrainedTarget`)."""

    module: nn.Module
    spec: Any  # .input ("waveform" / "spectrogram"), .adapter
    label: str

    def raw_output(self, x: Tensor) -> Tensor: ...


# --------------------------------------------------------------------------- the output contract
def checked_output(out: Any, batch: int, adapter: str, label: str) -> Tensor:
    """A model's answer as its score tensor, or a one-line refusal (no data is read).

    ``out``: what ``module(x)`` returned for ``batch`` inputs: a tensor, or a tuple / list whose
    first item is one. Returns that tensor: (B, K), (B, N, K) or (B, N) as ``adapter`` wants.
    """
    if isinstance(out, tuple | list):
        if not out:
            raise TargetModelError(f"{label}: the model returns an empty {type(out).__name__}")
        out = out[0]
    if isinstance(out, dict):
        keys = ", ".join(map(str, out)) or "none"
        raise TargetModelError(f"{label}: the model returns a dict (keys: {keys}); a target "
                               "must return its scores as a tensor (or a tuple, scores first)")
    if not isinstance(out, Tensor):
        raise TargetModelError(f"{label}: the model returns {type(out).__name__}, not a tensor")
    if not out.is_floating_point():
        raise TargetModelError(f"{label}: the model outputs {out.dtype} values "
                               f"{tuple(out.shape)}: no gradient can flow through them; a "
                               "target must output float scores (logits or probabilities)")
    expected = OUTPUT_RANK.get(adapter)
    if expected is not None and out.ndim != expected:
        raise TargetModelError(f"{label}: adapter '{adapter}' expects a {expected}-D output "
                               f"{OUTPUT_LAYOUT[adapter]}, the model gave {tuple(out.shape)}")
    if out.ndim == 0 or out.shape[0] != batch:
        raise TargetModelError(f"{label}: the output {tuple(out.shape)} does not keep the "
                               f"batch: {batch} inputs in, first dimension "
                               f"{out.shape[0] if out.ndim else 'none'} out")
    if adapter in ("logits", "frame-logits") and out.shape[-1] < 2:
        raise TargetModelError(f"{label}: adapter '{adapter}' reads K >= 2 class scores, the "
                               f"model gave {tuple(out.shape)}")
    return out


# --------------------------------------------------------------------------- the probe
def probe_target(target: Probed, features: FeatureConfig) -> None:
    """Try ``target`` once on a short input of its kind; raise one line on any failure."""
    label = target.label
    check_weights(target.module, label)
    check_arity(target)
    leaf = probe_input(target.spec.input, features).requires_grad_()
    with memory_cap():
        raw = _forward(target, leaf * 1.0, features)  # not a leaf: in-place ops work, as in use
        check_values(raw, target.spec.adapter, label)
        check_gradient(raw, leaf, label)


def probe_input(kind: str, features: FeatureConfig) -> Tensor:
    """(2, S) waveform noise, or (2, F, T) N(0, 1) features, of :data:`PROBE_SECONDS`."""
    gen = torch.Generator().manual_seed(0)
    samples = int(PROBE_SECONDS * features.sample_rate)
    if kind == "waveform":
        return PROBE_AMPLITUDE * torch.randn(PROBE_BATCH, samples, generator=gen)
    return torch.randn(PROBE_BATCH, features.n_freq, features.frames(samples), generator=gen)


def check_weights(module: nn.Module, label: str) -> None:
    """Refuse a model with NaN in any float parameter or buffer."""
    names = getattr(module, "value_names", {})
    for name, t in itertools.chain(module.named_parameters(), module.named_buffers()):
        if t.is_floating_point() and bool(torch.isnan(t).any()):
            count = int(torch.isnan(t).sum())
            raise TargetModelError(f"{label}: weight {names.get(name, name)!r} holds NaN "
                                   f"({count} of {t.numel()} values): the file is broken")


def check_arity(target: Probed) -> None:
    """Refuse a model that needs more than one input (Silero's own interface excepted)."""
    if target.spec.adapter == "silero-vad":
        return
    module, label = target.module, target.label
    inputs = list(getattr(module, "input_names", []))
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if not inputs and schema is not None:
        inputs = [a.name for a in schema.arguments[1:] if not a.has_default_value()]
    if len(inputs) > 1:
        raise TargetModelError(f"{label}: the model takes {len(inputs)} inputs "
                               f"({', '.join(inputs)}); a target reads one, the "
                               f"{_layout(target.spec.input)} {target.spec.input}")


def check_values(raw: Tensor, adapter: str, label: str) -> None:
    """Refuse an empty or non-finite output, or probabilities outside [0, 1]."""
    seconds = f"a {PROBE_SECONDS:g} s probe input"
    if raw.numel() == 0:
        raise TargetModelError(f"{label}: the model gives an empty output {tuple(raw.shape)} "
                               f"on {seconds}")
    values = raw.detach().float()
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        kind = "NaN" if bool(torch.isnan(values).any()) else "inf"
        raise TargetModelError(f"{label}: the model outputs {kind} ({bad} of {values.numel()} "
                               f"values) on {seconds}: the model or its weights are broken "
                               "(no training setting can fix it)")
    low, high = float(values.min()), float(values.max())
    if adapter in PROBABILITY_ADAPTERS and (low < 0 or high > 1):
        raise TargetModelError(f"{label}: adapter '{adapter}' reads probabilities in [0, 1], "
                               f"the model gave values in [{low:.3g}, {high:.3g}]: logits? use "
                               "--target-adapter frame-logits for (B, N, K) logits per frame, "
                               "or logits for (B, K) per utterance")


def check_gradient(raw: Tensor, x: Tensor, label: str) -> None:
    """Refuse a model whose output sends no finite, non-zero gradient back to ``x``."""
    none = (f"{label}: no gradient reaches the input (the model detaches it, thresholds it or "
            "does not use it), so the obfuscator could not learn to keep this task")
    if not raw.requires_grad:
        raise TargetModelError(none)
    gen = torch.Generator().manual_seed(1)
    weights = torch.randn(raw.shape, generator=gen)
    try:
        (raw.float() * weights).sum().backward()
    except Exception as err:
        raise TargetModelError(f"{label}: the backward pass fails: {_reason(err)}") from err
    grad = x.grad
    if grad is None or not bool(grad.ne(0).any()):
        raise TargetModelError(none)
    if not bool(torch.isfinite(grad).all()):
        raise TargetModelError(f"{label}: the gradient reaching the input is NaN or inf on a "
                               f"{PROBE_SECONDS:g} s probe input")


# --------------------------------------------------------------------------- forward, explained
def _attempt(target: Probed, x: Tensor, what: str = "the input") -> Tensor | str:
    """The raw output on ``x``, or why there is none (one line; the output contract's own
    refusals without the label, the model's errors prefixed with ``the model fails on``)."""
    try:
        return target.raw_output(x)
    except TargetModelError as err:
        prefix = f"{target.label}: "
        reason = one_line(err)
        return reason[len(prefix):] if reason.startswith(prefix) else reason
    except Exception as err:
        return f"the model fails on {what}: {_reason(err)}"


def _forward(target: Probed, x: Tensor, features: FeatureConfig) -> Tensor:
    """The raw output on the declared input; on failure, say what the model reads instead."""
    kind = target.spec.input
    rate = f" at {features.sample_rate} Hz" if kind == "waveform" else ""
    raw = _attempt(target, x, f"a {tuple(x.shape)} {kind}, {_layout(kind)}{rate}")
    if isinstance(raw, Tensor):
        return raw
    line = f"{target.label}: {raw}"
    with torch.no_grad():
        for what, alternative, advice in _alternatives(kind, x, features):
            if isinstance(_attempt(target, alternative), Tensor):
                line += f"; it reads {what}: {advice}"
                break
    raise TargetModelError(line)


def _alternatives(kind: str, x: Tensor, features: FeatureConfig
                  ) -> Iterator[tuple[str, Tensor, str]]:
    """(what, input, advice) for the layouts a failing model may read instead."""
    if kind == "waveform":
        yield ("(B, F, T) features", probe_input("spectrogram", features),
               "use --target-input spectrogram")
        yield ("(B, 1, S) audio", x.detach().unsqueeze(1),
               "optin gives (B, S); export it to take (B, S) (add the unsqueeze(1) inside)")
    else:
        yield ("(B, S) audio", probe_input("waveform", features), "use --target-input waveform")


def _layout(kind: str) -> str:
    return "(B, S)" if kind == "waveform" else "(B, F, T)"


_ALLOCATION = re.compile(r"tried to allocate (\d+) bytes")
_NAMED = re.compile(r"^[\w.]+(Error|Exception|Interrupt):")


def one_line(err: BaseException) -> str:
    """An exception as one short line (a TorchScript error: its last line, the cause)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    line = lines[-1] if "TorchScript" in lines[0] and len(lines) > 1 else lines[0]
    if not isinstance(err, OptinError | UnsupportedOnnxModel) and not _NAMED.match(line):
        line = f"{type(err).__name__}: {line}"  # KeyError: 'y' says more than 'y'
    return line if len(line) <= MAX_REASON else line[:MAX_REASON - 3] + "..."


def _reason(err: BaseException) -> str:
    """:func:`one_line`, an allocation refused under :func:`memory_cap` said as such."""
    found = _ALLOCATION.search(str(err))
    if found is None and not isinstance(err, MemoryError):
        return one_line(err)
    asked = f" {format_bytes(int(found.group(1)))}" if found else ""
    return (f"it tries to allocate{asked} on a {PROBE_SECONDS:g} s input, over the probe's "
            f"memory budget ({format_bytes(memory_budget())})")


# --------------------------------------------------------------------------- the memory cap
def memory_budget() -> int:
    """Bytes of address space the probe may add: 4 GiB + 128 MiB per torch thread."""
    return PROBE_MEMORY_BYTES + PROBE_THREAD_BYTES * torch.get_num_threads()


def _address_space() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def memory_cap() -> Iterator[None]:
    """Cap the process's address space at its size + :func:`memory_budget` (Linux only;
    elsewhere, or under a tighter limit already, nothing changes)."""
    current = _address_space()
    if resource is None or current is None:
        yield
        return
    old = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + memory_budget()
    if old[1] != resource.RLIM_INFINITY:
        cap = min(cap, old[1])
    if old[0] != resource.RLIM_INFINITY and old[0] <= cap:
        yield
        return
    try:
        resource.setrlimit(resource.RLIMIT_AS, (cap, old[1]))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)
