"""Issue 31, options that do nothing: every option of every command is in the one table of
:mod:`optin.cli.options`, and an option that does not apply to what was asked is refused in one
``error:`` line, exit 2, before anything runs or is written."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from tests.cli_checks import digests, refused
from tests.conftest import save_tiny_obfuscator

from optin.cli import build_parser
from optin.cli.options import APPLIES, ByInput, Only, subparsers

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_obfuscator(tmp_path_factory.mktemp("models") / "O")


def leaf_options(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions
            if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction)}


def test_every_option_of_every_command_is_in_the_table():
    """A new option that nobody classified fails here, so none is silently ignored."""
    commands = {path: sub for path, sub in subparsers(build_parser())
                if path and not any(isinstance(a, argparse._SubParsersAction)
                                    for a in sub._actions)}
    assert set(commands) == set(APPLIES), set(commands) ^ set(APPLIES)
    for path, sub in commands.items():
        assert leaf_options(sub) == set(APPLIES[path]), (path, leaf_options(sub)
                                                         ^ set(APPLIES[path]))
        for rule in APPLIES[path].values():
            assert rule is None or isinstance(rule, Only | ByInput)


EXPORT = ["export", "--model", "{model}", "--out", "x.onnx"]
BENCH = ["bench", "--model", "{model}"]
CASES = [
    ([*EXPORT, "--cache-dir", "c"], "--cache-dir: applies only with --check-target"),
    ([*EXPORT, "--split", "valid"], "--split: applies only with --check-target"),
    ([*EXPORT, "--manifest", "m.csv"], "--manifest: applies only with --check-target"),
    ([*EXPORT, "--int8-layers", "spatial"], "--int8-layers: applies only with --int8"),
    ([*EXPORT, "--calibration", "m.csv"], "--calibration: applies only with --int8"),
    ([*EXPORT, "--streaming", "--features-only"], "--features-only: applies only without "
                                                  "--streaming"),
    ([*EXPORT, "--streaming", "--int8", "--int8-layers", "all"], "--int8-layers: applies"),
    ([*EXPORT, "--streaming", "--check-target", "T", "--json"],
     "--check-target: applies only without --streaming"),
    ([*BENCH, "--chunk-ms", "80"], "--chunk-ms: applies only with --streaming"),
    ([*BENCH, "--streaming", "--device", "cuda"], "--device: applies only without --streaming"),
    ([*BENCH, "--streaming", "--batch", "2"], "--batch: applies only without --streaming"),
    ([*BENCH, "--streaming", "--warmup", "1"], "--warmup: applies only without --streaming"),
    ([*BENCH, "--backend", "torch", "--calibration", "m.csv"],
     "--calibration: applies only to an int8 backend"),
    (["train", "templates", "--manifest", "m.csv", "--target", "T", "--out", "r",
      "--student-steps", "5"], "--student-steps: applies only with --decider student"),
    (["train", "obfuscator", "--manifest", "m.csv", "--target", "T", "--out", "r",
      "--causal-hidden", "8"], "--causal-hidden: applies only with --obfuscator-arch causal"),
    (["train", "obfuscator", "--manifest", "m.csv", "--target", "T", "--out", "r",
      "--optimizer", "adam", "--momentum", "0.5"], "--momentum: applies only with --optimizer"),
    (["data", "import", "emodb", ".", "--out", "m.csv", "--map", "a=b"],
     "--map: applies only to the csv importer"),
    (["anonymize", "--method", "mcadams", "--out-dir", "o", "good.wav", "--seed", "3"],
     "--seed: applies only with --alpha-range"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(c[0][:1] + c[0][-2:])
                                                          for c in CASES])
def test_an_option_that_does_not_apply_is_refused_before_anything_runs(work, model, capsys,
                                                                       argv, message):
    before = digests(work)
    line = refused([a.format(model=model) for a in argv], capsys)
    assert line.startswith("error: " + message), line
    assert digests(work) == before
    assert not any((work / name).exists() for name in ("x.onnx", "c", "r", "m.csv", "o"))


def test_the_default_value_typed_out_is_refused_too(work, model, capsys):
    """``--int8-layers spatial`` is the default: typed without ``--int8`` it still does
    nothing, so it is refused (what was typed counts, not what it equals)."""
    refused([a.format(model=model) for a in EXPORT] + ["--int8-layers", "spatial"], capsys,
            "--int8-layers")


@pytest.mark.parametrize(("extra", "message"), [
    (["--window-ms", "1"], "--window-ms"),
    (["--window-ms", "1e9"], "--window-ms"),
    (["--window-ms", "1000.5"], "--window-ms"),
])
def test_stream_windows_are_refused_not_rounded_or_allocated(work, model, capsys, extra,
                                                             message):
    """A window too short is refused (once silently raised to 9 frames), one of 10^9 ms
    before its buffers exist (once past 1.95 GB and growing), one between steps not rounded."""
    before = digests(work)
    refused(["stream", "--model", str(model), "--input", "good.wav", "--output", "o/s.wav",
             *extra], capsys, message)
    assert digests(work) == before and not (work / "o").exists()


def test_options_that_apply_still_run(work, model, capsys):
    """The table refuses only what does nothing: the same options where they apply run."""
    from optin.cli import main

    assert main(["bench", "--model", str(model), "--streaming", "--chunk-ms", "80",
                 "--seconds", "0.5", "--repeats", "1", "-q"]) == 0
    capsys.readouterr()


class Loudness(torch.nn.Module):
    """An app's utterance model from a file: (B, S) audio -> (B, 2) logits."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        level = wave.abs().mean(dim=1, keepdim=True)
        return torch.cat([level, -level], dim=1)


def test_frame_options_of_the_limit_are_refused_for_an_utterance_target(work, capsys):
    """``--crossfade`` (and the other frame-only settings of ``train templates``) are refused
    once the targets are read, when none answers per frame; nothing is written."""
    torch.jit.script(Loudness()).save("app.pt")
    before = digests(work)
    line = refused(["train", "templates", "--manifest", "corpus/manifest.csv", "--target",
                    "app.pt", "--target-input", "waveform", "--out", "r", "--crossfade", "2"],
                   capsys)
    assert line.startswith("error: --crossfade: applies only to a target with frame answers")
    assert digests(work) == before and not (work / "r").exists()
