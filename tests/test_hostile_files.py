"""Issue 24, a hostile user at the command line: audio at absurd rates and the files commands
write. Every refusal is one ``error:`` line naming the file or option, exit status 2, and
nothing written outside the named folder, nothing overwritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from tests.cli_checks import digests, refused
from tests.conftest import save_tiny_obfuscator, voiced

from optin.audio.io import (
    AudioError,
    check_resample_budget,
    decode,
    load_audio,
    prepare_wave,
    write_audio,
)
from optin.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
RANGE = "outside the accepted range 4000-384000 Hz"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_obfuscator(tmp_path_factory.mktemp("models") / "O")


def wav_claiming(path: Path, rate: int, seconds: float = 0.3) -> Path:
    """A 16 kHz 16-bit WAV whose header says ``rate`` (the canonical 44-byte header)."""
    sf.write(path, voiced(seconds), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[24:28] = rate.to_bytes(4, "little")
    data[28:32] = (2 * rate).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


# --- audio at absurd rates --------------------------------------------------------------------
@pytest.mark.parametrize("rate", [1, 3999, 384_001, 500_000])
@pytest.mark.parametrize("command", ["obfuscate", "anonymize", "stream", "data import"])
def test_a_header_rate_out_of_range_is_one_line_naming_the_file(work, model, capsys, rate,
                                                                 command):
    """A WAV whose header says 1 Hz once meant 16000x upsampling: a 2 GB allocation in
    obfuscate, 3.81 GiB in anonymize, a stream that ran on. Now refused from the header."""
    wav_claiming(work / "odd.wav", rate)
    (work / "odd.csv").write_text("id,path,speaker\nodd,odd.wav,s\n")
    before = digests(work)
    args = {"obfuscate": ["obfuscate", "--model", str(model), "odd.wav", "--out-dir", "o"],
            "anonymize": ["anonymize", "odd.wav", "--out-dir", "o"],
            "stream": ["stream", "--model", str(model), "--input", "odd.wav", "--output",
                       "o/s.wav"],
            "data import": ["data", "import", "csv", "odd.csv", "--out", "o/m.csv"]}[command]
    refused(args, capsys, f"odd.wav: sample rate {rate} Hz is {RANGE}")
    assert digests(work) == before


def test_decode_and_prepare_refuse_a_rate_before_any_work(tmp_path):
    bad = wav_claiming(tmp_path / "one.wav", 1)
    for read in (decode, load_audio):
        with pytest.raises(AudioError, match=rf"one\.wav: sample rate 1 Hz is {RANGE}$"):
            read(bad)
    with pytest.raises(AudioError, match=rf"^pipe: sample rate 1 Hz is {RANGE}$"):
        prepare_wave(voiced(0.1), 1, name="pipe")
    with pytest.raises(AudioError, match=r"^pipe \(resampled\): sample rate 10 Hz is "):
        prepare_wave(voiced(0.1), 16000, sample_rate=10, name="pipe")


def test_resampling_over_the_memory_budget_is_refused_naming_the_file(work, capsys,
                                                                      monkeypatch):
    """output samples = n * rate_out / rate_in, checked against MAX_RESAMPLED_SAMPLES before
    soxr runs (the budget is made small here so that a small file is over it)."""
    hour_at_4k = 3600 * 4000
    assert check_resample_budget(hour_at_4k, 4000, 16000, "x") == 4 * hour_at_4k  # 1 h: fine
    with pytest.raises(AudioError, match=r"^x: resampling 3600000 samples from 4000 Hz to "
                                         r"384000 Hz would make 345600000 samples \(1\.3 GiB\), "
                                         r"over the budget of 134217728 \(512 MiB\); split"):
        check_resample_budget(900 * 4000, 4000, 384000, "x")
    sf.write(work / "low.wav", voiced(0.3, rate=8000), 8000, subtype="PCM_16")
    monkeypatch.setattr("optin.audio.io.MAX_RESAMPLED_SAMPLES", 1000)
    before = digests(work)
    refused(["anonymize", "low.wav", "--out-dir", "o"], capsys,
            "low.wav: resampling 2400 samples from 8000 Hz to 16000 Hz would make 4800 "
            "samples", "over the budget of 1000")
    assert digests(work) == before


def test_a_feature_rate_out_of_range_is_refused_by_the_settings():
    from optin.audio.features import FeatureConfig
    from optin.errors import ConfigError

    with pytest.raises(ConfigError, match=r"FeatureConfig\.sample_rate: expected an integer in "
                                          r"\[4000, 384000\], got 1$"):
        FeatureConfig(sample_rate=1)


# --- outputs never over inputs ----------------------------------------------------------------
def one_file_writers(model: Path) -> dict[str, tuple[list[str], str]]:
    """Each command that writes one file, pointed at one of its inputs: (args, the input)."""
    m = "corpus/manifest.csv"
    return {
        "content --json M": (["content", m, "--json", m], m),
        "content --json P": (["content", m, "--protected", "p.csv", "--json", "p.csv"],
                             "p.csv"),
        "content --json AUDIO": (["content", m, "--json", "corpus/wav/utt 2.wav"],
                                 "corpus/wav/utt 2.wav"),
        "gauge --json M": (["gauge", m, "--attribute", "gender", "--json", m], m),
        "gauge --json MODEL": (["gauge", m, "--attribute", "gender", "--obfuscator", str(model),
                                "--json", str(model / "config.json")],
                               str(model / "config.json")),
        "export --out MODEL": (["export", "--model", str(model), "--out",
                                str(model / "model.safetensors")],
                               str(model / "model.safetensors")),
        "stream --output INPUT": (["stream", "--model", str(model), "--input", "good.wav",
                                   "--output", "good.wav"], "good.wav"),
        "data import --out SOURCE": (["data", "import", "csv", m, "--out", m], m),
    }


@pytest.mark.parametrize("case", list(one_file_writers(Path("O"))))
def test_an_output_over_an_input_is_refused_by_every_command(work, model, capsys, case):
    (work / "p.csv").write_bytes((work / "corpus" / "manifest.csv").read_bytes())
    args, victim = one_file_writers(model)[case]
    before, model_before = digests(work), digests(model)
    option = args[len(args) - 2 - args[::-1].index(victim)]
    if victim.startswith(str(model)):  # a file of the model: nothing is written in its folder
        refused(args, capsys, f"error: {option} {victim}: is inside {model}, which is a "
                              "checkpoint folder; models are never written into")
        assert digests(work) == before and digests(model) == model_before
        return
    line = refused(args, capsys, "would overwrite the input")
    assert line == (f"error: the output {victim} would overwrite the input "
                    f"{Path(victim).resolve() if case.endswith('AUDIO') else victim}; "
                    f"choose another {option}")
    assert digests(work) == before and digests(model) == model_before


# --- SIGTERM is Ctrl-C for the atomic writer --------------------------------------------------
def test_sigterm_during_stream_output_leaves_no_temporary(work, model):
    """The real CLI streams a pipe that does not end into a file and is sent SIGTERM while the
    temporary output is open: it is removed, the exit is 143 with one line, no traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "optin.cli", "stream", "--model", str(model),
                             "--input", "-", "--output", "out/s.wav"], cwd=work, env=env,
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"\x00\x10" * 16000)  # one second; the pipe stays open
        proc.stdin.flush()
        tmp = work / "out" / f".s.wav.{proc.pid}.tmp"
        deadline = time.time() + 120
        while not tmp.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert tmp.exists(), "the stream never opened its output"
        time.sleep(0.2)  # inside run_stream, waiting on the pipe
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = err.decode().splitlines()
    assert proc.returncode == 143, err
    assert "Traceback" not in err.decode()
    assert lines[-1] == "terminated; rerun the same command to resume"
    assert [line for line in lines if not line.startswith("stream: ")] == lines[-1:]
    assert list((work / "out").iterdir()) == []


