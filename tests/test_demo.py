"""The main job end to end on a small built-in corpus with tiny models (the integration test)."""

from __future__ import annotations

import json

import pytest

from optin.demo import run_demo
from optin.serve.analysis import analyse_utterance
from optin.serve.run_folder import load_run


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    kwargs = {
        "corpus": {"speakers": 4, "sentences": 3},
        "options": {
            "classifier": {"conv_channels": 8, "hidden_size": 32, "rnn_layers": 1,
                           "epochs": 2, "draws_per_epoch": 64},
            "obfuscator": {"obfuscator_width": 4, "obfuscator_blocks": 1,
                           "deobfuscator_width": 4, "deobfuscator_blocks": 1,
                           "segment_length": 32, "batch_size": 8, "draws_per_epoch": 32,
                           "epochs": 1},
            "xvector": {"epochs": 2, "frame_channels": 16, "pool_channels": 32,
                        "embed_dim": 32, "segment_dim": 32, "segment_length": 100},
            "adr": {"epochs": 5, "classifier_epochs": 5},
            "templates": {"steps": 20, "check_every": 10, "student_steps": 40,
                          "student_channels": 4, "student_hidden": 16, "student_layers": 1},
            "attackers": {"families": ["deepspeech2"], "epochs": 2, "patience": 1},
        },
    }
    summary = run_demo(tmp_path / "demo", progress=False, **kwargs)
    printed = capsys.readouterr().out
    assert "demo-fig3a" in printed and "demo-fig4" in printed and "informed" in printed
    names = [e["name"] for e in summary["experiments"]]
    assert names == ["demo-fig3a", "demo-fig4"]
    fig4 = summary["experiments"][1]["systems"]
    assert set(fig4) == {"opt-in", "adr", "mcadams", "opt-in-templates"}
    assert all(set(s["attacks"]) == {"gender", "emotion"} for s in fig4.values())
    assert "mcadams" in printed and "EER" in printed
    # where the time went: every stage of both experiments, the obfuscator's among them
    stages = summary["experiments"][0]["stages"]
    assert stages[0]["stage"] == "preparing the data" and all(r["seconds"] >= 0 for r in stages)
    assert "where the time went" in printed and "fitting system 'opt-in'" in printed
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [e["name"] for e in results["experiments"]] == names
    assert (tmp_path / "demo" / "report.md").is_file()
    assert any(p.endswith(".png") for p in summary["figures"])
    kinds = sorted(p.split("/")[-1].split(".")[-2] for p in summary["examples"])
    assert kinds.count("obfuscated") == kinds.count("original") == kinds.count("mcadams") == 3
    assert kinds.count("templates") == 3
    # the two experiments share the target, the gender classifier and the obfuscator
    models = [p.name for p in (tmp_path / "demo" / "models").iterdir()]
    assert sum(m.startswith("target-speaker") for m in models) == 1
    assert sum(m.startswith("obfuscator-") for m in models) == 1
    assert sum(m.startswith("adr-") for m in models) == 1
    assert sum(m.startswith("xvector-") and "protected" not in m for m in models) == 1
    again = run_demo(tmp_path / "demo", progress=False, **kwargs)
    assert again["experiments"][0]["systems"] == summary["experiments"][0]["systems"]
    # optin serve opens the demo's folder: Figure 4's three systems, ADR's x-vectors included
    served = load_run(tmp_path / "demo")
    assert served.experiment["name"] == "demo-fig4" and served.extractor is not None
    assert set(served.systems) == {"opt-in", "adr", "mcadams", "opt-in-templates"}
    assert all(len(served.systems[k].informed[a]) == 1
               for k in ("opt-in", "mcadams") for a in ("gender", "emotion"))
    row = served.test_rows()[0]
    analysis = analyse_utterance(served, row["id"])
    adr = analysis.result("adr")
    assert adr.audio is None and adr.target is None and adr.verification is not None
    for key in ("original", "opt-in", "mcadams", "opt-in-templates"):
        result = analysis.result(key)
        assert result.audio is not None and result.target is not None
        assert {g.family for g in result.attacks["emotion"]} == {"deepspeech2"}
    assert analysis.truth == {c: row[c] for c in ("speaker", "gender", "emotion")}
