"""The experiment harness end to end on a tiny config: results, resume, refusal of empty stages."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from optin.evaluation import experiment as experiment_module
from optin.evaluation.experiment import ExperimentConfig, ExperimentError, run_experiment

TINY_CLASSIFIER = {"conv_channels": 8, "hidden_size": 32, "rnn_layers": 1, "epochs": 2,
                   "draws_per_epoch": 64, "batch_size": 16}
TINY_OBFUSCATOR = {"obfuscator_width": 4, "obfuscator_blocks": 1, "deobfuscator_width": 4,
                   "deobfuscator_blocks": 1, "segment_length": 32, "batch_size": 8,
                   "draws_per_epoch": 32, "epochs": 1}
TINY_XVECTOR = {"epochs": 2, "frame_channels": 16, "pool_channels": 32, "embed_dim": 32,
                "segment_dim": 32, "segment_length": 100}
TINY_ADR = {"epochs": 5, "classifier_epochs": 5}


def tiny_config(name: str = "tiny-fig4", attacked=("gender", "emotion")) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "name": name, "title": "tiny", "figure": "4", "corpus": "builtin",
        "data": {"synth": {"quick": True, "speakers": 4, "sentences": 3}},
        "protocol": "manifest", "permitted": "speaker", "attacked": list(attacked),
        "systems": ["opt-in", "adr", "mcadams"], "preset": "quick", "seeds": [0],
        "classifier": TINY_CLASSIFIER, "obfuscator": TINY_OBFUSCATOR,
        "xvector": TINY_XVECTOR, "adr": TINY_ADR, "mcadams": {"alpha": 0.8},
        "attackers": {"epochs": 2, "patience": 1},
    })


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    experiment = run_experiment(tiny_config(), out, progress=False)
    return out, experiment


def test_runs_end_to_end_with_every_number(tiny_run):
    out, _ = tiny_run
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "optin-results/1"
    (stored,) = results["experiments"]
    assert stored["name"] == "tiny-fig4" and stored["seeds"] == [0]
    assert set(stored["systems"]) == {"opt-in", "adr", "mcadams"}
    for name, system in stored["systems"].items():
        assert system["world"] == ("x-vector" if name == "adr" else "spectrogram")
        for key in ("original", "obfuscated", "agreement"):
            assert 0.0 <= system["target"][key]["mean"] <= 1.0
        for attribute in ("gender", "emotion"):
            attack = system["attacks"][attribute]
            for key in ("chance", "original", "ignorant", "informed", "output_only"):
                assert 0.0 <= attack[key]["mean"] <= 1.0, (name, attribute, key)
            assert attack["excess_leakage"]["mean"] == pytest.approx(
                attack["informed"]["mean"] - attack["output_only"]["mean"])
        assert attack["chance"]["mean"] == pytest.approx(0.2)  # 5 balanced emotions
        pairings = set(system["verification"])
        expected = {"original/original", "original/protected", "protected/protected"}
        assert expected <= pairings and ("semi-informed" in pairings) == (name != "adr")
        for pairing in pairings:
            assert 0.0 <= system["verification"][pairing]["eer"]["mean"] <= 1.0
    # every system scores the same original data with the same extractor
    eers = {s["verification"]["original/original"]["eer"]["mean"]
            for s in stored["systems"].values()}
    assert len(eers) == 1
    report = (out / "report.md").read_text()
    assert "Speaker verification" in report and "McAdams" in report and "ADR" in report
    attackers = {(r["attacker"], r["attribute"]) for r in results["rows"]}
    assert ("informed", "emotion") in attackers and ("target_agreement", "speaker") in attackers
    assert ("asv semi-informed", "speaker") in attackers
    assert (out / "report.md").is_file()
    assert list((out / "figures").glob("*.png")) and list((out / "figures").glob("*.svg"))


@pytest.mark.slow
def test_rerun_reuses_models_and_a_killed_run_resumes(tiny_run, monkeypatch):
    out, first = tiny_run
    models = sorted(p.name for p in (out / "models").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*/config.json")}
    again = run_experiment(tiny_config(), out, progress=False)
    assert sorted(p.name for p in (out / "models").iterdir()) == models
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    assert again["systems"] == first["systems"]

    # a second experiment sharing T and the gender classifier is killed while fitting the
    # obfuscator's system; the rerun finishes and reuses what the first experiment trained
    real_fit = experiment_module.SYSTEMS["opt-in"]

    def killed(ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(experiment_module.SYSTEMS, "opt-in", replace(real_fit, fit=killed))
    config = tiny_config("tiny-fig3a", attacked=("gender",))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, out, progress=False)
    monkeypatch.setitem(experiment_module.SYSTEMS, "opt-in", real_fit)
    done = run_experiment(config, out, progress=False)
    assert done["systems"]["opt-in"]["attacks"]["gender"] == \
        first["systems"]["opt-in"]["attacks"]["gender"]
    names = [e["name"] for e in json.loads((out / "results.json").read_text())["experiments"]]
    assert names == ["tiny-fig4", "tiny-fig3a"]


@pytest.mark.slow
def test_a_stage_that_produces_nothing_stops_the_run(tiny_run, monkeypatch):
    from optin.evaluation import target_judge

    out, _ = tiny_run
    real = target_judge.evaluate_classifier  # T's numbers on original and protected data

    def empty(*args, **kwargs):
        result = real(*args, **kwargs)
        if kwargs.get("transform") is not None:
            result["utterances"] = 0
        return result

    monkeypatch.setattr(target_judge, "evaluate_classifier", empty)
    with pytest.raises(ExperimentError, match="produced no usable number"):
        run_experiment(tiny_config(), out, progress=False, report=False)


def test_config_errors_name_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\npermitted: speaker\nattacked: [gender]\n")
    with pytest.raises(ExperimentError, match=r"bad\.yaml: data: missing"):
        ExperimentConfig.read(path)
    path.write_text("name: x\ndata: {synth: {}}\npermitted: speaker\nattacked: [speaker]\n")
    with pytest.raises(ExperimentError, match="cannot also be attacked"):
        ExperimentConfig.read(path)
    path.write_text("name: x\ndata: {synth: {}}\npermitted: speaker\nattacked: [gender]\n"
                    "systems: [magic]\n")
    with pytest.raises(ExperimentError, match=r"systems: expected a list of values, each one "
                       r"of 'opt-in', .*got \['magic'\]"):
        ExperimentConfig.read(path)
    path.write_text("name: x\ndata: {}\npermitted: speaker\nattacked: [gender]\nfoo: 1\n")
    with pytest.raises(ExperimentError, match="foo: unknown key"):
        ExperimentConfig.read(path)


def test_shipped_configs_parse():
    configs = sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml"))
    assert len(configs) == 19
    names = {ExperimentConfig.read(p).name for p in configs}
    assert len(names) == 19
    for corpus in ("ravdess", "emovdb", "librispeech", "voxceleb2", "builtin"):
        assert f"{corpus}-fig3a" in names and f"{corpus}-fig3b" in names
    assert {"ravdess-fig4", "emovdb-fig4", "builtin-fig4"} <= names
    streaming = ExperimentConfig.read(configs[0].parent / "builtin-streaming.yaml")
    assert streaming.systems == ["opt-in", "opt-in-streaming"]
    for corpus in ("builtin", "emodb"):  # the worked example: Silero VAD, three attributes
        vad = ExperimentConfig.read(configs[0].parent / f"{corpus}-silero-vad.yaml")
        assert vad.targets == [{"model": "silero-vad"}]
        assert vad.attacked == ["speaker", "gender", "emotion"]


def test_real_corpus_configs_import_under_data_root(tmp_path):
    """The RAVDESS configs' data path: import from --data-root, then the paper's split."""
    from optin.evaluation.experiment import prepare_manifest
    from optin.testing.dummies import make_ravdess_tree

    tree = make_ravdess_tree(tmp_path / "RAVDESS", actors=(1, 2, 3, 4), extras=False)
    config = ExperimentConfig.read(Path(__file__).parents[2] / "configs" / "ravdess-fig4.yaml")
    manifest = prepare_manifest(config, tmp_path / "out", tree.src, progress=False)
    assert len(manifest) == len(tree.expected)
    splits = {s: {r["speaker"] for r in manifest.rows if r["split"] == s}
              for s in ("train", "valid", "test")}
    assert splits["train"] == splits["test"] == splits["valid"]  # same speakers, other clips
    again = prepare_manifest(config, tmp_path / "out", tree.src, progress=False)
    assert again.column("split") == manifest.column("split")
    with pytest.raises(ExperimentError, match="needs --data-root"):
        prepare_manifest(config, tmp_path / "out2", None, progress=False)


def _config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text("data: {synth: {}}\npermitted: speaker\nattacked: [gender]\n" + text)
    return path


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/optin-escaped/x", "a/b", "..", ""])
def test_a_name_that_is_not_a_plain_file_name_is_refused_before_anything_is_written(
        tmp_path, name):
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: {name!r}\ndata: {{manifest: m.csv}}\nprotocol: same-speakers\n"
                    "permitted: speaker\nattacked: [gender]\n")
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(ExperimentError, match=r"exp\.yaml: name: expected a plain file name"):
        run_experiment(path, out, progress=False)
    assert not (tmp_path / "a").exists()
    assert not list(tmp_path.rglob("*-split.csv"))


def test_yaml_duplicate_keys_fake_bools_and_exponent_numbers(tmp_path):
    path = _config_file(tmp_path, "name: x\nseeds: [0]\nseeds: [1, 2]\n")
    with pytest.raises(ExperimentError, match=r"exp\.yaml: line 6: key 'seeds' given twice "
                                              r"\(first on line 5\)"):
        ExperimentConfig.read(path)
    path = _config_file(tmp_path, "name: x\nclassifier: {lr: 1e-3, epochs: 3, epochs: 4}\n")
    with pytest.raises(ExperimentError, match="key 'epochs' given twice"):
        ExperimentConfig.read(path)
    path = _config_file(tmp_path, "name: x\nverification: \"no\"\n")
    with pytest.raises(ExperimentError, match="verification: expected true or false, got 'no'"):
        ExperimentConfig.read(path)
    path = _config_file(tmp_path, "name: x\nclassifier: {lr: 1e-3}\nmcadams:\n")
    config = ExperimentConfig.read(path)
    assert config.classifier == {"lr": 0.001} and config.mcadams == {}


@pytest.mark.parametrize(("text", "message"), [
    ("seeds: 0", r"seeds: expected a list of integers >= 0, got 0"),
    ("seeds: [zero]", r"seeds: expected a list of integers >= 0, got \['zero'\]"),
    ("seeds: []", r"seeds: expected at least one entry"),
    ("seeds: [1, 1]", r"seeds: an entry is given twice"),
    ("classifier: {epochs: ten}", r"classifier\.epochs: expected an integer >= 1, got 'ten'"),
    ("classifier: {seed: 3}", r"classifier\.seed: unknown key"),  # the experiment sets it
    ("classifier: {features: {bogus: 1}}",
     r"classifier: ClassifierTrainConfig\.features: unknown FeatureConfig setting\(s\): bogus"),
    ("obfuscator: {epochz: 1}", r"obfuscator\.epochz: unknown key \(did you mean 'epochs'\?\)"),
    ("mcadams: {alpha: x}", r"mcadams\.alpha: expected a number in \(0, 2\], got 'x'"),
    ("mcadams: {alpha_range: [0.9, 0.5]}", r"mcadams: McAdamsConfig\.alpha_range: low 0\.9"),
    ("adr: {preset: huge}", r"adr\.preset: expected one of 'paper', 'quick', got 'huge'"),
    ("figure: 3", r"figure: expected a string or null, got 3"),
])
def test_wrong_settings_are_refused_at_load_time_naming_the_field(tmp_path, text, message):
    path = _config_file(tmp_path, f"name: x\n{text}\n")
    with pytest.raises(ExperimentError, match=rf"exp\.yaml: {message}"):
        ExperimentConfig.read(path)


def test_data_options_are_checked_against_the_function_they_configure(tmp_path):
    for data, message in [
        ("{synth: {bogus: 1}}", r"data\.synth\.bogus: unknown key"),
        ("{synth: {speakers: 1}}", r"data\.synth\.speakers: expected an integer in \[2, "),
        ("{import: {src: x}}", r"data\.import\.corpus: missing"),
        ("{import: {corpus: timit}}", r"data\.import\.corpus: expected one of 'ravdess'"),
        ("{manifest: 3}", r"data\.manifest: expected a file path, got 3"),
        ("{synth: {}, manifest: m.csv}", r"data: expected exactly one of"),
        ("{other: 1}", r"data\.other: unknown key"),
    ]:
        path = tmp_path / "exp.yaml"
        path.write_text(f"name: x\ndata: {data}\npermitted: speaker\nattacked: [gender]\n")
        with pytest.raises(ExperimentError, match=rf"exp\.yaml: {message}"):
            ExperimentConfig.read(path)


@pytest.mark.slow
def test_streaming_system_beside_the_paper_obfuscator(tmp_path):
    """``opt-in-streaming`` trains the causal obfuscator with the same settings and is
    evaluated, attacked and reported like ``opt-in``."""
    from optin.checkpoint import read_config

    config = ExperimentConfig.from_dict({
        "name": "tiny-streaming", "title": "tiny", "figure": "4", "corpus": "builtin",
        "data": {"synth": {"quick": True, "speakers": 4, "sentences": 3}},
        "protocol": "manifest", "permitted": "speaker", "attacked": ["gender"],
        "systems": ["opt-in", "opt-in-streaming"], "preset": "quick", "seeds": [0],
        "verification": False, "classifier": TINY_CLASSIFIER,
        "obfuscator": {**TINY_OBFUSCATOR, "causal_hidden": 16, "causal_blocks": 1},
        "attackers": {"epochs": 2, "patience": 1}})
    run_experiment(config, tmp_path, progress=False)
    results = json.loads((tmp_path / "results.json").read_text())
    (stored,) = results["experiments"]
    assert set(stored["systems"]) == {"opt-in", "opt-in-streaming"}
    kinds = {name: read_config(Path(system["models"][0]) / "obfuscator")["kind"]
             for name, system in stored["systems"].items()}
    assert kinds == {"opt-in": "cyclegan-vc2-obfuscator",
                     "opt-in-streaming": "causal-obfuscator"}
    for system in stored["systems"].values():
        assert 0.0 <= system["attacks"]["gender"]["informed"]["mean"] <= 1.0
    assert "streaming (causal)" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_silero_vad_permitted_beside_mcadams(tmp_path):
    """The worked example in small: the app's own pretrained model (Silero VAD, from its wheel,
    offline) is the permitted task; both systems are judged by its frame agreement and F1, and
    attacked with the output-only attacker on its answers."""
    config = ExperimentConfig.from_dict({
        "name": "tiny-vad", "corpus": "builtin",
        "data": {"synth": {"quick": True, "speakers": 4, "sentences": 3}},
        "protocol": "manifest", "permitted": "voice-activity",
        "targets": [{"model": "silero-vad"}], "attacked": ["gender"],
        "systems": ["opt-in", "mcadams"], "preset": "quick", "seeds": [0],
        "verification": False, "classifier": TINY_CLASSIFIER,
        "obfuscator": {**TINY_OBFUSCATOR, "obfuscator_residual": True, "optimizer": "adam",
                       "lr": 1e-3}, "attackers": {"epochs": 2, "patience": 1}})
    run_experiment(config, tmp_path, progress=False)
    (stored,) = json.loads((tmp_path / "results.json").read_text())["experiments"]
    opt_in, mcadams = stored["systems"]["opt-in"], stored["systems"]["mcadams"]
    # a residual obfuscator starts from the identity: VAD keeps its answers
    assert opt_in["target"]["agreement_input_phase"]["mean"] >= 0.9
    for system in (opt_in, mcadams):
        assert system["target"]["original"]["mean"] == 1.0
        assert 0.5 <= system["target"]["f1"]["mean"] <= 1.0
        assert 0.0 <= system["attacks"]["gender"]["output_only"]["mean"] <= 1.0
    assert not list((tmp_path / "models").glob("target-*"))  # nothing trained for T
    assert "agreement_input_phase" in (tmp_path / "report.md").read_text()


def test_the_limit_and_its_student_beside_each_other(tmp_path, one_thread):
    """``opt-in-limit`` (T's copy decides) and ``opt-in-templates`` (a student of T decides)
    are fitted, judged and attacked like any system; the limit keeps T's every answer and its
    informed attacker learns no more than T's answers give (excess near 0)."""
    config = ExperimentConfig.from_dict({
        "name": "tiny-limit", "corpus": "builtin",
        "data": {"synth": {"quick": True, "speakers": 4, "sentences": 3}},
        "protocol": "manifest", "permitted": "speaker", "attacked": ["gender"],
        "systems": ["opt-in-limit", "opt-in-templates"], "preset": "quick", "seeds": [0],
        "verification": False, "classifier": TINY_CLASSIFIER,
        "templates": {"steps": 30, "check_every": 10, "student_steps": 60,
                      "student_channels": 4, "student_hidden": 16, "student_layers": 1},
        "attackers": {"epochs": 2, "patience": 1}})
    run_experiment(config, tmp_path, progress=False)
    (stored,) = json.loads((tmp_path / "results.json").read_text())["experiments"]
    limit, student = stored["systems"]["opt-in-limit"], stored["systems"]["opt-in-templates"]
    assert limit["target"]["agreement"]["mean"] == 1.0
    assert limit["attacks"]["gender"]["excess_leakage"]["mean"] <= 0.2
    assert 0.0 <= student["target"]["agreement"]["mean"] <= 1.0
    assert "excess_leakage" in student["attacks"]["gender"]
    report = (tmp_path / "report.md").read_text()
    assert "opt-in limit" in report and "frontier" in report


def test_stages_time_each_stage_until_the_next(monkeypatch, capsys):
    clock = iter([10.0, 10.0, 12.5, 20.0])  # made, "data", "model", the table
    monkeypatch.setattr(experiment_module.time, "perf_counter", lambda: next(clock))
    log = experiment_module.Stages("x")
    log("data")
    log("model")
    assert log.table() == [{"stage": "data", "seconds": 2.5},
                           {"stage": "model", "seconds": 7.5}]
    assert capsys.readouterr().err.splitlines() == ["[x     0.0 s] data", "[x     2.5 s] model"]
