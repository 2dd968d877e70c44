"""The permitted tasks' answers on a split: all the supervision a decision-template protector
gets (label-free), with the audio and features they were given.

A DeepSpeech2 task answers per utterance (its segments and vote); a pretrained task from a file
answers on the whole utterance (its adapter's logits), per utterance or per frame of its own
grid. Frame answers are quantised to blocks of ``boundary_step`` decisions, as the protector
quantises them on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from optin.models.template_render import joint_strides, quantise_blocks
from optin.training.data import FeatureStore
from optin.training.permitted import PermittedTask, TaskSet
from optin.training.wave_data import PhaseStore


@dataclass
class SplitAnswers:
    """Per utterance of a split: features (F, T_u), audio (S_u,) when a task reads audio, and
    per task the answer (() long per utterance, (N_u,) long per frame) and its confidence
    (the mean posterior of the answered class)."""

    features: list[Tensor]
    waves: list[Tensor] | None
    answers: list[list[Tensor]]  # [task][utterance]
    confidence: list[list[float]]  # [task][utterance]
    level_mean: float
    level_std: float
    n_classes: list[int]  # [task]: classes its model answers among

    def __len__(self) -> int:
        return len(self.features)

    def joint(self, counts: list[int], utterance_tasks: list[int]) -> Tensor:
        """(U,) joint index of the utterance answers of ``utterance_tasks`` (frame tasks 0)."""
        strides = joint_strides(counts)
        index = torch.zeros(len(self), dtype=torch.long)
        for i in utterance_tasks:
            index += torch.stack([a.reshape(()) for a in self.answers[i]]) * strides[i]
        return index


def _utterance_answer(logits: Tensor) -> tuple[Tensor, float]:
    probs = logits.float().softmax(dim=-1)
    k = probs.argmax()
    return k, float(probs[k])


def _frame_answer(logits: Tensor, step: int) -> tuple[Tensor, float]:
    probs = logits.float().softmax(dim=-1)  # (N, K)
    decided = quantise_blocks(probs.argmax(dim=-1)[None], step, probs.shape[-1])[0]
    return decided, float(probs.gather(1, decided[:, None]).mean())


def collect_answers(tasks: TaskSet, store: FeatureStore, boundary_step: int = 1,
                    with_audio: bool | None = None) -> SplitAnswers:
    """Every task's answer on every utterance of ``store`` (the original audio).

    ``with_audio``: keep each utterance's audio (default: when a task reads audio)."""
    with_audio = tasks.needs_phase if with_audio is None else with_audio
    phases = PhaseStore(store, tasks.features) if with_audio or tasks.needs_phase else None
    features = [store.features(i) for i in range(len(store))]
    waves = [phases.wave(i) for i in range(len(store))] if phases is not None else None
    answers: list[list[Tensor]] = []
    confidence: list[list[float]] = []
    counts: list[int] = []
    for task in tasks.tasks:
        got, k = _task_answers(task, tasks, store, features, waves, boundary_step)
        answers.append([a for a, _ in got])
        confidence.append([c for _, c in got])
        counts.append(k)
    levels = [store.cache.load(p, compute=False) for p in store.paths]
    return SplitAnswers(features, waves if with_audio else None, answers, confidence,
                        float(sum(s.mean for s in levels) / len(levels)),
                        float(sum(s.std for s in levels) / len(levels)), counts)


def _task_answers(task: PermittedTask, tasks: TaskSet, store: FeatureStore,
                  features: list[Tensor], waves: list[Tensor] | None, step: int
                  ) -> tuple[list[tuple[Tensor, float]], int]:
    """Each utterance's (answer, confidence), and the task's number of classes."""
    if task.classifier is not None:
        predicted = task.classifier.predict(store)
        posteriors = predicted["utterance_posteriors"]
        return ([(k, float(posteriors[u, k])) for u, k in enumerate(predicted["utterance_pred"])],
                len(task.classifier.encoder))
    out, k = [], 2
    for u, feats in enumerate(features):
        logits = tasks.utterance_scores(task, feats, waves[u] if waves is not None else None)
        k = int(logits.shape[-1])
        out.append(_utterance_answer(logits) if task.level == "utterance"
                   else _frame_answer(logits, step))
    return out, k
