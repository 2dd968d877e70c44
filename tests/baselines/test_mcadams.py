"""McAdams anonymization: pole angles move to angle**alpha, the alpha draws, the batch job, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy.linalg import solve_toeplitz
from scipy.signal import lfilter
from tests.conftest import voiced, write_tiny_corpus

from optin.audio.io import AudioError, load_audio
from optin.baselines.anonymize import anonymize_inputs, anonymize_manifest
from optin.baselines.mcadams import McAdamsConfig, mcadams
from optin.cli import main
from optin.corpora.manifest import Manifest
from optin.files import OutputError

SR = 16000
FORMANTS_HZ = np.array([500.0, 1500.0, 4000.0])  # below, near and above 1 rad (2546 Hz)
RADII = np.array([0.97, 0.96, 0.95])


def synthetic_vowel(seconds: float = 0.5, f0: float = 110.0) -> np.ndarray:
    """A pulse train at ``f0`` through the all-pole filter with poles at FORMANTS_HZ, RADII."""
    angles = 2 * np.pi * FORMANTS_HZ / SR
    poles = np.concatenate([RADII * np.exp(1j * angles), RADII * np.exp(-1j * angles)])
    pulses = np.zeros(int(seconds * SR))
    pulses[:: int(SR / f0)] = 1.0
    return lfilter([1.0], np.real(np.poly(poles)), pulses)


def formant_poles(wave: np.ndarray, count: int = 3, order: int = 20) -> np.ndarray:
    """(angle, radius) of the ``count`` strongest LPC poles (largest radius) of 64 ms
    mid-signal, by increasing angle: (count, 2).

    Written independently of optin (scipy Toeplitz solve and numpy roots). The three formant
    poles have radius above 0.93 here; the poles that model the excitation stay below 0.88.
    """
    mid = len(wave) // 2
    seg = wave[mid - 512 : mid + 512] * np.hamming(1024)
    r = np.correlate(seg, seg, "full")[len(seg) - 1 : len(seg) + order]
    lpc = np.concatenate([[1.0], solve_toeplitz(r[:order], -r[1:])])
    poles = np.roots(lpc)
    poles = poles[poles.imag > 0]
    strongest = poles[np.argsort(-np.abs(poles))[:count]]
    strongest = strongest[np.argsort(np.angle(strongest))]
    return np.stack([np.angle(strongest), np.abs(strongest)], axis=1)


@pytest.mark.parametrize("alpha", [0.8, 0.6])
def test_formant_poles_move_to_angle_power_alpha(alpha):
    x = synthetic_vowel()
    true_angles = 2 * np.pi * FORMANTS_HZ / SR
    before = formant_poles(x)
    # the estimate is good enough to judge: within 2 Hz of the true formants
    np.testing.assert_allclose(before[:, 0] * SR / (2 * np.pi), FORMANTS_HZ, atol=2.0)
    np.testing.assert_allclose(before[:, 1], RADII, atol=0.005)
    y = mcadams(x, SR, alpha=alpha)
    expected = true_angles**alpha
    after = formant_poles(y)
    # Tolerance 25 Hz: the residual keeps some of the pulse train's harmonic structure, which
    # pulls the re-estimated formants by up to about 12 Hz (measured). The smallest expected
    # move is 168 Hz (1500 Hz at alpha 0.8), so staying put or moving by angle * alpha fails.
    moved_hz = np.abs(expected - true_angles) * SR / (2 * np.pi)
    assert moved_hz.min() > 150
    np.testing.assert_allclose(after[:, 0] * SR / (2 * np.pi), expected * SR / (2 * np.pi),
                               atol=25.0)
    # radii (bandwidths) kept: within 0.02 (measured at most 0.015, the 4 kHz pole at alpha
    # 0.6, whose estimate the warped excitation poles next to it pull down)
    np.testing.assert_allclose(after[:, 1], RADII, atol=0.02)


@pytest.mark.parametrize("n", [1, 100, 16001])
def test_output_length_dtype_and_peak(n):
    x = voiced(seconds=n / SR + 0.01)[:n] if n > 1 else np.array([0.5])
    y = mcadams(x, SR)
    assert y.shape == (n,) and y.dtype == np.float32
    assert np.isfinite(y).all()
    assert np.max(np.abs(y)) == pytest.approx(1.0, abs=1e-6)


def test_alpha_one_gives_the_input_back():
    x = voiced(seconds=0.7).astype(np.float64)
    y = mcadams(x, SR, alpha=1.0)
    assert np.max(np.abs(y - x / np.max(np.abs(x)))) < 1e-5
    # while alpha 0.8 changes it a lot
    assert np.max(np.abs(mcadams(x, SR, alpha=0.8) - x / np.max(np.abs(x)))) > 0.1


def test_silence_gives_zeros_not_nan():
    x = voiced(seconds=1.0)
    x[4000:12000] = 0.0  # half a second of digital silence
    y = mcadams(x, SR)
    assert np.isfinite(y).all()
    assert np.max(np.abs(y[4400:11600])) < 1e-6  # silent where the input is (beyond a frame)
    assert not mcadams(np.zeros(5000), SR).any()
    assert np.isfinite(mcadams(np.full(4000, 1e-30), SR)).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"wave": np.zeros((2, 100))}, "shape (2, 100)"),
    ({"wave": np.zeros(0)}, "no samples"),
    ({"wave": np.array([0.1, np.nan, 0.2])}, "1 sample(s) are NaN"),
    ({"alpha": 0.0}, "alpha: McAdams coefficient must be in (0, 2]"),
    ({"alpha": 2.5}, "got 2.5"),
    ({"alpha": float("nan")}, "alpha"),
    ({"lpc_order": 0}, "lpc_order"),
    ({"sample_rate": 800}, "too few for lpc_order 20"),
])
def test_bad_input_is_named(kwargs, message):
    args = {"wave": voiced(seconds=0.1), "sample_rate": SR, **kwargs}
    error = AudioError if "wave" in kwargs else ValueError
    with pytest.raises(error) as info:
        mcadams(**args)
    assert message in str(info.value)


def test_alpha_draws_are_deterministic_per_speaker_or_utterance():
    fixed = McAdamsConfig(alpha=0.7)
    assert fixed.alpha_for("s1", "u1") == fixed.alpha_for("s2", "u9") == 0.7
    per_speaker = McAdamsConfig(alpha_range=(0.5, 0.9), per="speaker", seed=3)
    same = McAdamsConfig.from_dict(per_speaker.to_dict())
    assert same == per_speaker
    draws = [per_speaker.alpha_for(f"spk{i}", "u") for i in range(200)]
    assert draws == [same.alpha_for(f"spk{i}", "other") for i in range(200)]
    assert min(draws) >= 0.5 and max(draws) < 0.9
    assert min(draws) < 0.55 and max(draws) > 0.85  # spread over the range
    assert len(set(draws)) == 200
    other_seed = McAdamsConfig(alpha_range=(0.5, 0.9), per="speaker", seed=4)
    assert other_seed.alpha_for("spk0", "u") != draws[0]
    per_utt = McAdamsConfig(alpha_range=(0.5, 0.9), per="utterance")
    assert per_utt.alpha_for("a", "u1") == per_utt.alpha_for("b", "u1")
    assert per_utt.alpha_for("a", "u1") != per_utt.alpha_for("a", "u2")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"alpha": 3.0}, "alpha:"),
    ({"alpha_range": (0.9, 0.5)}, "alpha_range: low 0.9 is above high 0.5"),
    ({"alpha_range": (0.0, 0.5)}, "alpha_range: expected a list of 2 numbers in (0, 2]"),
    ({"alpha": "x"}, "McAdamsConfig.alpha: expected a number in (0, 2], got 'x'"),
    ({"per": "corpus"}, "per:"),
    ({"lpc_order": -1}, "lpc_order"),
])
def test_bad_config_is_named(kwargs, message):
    with pytest.raises(ValueError) as info:
        McAdamsConfig(**kwargs)
    assert message in str(info.value)
    with pytest.raises(ValueError, match="unknown McAdamsConfig setting"):
        McAdamsConfig.from_dict({"alpha": 0.8, "beta": 1})


def test_manifest_job_writes_a_copy_resumes_and_reports_failures(tmp_path):
    csv = write_tiny_corpus(tmp_path / "corpus", broken=True)
    manifest = Manifest.read(csv)
    config = McAdamsConfig(alpha_range=(0.5, 0.9), per="speaker", seed=1)
    out = tmp_path / "anon"
    with pytest.raises(AudioError, match=r"row 'empty'.*empty\.wav"):
        anonymize_manifest(manifest, out, config, progress=False)
    report = anonymize_manifest(manifest, out, config, progress=False, on_error="skip")
    assert (report.written, report.reused, [f[0] for f in report.failed]) == (0, 4, ["empty"])
    (out / "audio" / "utt_2.wav").unlink()  # as if killed before this row
    report = anonymize_manifest(manifest, out, config, progress=False, on_error="skip")
    assert (report.written, report.reused, len(report.failed)) == (1, 3, 1)
    assert "anonymized 1, already done 3, failed 1" in report.summary()

    copy = Manifest.read(out / "manifest.csv")
    assert copy.column("id") == [f"utt {i}" for i in range(4)]
    for col in ("speaker", "gender", "split"):
        assert copy.column(col) == manifest.column(col)[:4]
    alphas = {row["speaker"]: row["alpha"] for row in copy.rows}
    assert all(row["alpha"] == alphas[row["speaker"]] for row in copy.rows)  # one per speaker
    for row, src in zip(copy.rows, manifest.rows, strict=False):
        path = copy.audio_path(row)
        assert path.parent == (out / "audio").resolve()
        alpha = config.alpha_for(src["speaker"], src["id"])
        assert float(row["alpha"]) == pytest.approx(alpha, abs=1e-6)
        expected = mcadams(load_audio(manifest.audio_path(src)), SR, alpha)
        written, rate = sf.read(path)
        assert rate == SR and len(written) == len(expected)
        assert np.max(np.abs(written - expected)) < 1e-4  # 16-bit quantisation

    with pytest.raises(OutputError, match=r"anon holds files anonymized with other settings "
                       r"\(config.seed: 1 there, 2 now\)"):
        anonymize_manifest(manifest, out, McAdamsConfig(alpha_range=(0.5, 0.9), per="speaker",
                                                        seed=2), progress=False)


def test_workers_give_the_same_files(tmp_path):
    csv = write_tiny_corpus(tmp_path / "corpus")
    serial = anonymize_inputs([csv], tmp_path / "serial", progress=False)
    parallel = anonymize_inputs([csv], tmp_path / "parallel", progress=False, workers=2)
    assert serial.written == parallel.written == 4
    for name in ("utt_0", "utt_3"):
        a, _ = sf.read(tmp_path / "serial" / "audio" / f"{name}.wav")
        b, _ = sf.read(tmp_path / "parallel" / "audio" / f"{name}.wav")
        np.testing.assert_array_equal(a, b)
    assert (Manifest.read(tmp_path / "parallel" / "manifest.csv").column("id")
            == Manifest.read(csv).column("id"))


def test_cli_anonymizes_files_and_a_manifest(tmp_path, capsys):
    csv = write_tiny_corpus(tmp_path / "corpus")
    wavs = sorted((tmp_path / "corpus" / "wav").glob("*.wav"))[:2]
    assert main(["anonymize", *map(str, wavs), "--out-dir", str(tmp_path / "files"),
                 "--alpha", "0.7", "-q"]) == 0
    assert "anonymized 2, already done 0, failed 0" in capsys.readouterr().out
    for wav in wavs:
        assert sf.info(tmp_path / "files" / wav.name).frames == sf.info(wav).frames

    args = ["anonymize", "--method", "mcadams", str(csv), "--out-dir", str(tmp_path / "m"),
            "--alpha-range", "0.5", "0.9", "--per", "utterance", "--seed", "5", "-q"]
    assert main(args) == 0
    assert "anonymized 4, already done 0" in capsys.readouterr().out
    assert main(args) == 0
    assert "anonymized 0, already done 4" in capsys.readouterr().out
    assert len(set(Manifest.read(tmp_path / "m" / "manifest.csv").column("alpha"))) == 4

    assert main(["anonymize", str(tmp_path / "missing.wav"), "--out-dir",
                 str(tmp_path / "x"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.wav" in err and err.count("\n") == 1
    assert main(["anonymize", str(csv), str(wavs[0]), "--out-dir", str(tmp_path / "y")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["anonymize", str(wavs[0]), "--out-dir", str(tmp_path / "z"),
                 "--alpha", "8"]) == 2
    assert "McAdamsConfig.alpha: expected a number in (0, 2], got 8.0" in capsys.readouterr().err
