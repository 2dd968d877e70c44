"""The main job end to end on a small built-in corpus with tiny models (the integration test)."""

from __future__ import annotations

import json

import pytest

from optin.demo import run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    kwargs = {
        "corpus": {"speakers": 4, "sentences": 4},
        "classifier_options": {"conv_channels": 8, "hidden_size": 32, "rnn_layers": 1,
                               "epochs": 3, "draws_per_epoch": 96},
        "obfuscator_options": {"obfuscator_width": 8, "obfuscator_blocks": 1,
                               "deobfuscator_width": 4, "deobfuscator_blocks": 1,
                               "segment_length": 64, "batch_size": 8, "draws_per_epoch": 64,
                               "epochs": 2},
    }
    summary = run_demo(tmp_path / "demo", progress=False, **kwargs)
    printed = capsys.readouterr().out
    assert "target T (permitted)" in printed and "ignorant attacker" in printed
    assert set(summary["results"]) == {"gender", "speaker"}
    for row in summary["results"].values():
        for part in ("original", "obfuscated"):
            assert 0.0 <= row[part]["utterance_accuracy"] <= 1.0
            assert row[part]["utterances"] == row["original"]["utterances"] > 0
    names = sorted(p.split("/")[-1].split(".")[-2] for p in summary["examples"])
    assert names.count("obfuscated") == names.count("original") == 3
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["permitted"] == "gender"
    # a second run finds every stage done
    again = run_demo(tmp_path / "demo", progress=False, **kwargs)
    assert again["results"] == summary["results"]
