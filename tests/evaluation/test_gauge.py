"""The leakage gauge: it finds what the features carry, reads chance when a transform removes
it, and the ``optin gauge`` command's output and errors."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch
from tests.conftest import save_tiny_obfuscator, voiced

from optin.cli import main
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest, ManifestError
from optin.evaluation.gauge import GaugeConfig, fit_logistic, leakage_gauge

# 8 speakers, 4 female (high F0) and 4 male (low F0); each 4 train, 1 valid, 2 test clips
F0 = {"f0": 190.0, "f1": 205.0, "f2": 220.0, "f3": 235.0,
      "m0": 95.0, "m1": 104.0, "m2": 113.0, "m3": 122.0}
SPLITS = ["train"] * 4 + ["valid"] + ["test"] * 2
FAST = GaugeConfig(epochs=100)


def write_corpus(root, valid: bool = True, unlabelled: int = 0):
    """A small corpus whose gender (and speaker) lies in the pitch, whose ``emotion`` lies
    nowhere (drawn independently of the audio); returns the manifest path."""
    rows = []
    rng = torch.Generator().manual_seed(0)
    for speaker, f0 in F0.items():
        for k, split in enumerate(SPLITS):
            ident = f"{speaker}_{k}"
            path = root / "wav" / f"{ident}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            jitter = 1 + 0.01 * float(torch.rand(1, generator=rng) - 0.5)
            sf.write(path, voiced(0.4, f0=f0 * jitter, seed=len(rows)), 16000)
            rows.append({"id": ident, "path": f"wav/{ident}.wav", "speaker": speaker,
                         "gender": "female" if speaker[0] == "f" else "male",
                         "emotion": ["happy", "sad"][int(torch.randint(2, (1,), generator=rng))],
                         "split": split if valid or split != "valid" else "train"})
    for row in rows[:unlabelled]:
        row["gender"] = ""
    return Manifest(rows=rows, root=root).write(root / "manifest.csv")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("gauge"), unlabelled=3)


def flat(features: torch.Tensor) -> torch.Tensor:
    """Destroys everything: the same constant spectrogram, of the same length."""
    return torch.full_like(features, 0.25)


def test_the_gauge_finds_pitch_borne_attributes_on_original_features(corpus):
    report = leakage_gauge(corpus, ["gender", "speaker"], seed=0, config=FAST, workers=1)
    gender, speaker = report["gender"], report["speaker"]
    assert gender.chance == pytest.approx(0.5)
    assert gender.informed >= gender.chance + 0.35, report.format()
    assert speaker.chance == pytest.approx(0.125)
    assert speaker.informed >= speaker.chance + 0.4, report.format()
    assert gender.original is None and not report.transformed
    assert report.selection == "valid"
    assert set(gender.weight_decay.values()) <= set(FAST.weight_decays)
    assert (gender.train, gender.valid, gender.test, gender.missing) == (29, 8, 16, 3)
    assert (speaker.train, speaker.missing) == (32, 0)
    assert report.utterances == 56
    assert report.seconds < 60


def test_a_transform_that_destroys_the_information_reads_chance(corpus):
    report = leakage_gauge(corpus, ["gender", "speaker"], transform=flat, config=FAST,
                           workers=1)
    for attribute in ("gender", "speaker"):
        gauge = report[attribute]
        # every vector is the same: no head can beat predicting one class
        assert gauge.informed <= gauge.chance + 1e-6, report.format()
        assert gauge.original >= gauge.chance + 0.35, report.format()  # the same heads, before
    text = report.format()
    assert "original" in text.splitlines()[1] and "transformed" in text.splitlines()[0]
    assert "gender: left out 3 row(s) without a label" in text


def test_noise_in_place_of_the_features_reads_near_chance(corpus):
    calls = iter(range(10_000))

    def noise(features):
        gen = torch.Generator().manual_seed(next(calls))
        return torch.randn(features.shape, generator=gen)

    report = leakage_gauge(corpus, ["gender"], transform=noise, config=FAST, workers=1)
    assert report["gender"].informed <= report["gender"].chance + 0.25, report.format()


def test_without_a_valid_split_the_decay_is_fixed_and_rows_without_labels_are_counted(
        tmp_path):
    path = write_corpus(tmp_path, valid=False)
    manifest = Manifest.read(path)
    rows = manifest.rows
    rows[0]["emotion"] = rows[1]["emotion"] = ""
    assert rows[6]["split"] == "test"
    rows[6]["speaker"] = "newcomer"  # a class the attacker never saw in training
    report = leakage_gauge(manifest.replace_rows(rows), ["gender", "emotion", "speaker"],
                           config=FAST, cache=FeatureCache(tmp_path / "cache"), workers=1)
    assert report.selection == "fixed"
    assert report["gender"].weight_decay == {"linear": FAST.default_weight_decay,
                                             "mlp": FAST.default_weight_decay}
    assert report["gender"].informed >= report["gender"].chance + 0.35
    assert report["emotion"].missing == 2 and report["emotion"].train == 38
    assert (report["speaker"].unseen, report["speaker"].test) == (1, 15)
    assert report["speaker"].classes == tuple(sorted(F0))
    lines = report.format().splitlines()
    assert "emotion: left out 2 row(s) without a label" in lines
    assert "speaker: left out 1 valid/test row(s) of a class not in training" in lines
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["attributes"][1]["missing_label"] == 2
    assert (tmp_path / "cache").is_dir()


def test_unusable_attributes_are_refused_by_name(tmp_path, corpus):
    with pytest.raises(ManifestError, match=r"manifest.csv has no column 'accent'"):
        leakage_gauge(corpus, ["gender", "accent"])
    manifest = Manifest.read(corpus)
    single = manifest.with_column("room", ["a"] * len(manifest))
    with pytest.raises(ManifestError, match="'room' has 1 class"):
        leakage_gauge(single, ["room"], workers=1)
    split = manifest.with_column("speaker", [r["speaker"] + r["split"] for r in manifest.rows])
    with pytest.raises(ManifestError, match="no test row of column 'speaker'"):
        leakage_gauge(split, ["speaker"], workers=1)


def test_the_logistic_head_separates_separable_vectors():
    x = torch.randn(60, 5, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = fit_logistic(x, y, 2, weight_decay=1e-4)
    assert (model(x).argmax(dim=1) == y).float().mean() >= 0.95
    assert isinstance(model, torch.nn.Linear) and not model.training


def test_gauge_command_prints_the_table_and_writes_json(corpus, tmp_path, capsys):
    out = tmp_path / "gauge.json"
    obfuscator = save_tiny_obfuscator(tmp_path / "obf")
    assert main(["gauge", str(corpus), "--attribute", "gender", "--attribute", "speaker",
                 "--obfuscator", str(obfuscator), "--json", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[1].split()
    assert header == ["attribute", "classes", "test", "chance", "linear", "mlp", "informed",
                      "original"]
    data = json.loads(out.read_text())
    assert data["obfuscator"] == str(obfuscator) and data["transformed"]
    assert [a["attribute"] for a in data["attributes"]] == ["gender", "speaker"]
    assert data["attributes"][0]["original"] >= 0.85


def test_gauge_command_errors_are_one_line_with_exit_2(corpus, tmp_path, capsys):
    assert main(["gauge", str(corpus), "--attribute", "accent", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'accent'" in err and str(corpus) in err
    assert len(err.strip().splitlines()) == 1
    assert main(["gauge", str(corpus), "--attribute", "gender", "--json", str(corpus)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "would overwrite the input" in err
    assert "--json" in err
    assert Manifest.read(corpus).rows  # untouched
    assert main(["gauge", str(tmp_path / "none.csv"), "--attribute", "gender"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["gauge", str(corpus)])  # --attribute is required
    assert "--attribute" in capsys.readouterr().err
