"""How an experiment scores the permitted task(s) on protected data, and what their output alone
leaks (the output-only attacker).

* :class:`ClassifierJudge`: one DeepSpeech2 target T trained by the experiment (the paper's
  setting): T's utterance accuracy on original and protected test data and the agreement.
* :class:`TaskJudge`: the permitted tasks of :mod:`optin.training.permitted`, pretrained models
  from files among them (e.g. Silero VAD). A pretrained task has no labels of its own: its
  answers on the original audio are the reference, so ``original`` is 1 by definition and
  ``obfuscated`` is the agreement of its answers on the protected audio (per frame for a frame
  task), with F1. The protected audio is what an app would hear: an obfuscator's features are
  turned into audio with Griffin-Lim (as ``optin obfuscate`` writes it; the headline number)
  and with the input's phase (as in training: ``*_input_phase``); an audio-copy system
  (McAdams) is heard as it is. The output-only attacker sees a fixed summary of the task's
  answers per utterance (:func:`answer_summary`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from optin.audio.io import load_audio
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import LabelEncoder, Manifest
from optin.evaluation.attackers import (
    OutputOnlyConfig,
    output_only_accuracy,
    utterance_posteriors,
)
from optin.evaluation.experiment_config import ExperimentError
from optin.evaluation.vector_classifier import train_vector_classifier, vector_predict
from optin.metrics.classification import accuracy
from optin.training.classifier import Classifier, evaluate_classifier
from optin.training.data import FeatureStore
from optin.training.permitted import PermittedTask, TaskSet, compare_answers
from optin.training.wave_data import PhaseStore, heard_waves

GRIFFIN_LIM_ITERS = 32
Transform = Callable[[Tensor], Tensor] | None


def _checked(result: dict[str, Any], what: str) -> dict[str, Any]:
    value = result.get("utterance_accuracy")
    if not result.get("utterances") or value is None or value != value:
        raise ExperimentError(f"{what}: the evaluation produced no usable number "
                         f"({result.get('utterances', 0)} utterances, accuracy {value})")
    return result


@dataclass
class ClassifierJudge:
    """The experiment's own DeepSpeech2 target T (folder ``target_dir``)."""

    target_dir: Any
    manifest: Manifest
    target: Classifier = field(init=False)
    original: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.target = Classifier.load(self.target_dir)
        self.original = _checked(evaluate_classifier(
            self.target_dir, self.manifest, "test", progress=False, classifier=self.target,
            return_predictions=True), "target on original test data")

    def on_system(self, name: str, data: Manifest, transform: Transform) -> dict[str, float]:
        protected = _checked(evaluate_classifier(
            self.target_dir, data, "test", progress=False, classifier=self.target,
            transform=transform, return_predictions=True), f"target on '{name}' test data")
        if protected["ids"] != self.original["ids"]:
            raise ExperimentError(f"'{name}' protected test split does not hold the same "
                             "utterances as the original one")
        same = [a == b for a, b in zip(self.original["predictions"], protected["predictions"],
                                       strict=True)]
        return {"original": self.original["utterance_accuracy"],
                "obfuscated": protected["utterance_accuracy"], "agreement": sum(same) / len(same)}

    def output_only(self, train: FeatureStore, test: FeatureStore, attribute: str,
                    transform: Transform, seed: int) -> float:
        return output_only_accuracy(self.target, train, test, attribute, transform=transform,
                                    config=OutputOnlyConfig(seed=seed))

    def answers(self, store: FeatureStore, transform: Transform) -> Tensor:
        """(U, K) T's utterance posteriors on a (protected) store: all that an app gets."""
        return utterance_posteriors(self.target, store, transform)

    def permitted(self) -> list[tuple[str, str | None, bool]]:
        """(task, its labelled attribute, whether it is voice activity): T's attribute."""
        attribute = self.target.encoder.attribute
        return [(attribute, attribute, False)]


