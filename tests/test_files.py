"""Tests for optin.files: atomic writes, output-folder checks, output-over-input, resumable
folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from optin.files import (
    OutputError,
    Terminated,
    atomic_output,
    claim_folder,
    prepare_out_dir,
    prepare_out_file,
    refuse_overwrite,
    write_bytes,
    write_json,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def test_atomic_output_renames_when_complete(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    assert write_bytes(target, b"new") == target
    assert target.read_bytes() == b"new"
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("bug"), KeyboardInterrupt()])
def test_atomic_output_leaves_the_target_and_no_temporary_on_failure(tmp_path, error):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(type(error)), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise error
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_sigterm_inside_atomic_output_is_cleaned_up_like_ctrl_c(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(Terminated), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises long before this ends
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the block


def test_sigterm_handling_keeps_other_handlers_and_threads_alone(tmp_path):
    def own(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with atomic_output(tmp_path / "a.bin") as tmp:
            assert signal.getsignal(signal.SIGTERM) is own  # someone else's: kept
            tmp.write_bytes(b"a")
    finally:
        signal.signal(signal.SIGTERM, previous)
    seen = []

    def write() -> None:
        with atomic_output(tmp_path / "b.bin") as tmp:
            seen.append(signal.getsignal(signal.SIGTERM))
            tmp.write_bytes(b"b")

    worker = threading.Thread(target=write)
    worker.start()
    worker.join()
    assert seen == [signal.SIG_DFL] and (tmp_path / "b.bin").read_bytes() == b"b"


def test_atomic_output_names_the_target_when_the_os_refuses(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(OutputError, match=r"cannot write .*x\.npy: No space left on device$"), \
            atomic_output(target, suffix=".npy") as tmp:
        assert tmp.name.endswith(".tmp.npy") and tmp.parent == tmp_path
        tmp.write_bytes(b"half")
        raise OSError(28, os.strerror(28), str(tmp))
    assert not target.exists() and leftovers(tmp_path) == []


def test_a_file_size_limit_leaves_no_temporary(tmp_path):
    """A real failed write (EFBIG under RLIMIT_FSIZE, as a full disk would fail)."""
    code = (
        "import resource, signal, sys\n"
        "from optin.files import OutputError, write_bytes\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "try:\n"
        "    write_bytes(sys.argv[1], b'x' * 5000)\n"
        "except OutputError as err:\n"
        "    print(err)\n"
    )
    target = tmp_path / "big.bin"
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.strip() == f"cannot write {target}: File too large"
    assert not target.exists() and leftovers(tmp_path) == []


def test_prepare_out_dir_creates_or_names_the_blocker(tmp_path):
    assert prepare_out_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "good.wav").write_bytes(b"RIFF")
    with pytest.raises(OutputError) as info:
        prepare_out_dir(tmp_path / "good.wav" / "sub")
    assert str(info.value) == (f"--out-dir {tmp_path / 'good.wav' / 'sub'}: cannot create the "
                               f"folder: {tmp_path / 'good.wav'} is a file")
    with pytest.raises(OutputError, match=r"^--out .*good\.wav: cannot create the folder: "):
        prepare_out_dir(tmp_path / "good.wav", "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "good.wav"]


@pytest.mark.skipif(not Path("/proc/sys").is_dir(), reason="needs Linux /proc")
def test_prepare_out_dir_refuses_a_folder_that_takes_no_files():
    with pytest.raises(OutputError, match=r"^--out-dir /proc/sys: cannot write files in this "
                                          r"folder: "):
        prepare_out_dir("/proc/sys")


def test_prepare_out_file(tmp_path):
    assert prepare_out_file(tmp_path / "new" / "m.csv", inputs=()) == tmp_path / "new" / "m.csv"
    assert (tmp_path / "new").is_dir()
    with pytest.raises(OutputError, match=r"--out .*new: is a folder; give a file name"):
        prepare_out_file(tmp_path / "new", inputs=())
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match=r"--output .*m\.wav: its folder .*f/sub: cannot "
                                          r"create the folder: .*f is a file"):
        prepare_out_file(tmp_path / "f" / "sub" / "m.wav", "--output", inputs=())


def test_refuse_overwrite_sees_through_paths_and_links(tmp_path):
    source = tmp_path / "in" / "a.wav"
    source.parent.mkdir()
    source.write_bytes(b"audio")
    refuse_overwrite([source], [tmp_path / "out" / "a.wav", tmp_path / "in" / "a.npy"])
    for other in (tmp_path / "in" / ".." / "in" / "a.wav", tmp_path / "link.wav",
                  tmp_path / "hard.wav"):
        if other.name == "link.wav":
            other.symlink_to(source)
        elif other.name == "hard.wav":
            os.link(source, other)
        with pytest.raises(OutputError) as info:
            refuse_overwrite([source], [tmp_path / "x.npy", other])
        assert str(info.value) == (f"the output {other} would overwrite the input {source}; "
                                   "choose another --out-dir")


def test_prepare_out_file_refuses_an_input_before_making_anything(tmp_path):
    source = tmp_path / "m.csv"
    source.write_text("id\n")
    link = tmp_path / "new" / "link.csv"
    with pytest.raises(OutputError) as info:
        prepare_out_file(tmp_path / "." / "m.csv", "--json", inputs=[tmp_path / "x", source])
    assert str(info.value) == (f"the output {tmp_path / '.' / 'm.csv'} would overwrite the "
                               f"input {source}; choose another --json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]
    link.parent.mkdir()
    link.symlink_to(source)
    with pytest.raises(OutputError, match=r"link\.csv would overwrite the input .*m\.csv"):
        prepare_out_file(link, "--json", inputs=[source])
    assert source.read_text() == "id\n"


def test_claim_folder_resumes_only_the_same_settings(tmp_path):
    out = tmp_path / "out"
    made = [out / "audio" / "a.wav"]
    settings = {"model": "0123456789abcdef0123", "config": {"seed": 1, "range": (0.5, 0.9)}}
    claim_folder(out, "state.json", settings, made, "made")
    assert json.loads((out / "state.json").read_text())["config"]["range"] == [0.5, 0.9]
    made[0].parent.mkdir()
    made[0].write_bytes(b"done")
    claim_folder(out, "state.json", settings, made, "made")  # same settings: resume
    other = {"model": "fedcba9876543210fedc", "config": {"seed": 2, "range": (0.5, 0.9)}}
    with pytest.raises(OutputError) as info:
        claim_folder(out, "state.json", other, made, "obfuscated")
    assert str(info.value) == (
        f"{out} holds files obfuscated with other settings (model: '0123456789ab...' there, "
        "'fedcba987654...' now, config.seed: 1 there, 2 now); use the same settings to "
        "resume, or another --out-dir")
    (out / "state.json").unlink()
    with pytest.raises(OutputError, match=r"holds .*a\.wav but no state\.json"):
        claim_folder(out, "state.json", settings, made, "made")
    (out / "state.json").write_text("{broken")
    with pytest.raises(OutputError, match=r"state\.json cannot be read"):
        claim_folder(out, "state.json", settings, made, "made")
