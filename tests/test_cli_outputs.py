"""Issue 31, failures that leave files behind: a refused command leaves the file system as it
found it (no new empty ``--out``, no ``run.json`` written before a refusal), nothing is written
into a model's folder, and the names :mod:`optin.cli.outputs` spells out agree with the
modules that write them."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli_checks import digests, refused
from tests.conftest import save_tiny_obfuscator

from optin import checkpoint
from optin.baselines import anonymize
from optin.cli import outputs
from optin.corpora import synth_plan
from optin.privacy import corpus

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_obfuscator(tmp_path_factory.mktemp("models") / "O")


def test_the_names_spelled_out_agree_with_their_writers():
    assert outputs.CHECKPOINT_FILES == (checkpoint.CONFIG_NAME, checkpoint.WEIGHTS_NAME)
    assert {anonymize.STATE_FILE, corpus.STATE_FILE, synth_plan.STATE_FILE,
            outputs.RUN_RECORD} == set(outputs.RECORDS)


def failing_commands(model: Path) -> dict[str, tuple[list[str], str]]:
    """name: (argv, the folder it must not leave behind)."""
    return {
        "train target, missing manifest": (["train", "target", "--manifest", "nope.csv",
                                            "--attribute", "gender", "--out", "run"], "run"),
        "train obfuscator, no valid split": (["train", "obfuscator", "--manifest",
                                              "novalid.csv", "--target", str(model), "--out",
                                              "run"], "run"),
        "train templates, an obfuscator as target": (
            ["train", "templates", "--manifest", "corpus/manifest.csv", "--target", str(model),
             "--out", "run"], "run"),
        "obfuscate, missing model": (["obfuscate", "--model", "nomodel", "good.wav",
                                      "--out-dir", "out"], "out"),
        "report, missing run": (["report", "nope"], "nope"),
        "export, missing model": (["export", "--model", "nomodel", "--out", "new/x.onnx"],
                                  "new"),
    }


@pytest.mark.parametrize("case", list(failing_commands(Path("M"))))
def test_a_failing_command_leaves_the_file_system_as_it_found_it(work, model, capsys, case):
    rows = (work / "corpus" / "manifest.csv").read_text().splitlines()
    (work / "novalid.csv").write_text("\n".join(
        [rows[0]] + [r for r in rows[1:] if ",valid," not in r]) + "\n")
    argv, left = failing_commands(model)[case]
    before = digests(work)
    refused(argv, capsys)
    assert digests(work) == before
    assert not (work / left).exists(), case


@pytest.mark.parametrize("argv", [
    ["obfuscate", "--model", "{model}", "good.wav", "--out-dir", "{model}"],
    ["obfuscate", "--model", "{model}", "good.wav", "--out-dir", "{model}/sub"],
    ["stream", "--model", "{model}", "--input", "good.wav", "--output", "{model}/s.wav"],
    ["anonymize", "--out-dir", "{model}", "good.wav"],
])
def test_nothing_is_written_into_a_checkpoint_folder(work, model, capsys, argv):
    before = digests(model)
    line = refused([a.format(model=model) for a in argv], capsys)
    assert "a checkpoint folder" in line and "models are never written into" in line
    assert digests(model) == before and not (model / "sub").exists()


def test_a_folder_given_as_a_manifest_is_not_called_missing(work, capsys):
    line = refused(["data", "info", "corpus"], capsys, "corpus")
    assert "does not exist" not in line
