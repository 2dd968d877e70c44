"""A hostile but realistic user at the command line: every refusal is one ``error:`` line that
names the path and the cause, exit status 2, no traceback, and nothing changed or left behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.cli_checks import digests, refused
from tests.conftest import save_tiny_obfuscator

from optin.cli import error_line, main
from optin.errors import ConfigError, OptinError

CONFIG = Path(__file__).parents[1] / "configs" / "builtin-fig3a.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny obfuscators: two different ones and a NaN one (with a matching SHA-256)."""
    root = tmp_path_factory.mktemp("models")
    return {"O": save_tiny_obfuscator(root / "O", seed=0),
            "O2": save_tiny_obfuscator(root / "O2", seed=1),
            "NAN": save_tiny_obfuscator(root / "NAN", fill=float("nan"))}


# --- 1: output over input ---------------------------------------------------------------------
@pytest.mark.parametrize("command", ["anonymize", "obfuscate"])
def test_output_over_an_input_is_refused(work, models, capsys, command):
    model = ["--model", str(models["O"])] if command == "obfuscate" else []
    (work / "d").mkdir()
    (work / "d" / "good.wav").write_bytes((work / "good.wav").read_bytes())
    before = digests(work)
    line = refused([command, *model, "d/good.wav", "--out-dir", "d"], capsys)
    assert line == ("error: the output d/good.wav would overwrite the input d/good.wav; "
                    "choose another --out-dir")
    line = refused([command, *model, "corpus/manifest.csv", "--out-dir", "corpus"], capsys)
    assert line == ("error: the output corpus/manifest.csv would overwrite the input "
                    "corpus/manifest.csv; choose another --out-dir")
    assert digests(work) == before


def test_importing_a_table_over_itself_is_refused(work, capsys):
    before = digests(work)
    line = refused(["data", "import", "csv", "corpus/manifest.csv", "--out",
                    "corpus/manifest.csv"], capsys)
    assert line == ("error: the output corpus/manifest.csv would overwrite the input "
                    "corpus/manifest.csv; choose another --out")
    assert digests(work) == before


# --- 2: stale results -------------------------------------------------------------------------
def test_obfuscate_into_a_folder_made_by_another_model_is_refused(work, models, capsys):
    args = ["obfuscate", "corpus/manifest.csv", "--out-dir", "oo", "--griffin-lim-iters", "2"]
    assert main([*args, "--model", str(models["O"]), "-q"]) == 0
    assert "obfuscated 4, already done 0" in capsys.readouterr().out
    before = digests(work)
    line = refused([*args, "--model", str(models["O2"])], capsys,
                   "oo holds files obfuscated with other settings", "model_weights_sha256")
    assert line.endswith("use the same settings to resume, or another --out-dir")
    assert digests(work) == before
    assert main([*args, "--model", str(models["O"]), "-q"]) == 0
    assert "obfuscated 0, already done 4" in capsys.readouterr().out


# --- 3: NaN weights ---------------------------------------------------------------------------
def test_a_model_with_nan_weights_is_refused(work, models, capsys):
    weights = models["NAN"] / "model.safetensors"
    before = digests(work)
    for args in (["obfuscate", "--model", str(models["NAN"]), "good.wav", "--out-dir", "n"],
                 ["stream", "--model", str(models["NAN"]), "--input", "good.wav",
                  "--output", "n/s.wav"],
                 ["export", "--model", str(models["NAN"]), "--out", "n/o.onnx"]):
        refused(args, capsys, f"error: {weights}: tensor '", "NaN or infinite")
    assert digests(work) == before


# --- 7: file-system errors --------------------------------------------------------------------
def commands(models: dict[str, Path], out: str) -> dict[str, list[str]]:
    """Every command that writes, with its output under ``out``."""
    model = str(models["O"])
    return {
        "anonymize": ["anonymize", "good.wav", "--out-dir", out],
        "obfuscate": ["obfuscate", "--model", model, "good.wav", "--out-dir", out],
        "data synth": ["data", "synth", out, "--quick"],
        "data import": ["data", "import", "csv", "corpus/manifest.csv", "--out", f"{out}/m.csv"],
        "data split": ["data", "split", "corpus/manifest.csv", "--protocol", "same-speakers",
                       "--out", f"{out}/m.csv"],
        "train target": ["train", "target", "--manifest", "corpus/manifest.csv",
                         "--attribute", "gender", "--out", out],
        "train obfuscator": ["train", "obfuscator", "--manifest", "corpus/manifest.csv",
                             "--target", model, "--out", out],
        "experiment": ["experiment", str(CONFIG), "--out", out],
        "report": ["report", "corpus", "--out", out],
        "stream": ["stream", "--model", model, "--input", "good.wav", "--output",
                   f"{out}/s.wav"],
        "export": ["export", "--model", model, "--out", f"{out}/o.onnx"],
        "demo": ["demo", "--out", out],
    }