def answer_summary(answers: Tensor) -> Tensor:
    """A fixed-length summary of a task's answers on one utterance: (N, K) frame logits or
    (K,) -> (D,): the mean posterior per class, the share of frames decided per class, a
    10-bin histogram of the class-1 posterior, its spread, the decision changes per frame and
    the log number of frames."""
    logits = answers.reshape(-1, answers.shape[-1]).float()
    probs = logits.softmax(dim=-1)
    decided = torch.nn.functional.one_hot(probs.argmax(dim=-1), probs.shape[-1]).float()
    positive = probs[:, 1] if probs.shape[-1] > 1 else probs[:, 0]
    hist = torch.histc(positive, bins=10, min=0.0, max=1.0) / len(positive)
    changes = (decided.argmax(dim=-1).diff() != 0).float().mean() if len(probs) > 1 else \
        torch.zeros(())
    return torch.cat([probs.mean(0), decided.mean(0), hist, positive.std(unbiased=False)[None],
                      changes[None], torch.log(torch.tensor([float(len(probs))]))])


class TaskJudge:
    """The permitted tasks (pretrained ones scored against their own answers on the original).
    """

    def __init__(self, tasks: TaskSet, manifest: Manifest, classifier_judges:
                 dict[str, ClassifierJudge] | None = None) -> None:
        self.tasks = tasks
        self.manifest = manifest
        self.judges = classifier_judges or {}
        cache = FeatureCache.for_manifest(manifest, tasks.features)
        self.stores = {split: FeatureStore(manifest.split(split), cache, progress=False)
                       for split in ("train", "test")}
        self.phases = {s: PhaseStore(store, tasks.features) for s, store in self.stores.items()}
        self._original: dict[tuple[str, str], list[Tensor]] = {}
        self._heard: dict[tuple[str, str, Any], dict[str, list[Tensor]]] = {}

    def answers_original(self, task: PermittedTask, split: str) -> list[Tensor]:
        key = (task.name, split)
        if key not in self._original:
            store, phases = self.stores[split], self.phases[split]
            self._original[key] = [self.tasks.utterance_scores(
                task, store.features(i), phases.wave(i)) for i in range(len(store))]
        return self._original[key]

    def answers_protected(self, task: PermittedTask, split: str, data: Manifest,
                          transform: Transform, kind: str = "griffin_lim") -> list[Tensor]:
        """The task's answers on the protected version of each utterance of ``split``:
        ``kind`` griffin_lim (as an app hears obfuscated features) or input_phase (as in
        training). Computed once per task, split and protection (both kinds in one pass)."""
        source = transform if transform is not None else str(data.source)
        key = (task.name, split, source)
        if key not in self._heard:
            self._heard[key] = self._hear(task, split, data, transform)
        return self._heard[key][kind]

    def _hear(self, task: PermittedTask, split: str, data: Manifest,
              transform: Transform) -> dict[str, list[Tensor]]:
        store, phases = self.stores[split], self.phases[split]
        if transform is None:  # a protected audio copy (same ids) or the original itself
            rows = {r["id"]: r for r in data.split(split).rows}
            missing = [r["id"] for r in store.manifest.rows if r["id"] not in rows]
            if missing:
                raise ExperimentError(f"protected split '{split}' lacks {len(missing)} id(s), "
                                      f"first '{missing[0]}'")
            cfg = self.tasks.features
            cache = FeatureCache.for_manifest(data, cfg)
            out = []
            for row in store.manifest.rows:
                path = data.audio_path(rows[row["id"]])
                wave = torch.from_numpy(load_audio(path, cfg.sample_rate, cfg.volume,
                                                   cfg.target_dbfs, allow_silence=True))
                out.append(self.tasks.utterance_scores(task, cache.load(path).features, wave))
            return {"griffin_lim": out}
        heard: dict[str, list[Tensor]] = {"griffin_lim": [], "input_phase": []}
        for i in range(len(store)):
            obf = transform(store.features(i))
            if task.input != "waveform":
                heard["griffin_lim"].append(self.tasks.utterance_scores(task, obf, None))
                continue
            waves = heard_waves(obf, phases.utterance(i), self.tasks.features,
                                GRIFFIN_LIM_ITERS)
            for kind, wave in waves.items():
                heard[kind].append(self.tasks.utterance_scores(task, obf, wave))
        return heard

    def on_system(self, name: str, data: Manifest, transform: Transform) -> dict[str, float]:
        numbers: dict[str, float] = {}
        agreements = []
        for task in self.tasks.tasks:
            if task.classifier is not None:
                part = self.judges[task.name].on_system(name, data, transform)
            else:
                original = self.answers_original(task, "test")
                heard = compare_answers(list(zip(original, self.answers_protected(
                    task, "test", data, transform), strict=True)))
                part = {"original": 1.0, "obfuscated": heard["agreement"],
                        "agreement": heard["agreement"], "f1": heard["f1"],
                        "positive_share": heard["positive_share"]}
                if transform is not None and task.input == "waveform":
                    trained = compare_answers(list(zip(original, self.answers_protected(
                        task, "test", data, transform, "input_phase"), strict=True)))
                    part.update(agreement_input_phase=trained["agreement"],
                                f1_input_phase=trained["f1"])
            agreements.append(part["agreement"])
            if len(self.tasks.tasks) == 1:
                numbers.update(part)
            else:
                numbers.update({f"{k}_{task.name}": v for k, v in part.items()})
        if len(self.tasks.tasks) > 1:
            numbers.update(original=1.0, obfuscated=min(agreements), agreement=min(agreements))
        return numbers

    def permitted(self) -> list[tuple[str, str | None, bool]]:
        """(task, its labelled attribute or None, whether it is voice activity) per task."""
        return [(t.name, t.attribute, t.voice_activity) for t in self.tasks.tasks]

    def output_only(self, train: FeatureStore, test: FeatureStore, attribute: str,
                    transform: Transform, seed: int) -> float:
        """The output-only attacker on every task's answers: a DeepSpeech2 task's utterance
        log-posteriors, a pretrained task's summary (:func:`answer_summary`), side by side."""
        only = self.tasks.tasks[0]
        if len(self.tasks.tasks) == 1 and only.classifier is not None:
            return self.judges[only.name].output_only(train, test, attribute, transform, seed)
        encoder = LabelEncoder.fit(self.stores["train"].manifest, attribute)
        vectors = {split: torch.cat([self._answer_vectors(task, split, store, transform)
                                     for task in self.tasks.tasks], dim=1)
                   for split, store in (("train", train), ("test", test))}
        known = set(encoder.classes)
        # answers follow the original stores' rows (a protected copy is matched by id)
        train_rows, test_rows = self.stores["train"].manifest, self.stores["test"].manifest.rows
        rows = [i for i, r in enumerate(test_rows) if r[attribute] in known]
        y_train = torch.tensor(encoder.encode_all(train_rows))
        y_test = torch.tensor([encoder.encode(test_rows[i][attribute]) for i in rows])
        model = train_vector_classifier(vectors["train"], y_train, len(encoder),
                                        config=OutputOnlyConfig(seed=seed))
        return accuracy(y_test, vector_predict(model, vectors["test"][rows]).argmax(dim=1))

    def _answer_vectors(self, task: PermittedTask, split: str, store: FeatureStore,
                        transform: Transform) -> Tensor:
        """(U, D) what one task answers on the protected ``store``, in the original rows'
        order."""
        if task.classifier is None:
            answers = self.answers_protected(task, split, store.manifest, transform)
            return torch.stack([answer_summary(a) for a in answers])
        posteriors = self.judges[task.name].answers(store, transform)  # the store's own order
        order = {ident: i for i, ident in enumerate(store.manifest.column("id"))}
        index = [order[ident] for ident in self.stores[split].manifest.column("id")]
        return torch.log(posteriors[index].clamp_min(1e-8))