# --- output format from the suffix ------------------------------------------------------------
@pytest.mark.parametrize(("suffix", "fmt"), [(".wav", "WAV"), (".flac", "FLAC"),
                                             (".ogg", "OGG"), (".mp3", "MP3")])
def test_stream_writes_the_format_its_suffix_names(work, model, capsys, suffix, fmt):
    assert main(["stream", "--model", str(model), "--input", "good.wav", "--output",
                 f"o/s{suffix}", "-q"]) == 0
    assert sf.info(str(work / "o" / f"s{suffix}")).format == fmt
    assert sorted(p.name for p in (work / "o").iterdir()) == [f"s{suffix}"]


@pytest.mark.parametrize("name", ["o/s.m4a", "o/s.txt", "o/s"])
def test_stream_refuses_a_suffix_it_cannot_write(work, model, capsys, name):
    before = digests(work)
    line = refused(["stream", "--model", str(model), "--input", "good.wav", "--output", name],
                   capsys, f"--output {name}: cannot write", "give one of .wav, .flac, .ogg")
    assert ".mp3" in line
    assert digests(work) == before and not (work / "o").exists()


def test_write_audio_refuses_a_suffix_it_cannot_write(tmp_path):
    with pytest.raises(AudioError, match=r"x\.m4a: cannot write '\.m4a' files; give one of "):
        write_audio(tmp_path / "x.m4a", voiced(0.1))
    assert list(tmp_path.iterdir()) == []


