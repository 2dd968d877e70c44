"""McAdams-coefficient anonymization, the VoicePrivacy Challenge baseline B2.

Each 20 ms frame (hop 10 ms) is analysed by linear prediction (LPC, autocorrelation method);
the angle ``phi`` of every complex pole of the LPC filter becomes ``phi ** alpha`` (clipped to
``[0, pi]``, radius kept, conjugate pairs stay pairs), real poles stay. The frame's prediction
residual is passed through the modified all-pole filter, windowed again and overlap-added; the
result is scaled to a peak of 1. With ``alpha < 1`` formants below 1 rad (2546 Hz at 16 kHz)
move up and those above move down; ``alpha = 1`` gives the input back.

Two deliberate differences from the challenge's reference script, both only at the edges of the
method: the Hann window is the periodic one (``scipy.signal.get_window``), so the squared
analysis-synthesis windows add up to exactly 1 at a hop of half a frame (the symmetric one
ripples by about 0.5 %); and the signal is zero-padded by ``frame - hop`` samples on both sides,
so every input sample lies under full window overlap and the output has the input's length
(the reference drops the incomplete last frame and returns NaN for input shorter than a frame).

The work is vectorised over frames: autocorrelations by FFT, Levinson-Durbin, pole finding
(batched eigenvalues of companion matrices) and the residual filter act on all frames at once;
only the all-pole synthesis filter runs frame by frame (``scipy.signal.lfilter``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from scipy.signal import get_window, lfilter

from optin.audio.io import AudioError
from optin.errors import ConfigError
from optin.settings import Rule, StrictConfig, at_least, between, check_fields

ALPHA_MIN = 0.0  # exclusive
ALPHA_MAX = 2.0  # inclusive; larger values send every pole above 1 rad to pi
ALPHA_RANGE = between(ALPHA_MIN, ALPHA_MAX, low_open=True)
FRAME_MS = 20.0
HOP_MS = 10.0
SILENT_ENERGY = 1e-20  # frames whose zero-lag autocorrelation is below this pass as silence

Per = Literal["speaker", "utterance"]


def mcadams(
    wave: np.ndarray,
    sample_rate: int,
    alpha: float = 0.8,
    lpc_order: int = 20,
    name: str = "audio",
) -> np.ndarray:
    """Anonymize a signal by moving its LPC pole angles ``phi -> phi ** alpha``.

    Args:
        wave: (N,) mono samples, float (any scale), all finite, N >= 1.
        sample_rate: in Hz; a 20 ms frame must hold more than ``lpc_order`` samples.
        alpha: McAdams coefficient, ``0 < alpha <= 2``; 1 changes nothing, the challenge
            uses 0.8 or draws it from U(0.5, 0.9).
        lpc_order: order of the per-frame linear prediction (20 in the challenge).
        name: how error messages call the signal.

    Returns:
        (N,) float32 with peak absolute value 1 (all zeros for an all-zero input).

    Raises:
        AudioError: ``wave`` is not 1-D, empty, or holds NaN/inf.
        ValueError: ``alpha``, ``lpc_order`` or ``sample_rate`` out of range.
    """
    x = _check_wave(wave, name)
    frame, hop = _check_settings(sample_rate, alpha, lpc_order)
    pad = frame - hop
    padded = np.concatenate([np.zeros(pad), x, np.zeros(pad + frame)])
    n_frames = 1 + (len(x) + pad) // hop  # the last frame starts at or after the input's end
    window = np.sqrt(get_window("hann", frame) / (get_window("hann", frame).sum() / hop))
    starts = np.arange(n_frames) * hop
    frames = padded[starts[:, None] + np.arange(frame)] * window  # (M, L)

    lpc = lpc_coefficients(frames, lpc_order)  # (M, p + 1), lpc[:, 0] == 1
    sounding = np.einsum("ml,ml->m", frames, frames) > SILENT_ENERGY  # (M,)
    shaped = sounding & lpc[:, 1:].any(axis=1)  # frames with poles away from 0
    new_lpc = lpc.copy()
    if shaped.any():
        new_lpc[shaped] = shift_pole_angles(lpc[shaped], alpha)
    residual = fir_filter(lpc, frames)  # (M, L): A(z) applied to each frame
    out = np.zeros(len(padded))
    for m in np.flatnonzero(sounding):  # silent frames add nothing
        out[starts[m] : starts[m] + frame] += lfilter([1.0], new_lpc[m], residual[m]) * window
    out = out[pad : pad + len(x)]
    peak = float(np.max(np.abs(out)))
    return (out / peak if peak > 0 else out).astype(np.float32)


def lpc_coefficients(frames: np.ndarray, order: int) -> np.ndarray:
    """Linear prediction by the autocorrelation method and Levinson-Durbin, for every frame.

    Args:
        frames: (M, L) windowed frames.
        order: prediction order p < L.

    Returns:
        (M, p + 1) float64 coefficients ``[1, a_1, ..., a_p]`` of ``A(z)`` (the residual is
        ``A(z) x``); silent frames (zero energy) get ``[1, 0, ..., 0]``.
    """
    frames = np.asarray(frames, dtype=np.float64)
    n_fft = 1 << int(np.ceil(np.log2(2 * frames.shape[1])))
    spectrum = np.fft.rfft(frames, n_fft, axis=1)
    r = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, n_fft, axis=1)[:, : order + 1]  # (M, p+1)
    silent = r[:, 0] <= SILENT_ENERGY
    r[silent] = 0.0
    r[silent, 0] = 1.0
    r[:, 0] *= 1.0 + 1e-9  # white-noise floor: keeps the recursion stable for pure tones
    a = np.zeros_like(r)
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        acc = r[:, i] + np.einsum("mj,mj->m", a[:, 1:i], r[:, i - 1 : 0 : -1])
        k = np.clip(-acc / err, -1.0 + 1e-12, 1.0 - 1e-12)  # reflection coefficient
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1 : 0 : -1]
        a[:, i] = k
        err = err * (1.0 - k * k)
    a[silent, 1:] = 0.0
    return a


def shift_pole_angles(lpc: np.ndarray, alpha: float) -> np.ndarray:
    """The LPC polynomials whose complex pole angles ``phi`` become ``phi ** alpha``.

    Args:
        lpc: (M, p + 1) coefficients with ``lpc[:, 0] == 1``.
        alpha: McAdams coefficient (> 0).

    Returns:
        (M, p + 1) real coefficients; real poles and all radii unchanged.
    """
    poles = lpc_poles(lpc)  # (M, p)
    angle = np.angle(poles)
    complex_pole = poles.imag != 0.0
    new_angle = np.sign(angle) * np.clip(np.abs(angle) ** alpha, 0.0, np.pi)
    moved = np.abs(poles) * np.exp(1j * new_angle)
    poles = np.where(complex_pole, moved, poles)
    return poly_from_roots(poles)


def lpc_poles(lpc: np.ndarray) -> np.ndarray:
    """Roots of ``z^p + a_1 z^(p-1) + ... + a_p`` (the poles of ``1 / A(z)``) per row.

    Args:
        lpc: (M, p + 1) with ``lpc[:, 0] == 1``.

    Returns:
        (M, p) complex128; conjugate pairs are exact conjugates, real poles have zero
        imaginary part (eigenvalues of the real companion matrix).
    """
    m, p = lpc.shape[0], lpc.shape[1] - 1
    companion = np.zeros((m, p, p))
    companion[:, 0, :] = -lpc[:, 1:] / lpc[:, :1]
    companion[:, np.arange(1, p), np.arange(p - 1)] = 1.0
    return np.linalg.eigvals(companion).astype(np.complex128)


def poly_from_roots(roots: np.ndarray) -> np.ndarray:
    """Monic polynomial coefficients from roots, per row (a batched ``numpy.poly``).

    Args:
        roots: (M, p) complex, closed under conjugation within each row.

    Returns:
        (M, p + 1) float64, leading coefficient 1.
    """
    m, p = roots.shape
    coeffs = np.zeros((m, p + 1), dtype=np.complex128)
    coeffs[:, 0] = 1.0
    for j in range(p):  # multiply by (z - r_j)
        coeffs[:, 1 : j + 2] = coeffs[:, 1 : j + 2] - roots[:, j : j + 1] * coeffs[:, : j + 1]
    return coeffs.real.copy()


def fir_filter(coeffs: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Each frame filtered by its own FIR filter (``lfilter(coeffs[m], 1, frames[m])``).

    Args:
        coeffs: (M, K) filter taps.
        frames: (M, L) signals (zero initial state).

    Returns:
        (M, L) float64.
    """
    out = coeffs[:, :1] * frames
    for k in range(1, coeffs.shape[1]):
        out[:, k:] += coeffs[:, k : k + 1] * frames[:, :-k]
    return out