@pytest.mark.parametrize("command", list(commands({"O": Path("O")}, "x")))
def test_an_output_under_a_file_is_one_line(work, models, capsys, command):
    before = digests(work)
    refused(commands(models, "good.wav/sub")[command], capsys, "good.wav/sub",
            "cannot create the folder: good.wav is a file")
    assert digests(work) == before


@pytest.mark.skipif(not Path("/proc/sys").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("command", ["anonymize", "obfuscate", "data synth", "train target"])
def test_an_output_folder_that_takes_no_files_is_one_line(work, models, capsys, command):
    refused(commands(models, "/proc/sys")[command], capsys,
            "/proc/sys: cannot write files in this folder: ")


@contextlib.contextmanager
def file_size_limit(size: int):
    """Writes past ``size`` bytes fail with EFBIG, as on a full disk (this process only)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_full_disk_is_one_line_and_leaves_no_temporary(work, models, capsys):
    before = digests(work)
    with file_size_limit(2000):
        anonymize = main(["anonymize", "good.wav", "--out-dir", "f", "-q"])
        obfuscate = main(["obfuscate", "--model", str(models["O"]), "corpus/manifest.csv",
                          "--out-dir", "g", "-q"])
    assert (anonymize, obfuscate) == (2, 2)
    assert capsys.readouterr().err.splitlines() == [
        "error: cannot write f/good.wav: File too large",
        "error: cannot write g/features/utt_0.npy: File too large"]
    assert [p for p in work.rglob("*") if ".tmp" in p.name] == []
    assert {k: v for k, v in digests(work).items() if not k.startswith(("f/", "g/"))} == before
    assert not (work / "f" / "good.wav").exists()


# --- 8: closed stdout ------------------------------------------------------------------------
class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_ends_quietly_with_141(work, capsys, monkeypatch):
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["data", "info", "corpus/manifest.csv"]) == 141
    assert capsys.readouterr().err == ""


def test_a_closed_pipe_at_the_os_level(work):
    """``optin data info m.csv | head -c0``, without the race: the pipe is closed first."""
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "optin.cli", "data", "info",
                           "corpus/manifest.csv"], stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=60)
    os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


# --- main: what is caught and how it is said --------------------------------------------------
def test_os_errors_name_the_file_and_the_cause():
    assert error_line(PermissionError(13, "Permission denied", "m.csv")) == \
        "error: m.csv: Permission denied"
    assert error_line(OSError(18, "Invalid cross-device link", "a", None, "b")) == \
        "error: a -> b: Invalid cross-device link"
    assert error_line(ConfigError("epochs: expected\n  an integer")) == \
        "error: epochs: expected an integer"


@pytest.mark.parametrize("error", [ValueError("a bug"), RuntimeError("a bug"),
                                   KeyError("a bug")])
def test_other_exceptions_are_bugs_and_keep_their_traceback(monkeypatch, error):
    def handler(args):
        raise error

    monkeypatch.setattr("optin.cli.data._data_info", handler)
    with pytest.raises(type(error)):
        main(["data", "info", "m.csv"])


def test_debug_shows_the_traceback_and_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    def handler(args):
        raise OptinError("m.csv: bad")

    monkeypatch.setattr("optin.cli.data._data_info", handler)
    monkeypatch.setenv("OPTIN_DEBUG", "1")
    with pytest.raises(OptinError):
        main(["data", "info", "m.csv"])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("optin.cli.data._data_info", interrupted)
    assert main(["data", "info", "m.csv"]) == 130
    assert capsys.readouterr().err == "interrupted; rerun the same command to resume\n"
