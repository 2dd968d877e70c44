"""The command line: every data command end to end, and errors as one line with exit 2."""

from __future__ import annotations

import argparse
import csv
import dataclasses
from typing import Literal

import pytest

from optin.cli import build_parser, main
from optin.corpora import Manifest
from optin.testing.dummies import break_audio, make_ravdess_tree


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("data", "train", "eval", "demo"):
        assert command in out
    sub = build_parser()._subparsers._group_actions[0].choices["data"]
    assert {"import", "synth", "split", "features", "info"} <= set(
        sub._subparsers._group_actions[0].choices)


def test_import_ravdess_gives_one_row_per_speech_file(tmp_path, capsys):
    tree = make_ravdess_tree(tmp_path / "ravdess", actors=(1, 2))
    out = tmp_path / "m.csv"
    assert main(["data", "import", "ravdess", str(tree.src), "--out", str(out), "-q"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(tree.expected)
    manifest = Manifest.read(out)
    by_path = {Manifest.audio_path(manifest, r).resolve(): r for r in manifest.rows}
    for rel, truth in tree.expected.items():
        row = by_path[(tree.src / rel).resolve()]
        for key, value in truth.items():
            assert row[key] == value, (rel, key)
    printed = capsys.readouterr().out
    assert f"{len(rows)} utterances" in printed and "left out" in printed


def test_import_error_is_one_line_with_exit_2(tmp_path, capsys):
    tree = make_ravdess_tree(tmp_path / "ravdess", actors=(1,), extras=False)
    victim = sorted(tree.expected)[0]
    break_audio(tree.src / victim, "empty")
    code = main(["data", "import", "ravdess", str(tree.src), "--out", str(tmp_path / "m.csv"),
                 "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and victim.split("/")[-1] in err
    assert main(["data", "import", "ravdess", str(tree.src), "--out", str(tmp_path / "m.csv"),
                 "--on-error", "skip", "-q"]) == 0
    assert "skipped 1 unreadable file" in capsys.readouterr().out
    assert main(["data", "import", "ravdess", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "x.csv")]) == 2
    assert "expected a folder" in capsys.readouterr().err


def test_synth_split_features_info(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    assert main(["data", "synth", str(corpus), "--quick", "--speakers", "4", "--sentences", "3",
                 "-q"]) == 0
    manifest_path = corpus / "manifest.csv"
    assert len(Manifest.read(manifest_path)) == 4 * 5 * 3
    out = tmp_path / "disjoint.csv"
    assert main(["data", "split", str(manifest_path), "--protocol", "speaker-disjoint",
                 "--test-fraction", "0.25", "--valid-fraction", "0.25", "--out", str(out)]) == 0
    split = Manifest.read(out)
    speakers = {s: {r["speaker"] for r in split.rows if r["split"] == s}
                for s in ("train", "valid", "test")}
    assert not (speakers["train"] & speakers["test"])
    assert main(["data", "features", str(out), "--workers", "1", "-q"]) == 0
    assert "60 computed" in capsys.readouterr().out
    assert main(["data", "features", str(out), "--workers", "1", "-q"]) == 0
    assert "0 computed, 60 reused" in capsys.readouterr().out
    assert main(["data", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "60 utterances" in info and "emotion:" in info and "test:" in info


def test_eval_errors_name_the_problem(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "none"), "--manifest",
                 str(tmp_path / "m.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_experiment_seeds_option_overrides_every_config(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    import optin.evaluation.experiment as experiment
    import optin.evaluation.report as report

    ran = []
    monkeypatch.setattr(experiment, "run_experiment",
                        lambda config, out, **kw: ran.append((config.name, config.seeds)))
    monkeypatch.setattr(report, "build_report", lambda dirs, out: out / "report.md")
    configs = Path(__file__).parents[1] / "configs"
    assert main(["experiment", str(configs / "emodb-fig4.yaml"),
                 str(configs / "emodb-fig3a.yaml"), "--out", str(tmp_path / "runs"),
                 "--seeds", "2", "0", "2"]) == 0
    assert ran == [("emodb-fig4", [0, 2]), ("emodb-fig3a", [0, 2])]
    with pytest.raises(SystemExit):
        main(["experiment", str(configs / "emodb-fig4.yaml"), "--out", str(tmp_path / "r"),
              "--seeds", "-1"])
    assert "--seeds" in capsys.readouterr().err


def test_training_options_are_generated_from_the_config_fields():
    from optin.cli import add_settings, settings_given
    from optin.training.classifier import ClassifierTrainConfig
    from optin.training.obfuscator_config import ObfuscatorTrainConfig

    def dests(path):
        sub = build_parser()
        for name in path:
            sub = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"
                       ).choices[name]
        return {a.dest for a in sub._actions}

    for path, cls, left in ((("train", "target"), ClassifierTrainConfig, {"attribute", "role"}),
                            (("train", "obfuscator"), ObfuscatorTrainConfig, set())):
        fields = {f.name for f in dataclasses.fields(cls)} - left - {"features"}
        assert fields <= dests(path), fields - dests(path)

    @dataclasses.dataclass
    class NewSettings:  # a config that grows a field gets its option with no other edit
        steps: int = 3
        rate: float | None = None
        mode: Literal["a", "b"] = "a"
        fast: bool = False
        safe: bool = True

    parser = argparse.ArgumentParser()
    add_settings(parser, NewSettings)
    args = parser.parse_args(["--steps", "5", "--mode", "b", "--fast", "--safe", "off"])
    assert settings_given(args, NewSettings) == {"steps": 5, "mode": "b", "fast": True,
                                                 "safe": False}
    assert settings_given(parser.parse_args([]), NewSettings) == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["--safe", "maybe"])


def test_the_residual_alias_and_a_generated_option_reach_the_config(tmp_path):
    from optin.cli import settings_given
    from optin.training.obfuscator_config import ObfuscatorTrainConfig

    args = build_parser().parse_args(
        ["train", "obfuscator", "--manifest", "m.csv", "--target", "t", "--out", "o",
         "--residual", "--template-momentum", "0.9", "--amp", "off"])
    assert settings_given(args, ObfuscatorTrainConfig) == {
        "obfuscator_residual": True, "template_momentum": 0.9, "amp": False}


def test_help_and_other_commands_do_not_load_torch():
    import subprocess
    import sys

    code = ("import sys; from optin.cli import build_parser; "
            "build_parser(['data', 'info', 'm.csv']); build_parser(['--help']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