@dataclass(frozen=True)
class McAdamsConfig(StrictConfig):
    """How the McAdams coefficient is chosen for each utterance.

    ``alpha_range=None``: every utterance gets ``alpha``. Otherwise alpha is drawn from
    U(low, high) once per speaker or per utterance (``per``), as in the 2022/2024 challenges;
    the draw hashes (seed, per, speaker or utterance id), so it is the same in every process
    and run, whatever the order of the rows.
    """

    alpha: float = 0.8
    alpha_range: tuple[float, float] | None = None
    per: Per = "utterance"
    seed: int = 0
    lpc_order: int = 20

    RANGES: ClassVar[dict[str, Rule]] = {"alpha": ALPHA_RANGE, "alpha_range": ALPHA_RANGE,
                                         "lpc_order": at_least(1)}

    def __post_init__(self) -> None:
        check_fields(self)
        if self.alpha_range is not None:
            low, high = (float(v) for v in self.alpha_range)
            if low > high:
                raise ConfigError(f"McAdamsConfig.alpha_range: low {low} is above high {high}")
            object.__setattr__(self, "alpha_range", (low, high))

    def alpha_for(self, speaker: str, utterance: str) -> float:
        """The coefficient of one utterance of ``speaker`` (ids as in the manifest)."""
        if self.alpha_range is None:
            return float(self.alpha)
        low, high = self.alpha_range
        key = speaker if self.per == "speaker" else utterance
        digest = hashlib.sha256(f"mcadams|{self.seed}|{self.per}|{key}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
        return low + u * (high - low)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["alpha_range"] = list(self.alpha_range) if self.alpha_range else None
        return out

    def describe(self) -> str:
        """One line for logs, e.g. ``McAdams alpha ~ U(0.5, 0.9) per speaker, seed 0``."""
        if self.alpha_range is None:
            return f"McAdams alpha {self.alpha:g}"
        low, high = self.alpha_range
        return f"McAdams alpha ~ U({low:g}, {high:g}) per {self.per}, seed {self.seed}"


def _check_wave(wave: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(wave)
    if x.ndim != 1:
        raise AudioError(f"{name}: expected mono samples of shape (N,), got shape {x.shape}")
    if x.size == 0:
        raise AudioError(f"{name}: holds no samples")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise AudioError(f"{name}: expected real-valued samples, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise AudioError(f"{name}: {bad} sample(s) are NaN or infinite")
    return x


def _check_alpha(alpha: float, field: str) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
        raise ValueError(f"{field}: expected a number, got {alpha!r}")
    if not (ALPHA_MIN < float(alpha) <= ALPHA_MAX):
        raise ValueError(f"{field}: McAdams coefficient must be in ({ALPHA_MIN:g}, "
                         f"{ALPHA_MAX:g}], got {alpha!r}")


def _check_order(order: int) -> None:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"lpc_order: expected a positive integer, got {order!r}")


def _check_settings(sample_rate: int, alpha: float, lpc_order: int) -> tuple[int, int]:
    """Frame and hop lengths in samples, after checking every setting."""
    _check_alpha(alpha, "alpha")
    _check_order(lpc_order)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or sample_rate <= 0:
        raise ValueError(f"sample_rate: expected a positive integer (Hz), got {sample_rate!r}")
    frame, hop = int(FRAME_MS * sample_rate / 1000), int(HOP_MS * sample_rate / 1000)
    if frame <= lpc_order or hop < 1:
        raise ValueError(f"sample_rate: a {FRAME_MS:g} ms frame at {sample_rate} Hz holds "
                         f"{frame} samples, too few for lpc_order {lpc_order}")
    return frame, hop