# --- options that do not apply are refused ----------------------------------------------------
@pytest.mark.parametrize(("extra", "message"), [
    (["--input", "good.wav", "--seconds", "5"],
     "error: --seconds: applies to --input mic only (it ends the recording); --input good.wav "
     "ends by itself"),
    (["--input", "-", "--seconds", "5"], "error: --seconds: applies to --input mic only"),
    (["--input", "good.wav", "--rate", "8000"],
     "error: --rate: applies to raw PCM (--input -, --output -) and the microphone; --input "
     "good.wav and --output o/s.wav are files, read and written at the model's rate"),
])
def test_stream_options_that_do_not_apply_are_refused(work, model, capsys, extra, message):
    before = digests(work)
    line = refused(["stream", "--model", str(model), "--output", "o/s.wav", *extra], capsys)
    assert line.startswith(message)
    assert digests(work) == before and not (work / "o").exists()


# --- a batch where every item failed ----------------------------------------------------------
class SilentRecognizer:
    """Stands in for pocketsphinx: the refusal comes before any word is heard."""

    name = "stub"

    def transcribe(self, wave, sample_rate):
        return ""


def test_content_on_a_manifest_whose_audio_is_all_missing_exits_2(work, capsys, monkeypatch):
    monkeypatch.setattr("optin.evaluation.content.Recognizer", SilentRecognizer)
    for wav in (work / "corpus" / "wav").iterdir():
        wav.unlink()
    before = digests(work)
    line = refused(["content", "corpus/manifest.csv", "--json", "o/report.json"], capsys,
                   "error: nothing could be read: all 2 rows of split 'test' failed (utt 2: "
                   "original: ", "utt 2.wav: file does not exist; and 1 more)")
    assert line.endswith("and 1 more)")
    assert digests(work) == before and not (work / "o").exists()  # the folder it made: gone


@pytest.mark.parametrize("command", ["obfuscate", "anonymize", "data features"])
def test_every_batch_command_exits_2_when_every_item_failed(work, model, capsys, command):
    for wav in (work / "corpus" / "wav").iterdir():
        wav.write_bytes(b"")  # all four unreadable
    args = {"obfuscate": ["obfuscate", "--model", str(model), "corpus/manifest.csv",
                          "--out-dir", "o", "--on-error", "skip"],
            "anonymize": ["anonymize", "corpus/manifest.csv", "--out-dir", "o",
                          "--on-error", "skip"],
            "data features": ["data", "features", "corpus/manifest.csv", "--workers", "1",
                              "--on-error", "skip", "--cache-dir", "o"]}[command]
    outcome = {"obfuscate": "nothing was obfuscated", "anonymize": "nothing was anonymized",
               "data features": "no features were computed"}[command]
    assert main([*args, "-q"]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors == [line for line in captured.err.splitlines() if line], captured.err
    assert len(errors) == 1 and errors[0].startswith(f"error: {outcome}: all 4 rows failed "
                                                     "(utt 0: ")
    assert "file is empty" in errors[0] and errors[0].endswith("; and 3 more)")
    assert not (work / "o" / "manifest.csv").exists()


# --- a model whose seal was removed -----------------------------------------------------------
def test_a_model_whose_seal_was_removed_and_rate_edited_is_refused(work, tmp_path_factory,
                                                                    capsys):
    folder = save_tiny_obfuscator(tmp_path_factory.mktemp("models") / "edited")
    path = folder / "config.json"
    config = json.loads(path.read_text())
    del config["config_sha256"]
    config["features"]["sample_rate"] = 8000
    path.write_text(json.dumps(config))
    before = digests(work)
    for args in (["obfuscate", "--model", str(folder), "good.wav", "--out-dir", "o"],
                 ["stream", "--model", str(folder), "--input", "good.wav", "--output", "s.wav"],
                 ["export", "--model", str(folder), "--out", "x.onnx"]):
        refused(args, capsys, f"error: {path}: field 'config_sha256' is missing, but format 2 "
                              "checkpoints are sealed")
    config["format"] = 1  # relabelled as a checkpoint from before the seal
    path.write_text(json.dumps(config))
    refused(["stream", "--model", str(folder), "--input", "good.wav", "--output", "s.wav"],
            capsys, f"error: {path}: field 'format' says 1, but model.safetensors was written "
                    "as format 2")
    assert {k: v for k, v in digests(work).items() if not k.startswith("o/")} == before
