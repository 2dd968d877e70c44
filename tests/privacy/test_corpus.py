"""Tests for obfuscating files and corpora (optin.privacy.corpus): no output over an input,
resuming only the same model and settings, no non-finite output."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch
from tests.conftest import save_tiny_obfuscator, write_tiny_corpus

from optin.audio.features import FeatureConfig
from optin.audio.io import AudioError
from optin.errors import NothingReadError
from optin.files import OutputError
from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
from optin.privacy.corpus import STATE_FILE, obfuscate_inputs
from optin.privacy.obfuscator import Obfuscator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two different tiny obfuscators: (O, O2)."""
    root = tmp_path_factory.mktemp("models")
    return save_tiny_obfuscator(root / "O", seed=0), save_tiny_obfuscator(root / "O2", seed=1)


def digests(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_over_inputs_are_refused_and_nothing_changes(models, tmp_path):
    csv = write_tiny_corpus(tmp_path / "corpus")
    wav = tmp_path / "corpus" / "wav" / "utt 0.wav"
    before = digests(tmp_path)
    with pytest.raises(OutputError) as info:
        obfuscate_inputs(models[0], [wav], wav.parent, progress=False, griffin_lim_iters=2)
    assert str(info.value) == (f"the output {wav} would overwrite the input {wav}; choose "
                               "another --out-dir")
    with pytest.raises(OutputError, match=rf"the output .*corpus/manifest\.csv would "
                                          rf"overwrite the input {csv}"):
        obfuscate_inputs(models[0], [csv], csv.parent, progress=False, griffin_lim_iters=2)
    assert digests(tmp_path) == before  # nothing written, not even the settings record


def test_resumes_only_what_the_same_model_and_settings_made(models, tmp_path):
    csv = write_tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "oo"
    report = obfuscate_inputs(models[0], [csv], out, progress=False, griffin_lim_iters=2)
    assert (report.written, report.reused) == (4, 0)
    made = digests(out)
    assert (out / STATE_FILE).is_file()
    same = Obfuscator.load(models[0])  # the same weights, loaded anew: resumes
    report = obfuscate_inputs(same, [csv], out, progress=False, griffin_lim_iters=2)
    assert (report.written, report.reused) == (0, 4)
    for model, iters, field in ((models[1], 2, "model_weights_sha256"),
                                (models[0], 3, "griffin_lim_iters: 2 there, 3 now")):
        with pytest.raises(OutputError) as info:
            obfuscate_inputs(model, [csv], out, progress=False, griffin_lim_iters=iters)
        assert str(info.value).startswith(f"{out} holds files obfuscated with other settings")
        assert field in str(info.value)
    assert digests(out) == made
    (out / STATE_FILE).unlink()  # outputs without a record: their model is unknown
    with pytest.raises(OutputError, match=r"holds .* but no obfuscation\.json"):
        obfuscate_inputs(models[0], [csv], out, progress=False, griffin_lim_iters=2)
    shutil.rmtree(out)


def test_non_finite_output_is_never_written(tmp_path):
    """An obfuscator that outputs NaN (built in memory, past the loader's check)."""
    csv = write_tiny_corpus(tmp_path / "corpus")
    net = Generator(GeneratorConfig(base_width=4, residual_blocks=1))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    broken = Obfuscator(net, FeatureConfig())
    wav = tmp_path / "corpus" / "wav" / "utt 1.wav"
    with pytest.raises(AudioError, match=r"utt 1\.wav: refusing to write audio with \d+ NaN"):
        obfuscate_inputs(broken, [wav], tmp_path / "files", progress=False, griffin_lim_iters=2)
    with pytest.raises(NothingReadError, match=r"^nothing was obfuscated: all 4 rows failed "
                                               r"\(utt 0: .*utt_0\.wav: refusing to write "
                                               r"audio with \d+ NaN.*; and 3 more\)$"):
        obfuscate_inputs(broken, [csv], tmp_path / "m", progress=False, griffin_lim_iters=2,
                         on_error="skip")
    assert not (tmp_path / "files").exists()
    assert sorted(p.name for p in (tmp_path / "m").rglob("*")) == [STATE_FILE]  # no manifest


def test_features_are_checked_before_they_are_written(tmp_path):
    from optin.privacy.corpus import save_features

    features = np.zeros((161, 10), np.float32)
    features[3, 4] = np.inf
    with pytest.raises(AudioError, match=r"x\.npy: refusing to write features with 1 NaN"):
        save_features(tmp_path / "x.npy", features)
    assert list(tmp_path.iterdir()) == []
    features[3, 4] = 0.0
    save_features(tmp_path / "x.npy", features)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), features)
