"""Learning templates through the permitted models' own gradient, on whole rendered outputs.

The general fit of :mod:`optin.training.decision_templates` (any decider that is not a
DeepSpeech2 copy on spectrograms, the waveform domain, frame answers): each step renders B
outputs exactly as the protector will on the device (from position 0, the output's own length,
cross-faded frame answers), lets every task's model hear them as an app would (audio at the
fixed loudness of ``load_audio``, features from the project's front-end), and descends the
sum of the tasks' cross-entropies against the answers rendered:

* with utterance tasks only, an output is a joint answer j (drawn uniformly over all J) of
  1 to 3 length quanta: the outputs the device can produce for inputs up to 3 quanta long;
* with a frame task, an output renders the answers the tasks gave on one real training
  utterance (its frame decisions on T's grid, with the utterance tasks' answers there).

Templates whose start is silent (all zeros: "no speech") stay silent. The learning rate is in
units of the start's scale (a waveform template moves by a share of its own level per step).

Selection rule: every ``check_every`` steps the protector decides on a fixed check set of
rendered outputs (all J answers at 1 to 3 quanta; with frame tasks the answers of the held-out
split's utterances) and scores the share of answers (utterances and frames) its deciders give
back; the latest templates with the best score are kept, and the run counts as converged at
1.0 (utterance tasks) or at ``frame_goal`` (frame tasks, whose boundaries cost a little).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor

from optin.audio.features import FeatureConfig, SpectrogramFrontEnd
from optin.audio.segments import segment_batch
from optin.models.decision_template import DEEPSPEECH2, DecisionTemplateProtector
from optin.models.template_render import split_joint
from optin.training.permitted import fixed_dither
from optin.training.template_answers import SplitAnswers

MAX_QUANTA = 3


@dataclass(frozen=True)
class Plan:
    """One output to render: each task's answer ((1,) per utterance, (1, N) per frame) and its
    length in frames; ``input_frames`` is the input the frame answers span."""

    answers: list[Tensor]
    frames: int
    input_frames: int


class Hearing:
    """What the tasks' models hear of a rendered output: ``features`` (B, F, T) and ``wave``
    (B, S) (the waveform domain's audio at the fixed loudness), differentiable."""

    def __init__(self, protector: DecisionTemplateProtector, features: FeatureConfig) -> None:
        self.protector = protector
        self.config = features
        self.frontend = SpectrogramFrontEnd(features)

    def __call__(self, rendered: Tensor) -> tuple[Tensor | None, Tensor | None]:
        if self.protector.config.domain == "spectrogram":
            return rendered, None
        wave = self.protector.loudness(rendered)
        needs_features = any(t.input == "spectrogram" for t in self.protector.tasks)
        features = self.frontend(wave)[0] if needs_features else None
        # a model's magnitude front-end has a NaN gradient at exact digital silence (a silent
        # template): the -100 dBFS dither of training against waveform targets keeps it finite
        return features, wave + fixed_dither(wave.shape[-1], wave.device)


def plans_of_answers(answers: SplitAnswers, protector: DecisionTemplateProtector,
                     rows: list[int], max_frames: int) -> list[Plan]:
    """A plan per utterance ``rows``: its tasks' answers, cut to ``max_frames`` input frames."""
    out = []
    for u in rows:
        frames = min(int(answers.features[u].shape[1]), max_frames)
        parts = []
        for i, task in enumerate(protector.tasks):
            a = answers.answers[i][u]
            if task.level == "frame":
                full = int(answers.features[u].shape[1])
                a = a[: max(1, round(len(a) * frames / full))]
            parts.append(a.reshape(1, -1) if task.level == "frame" else a.reshape(1))
        out.append(Plan(parts, protector.output_frames(frames), frames))
    return out


def joint_plans(protector: DecisionTemplateProtector, joint: list[int], quanta: list[int]
                ) -> list[Plan]:
    """Plans of joint answers ``joint`` at ``quanta`` length quanta each."""
    counts = protector.config.class_counts
    quantum = protector.config.length_quantum or protector.config.period
    out = []
    for j, n in zip(joint, quanta, strict=True):
        parts = [p.reshape(1) for p in split_joint(torch.tensor([j]), counts)]
        out.append(Plan(parts, quantum * n, quantum * n))
    return out


def _render(protector: DecisionTemplateProtector, plan: Plan) -> Tensor:
    scale = protector.config.hop_length if protector.config.domain == "waveform" else 1
    return protector.render(plan.answers, plan.frames, plan.input_frames * scale)


def plan_loss(protector: DecisionTemplateProtector, hear: Hearing, plans: list[Plan]
              ) -> Tensor:
    """Mean over ``plans`` of the sum over tasks of the cross-entropy of each task's model on
    the rendered output against the answer rendered (per frame for frame tasks)."""
    total = torch.zeros(())
    for plan in plans:
        features, wave = hear(_render(protector, plan))
        for i, task in enumerate(protector.tasks):
            x = wave if task.input == "waveform" else features
            assert x is not None
            answer = plan.answers[i]
            if task.family == DEEPSPEECH2:
                segs, lens, _ = segment_batch([x[0]], task.segments)
                logits = protector.decider_of(i)(segs, lens)  # (S, K)
                total = total + nnf.cross_entropy(logits, answer.expand(len(segs)))
            elif task.level == "utterance":
                total = total + nnf.cross_entropy(protector.decider_of(i)(x).reshape(1, -1),
                                                  answer)
            else:
                logits = protector.decider_of(i)(x)[0]  # (N, K)
                n = min(len(logits), answer.shape[1])
                total = total + nnf.cross_entropy(logits[:n], answer[0, :n])
    return total / len(plans)


@torch.no_grad()
def plan_agreement(protector: DecisionTemplateProtector, hear: Hearing, plans: list[Plan]
                   ) -> float:
    """Share of the rendered answers (utterances, and frames of frame tasks) that the
    protector's own deciders give back on the rendered outputs."""
    hits, count = 0.0, 0
    for plan in plans:
        features, wave = hear(_render(protector, plan))
        lengths = None if features is None else torch.tensor([features.shape[2]])
        got = protector.decide(features, lengths, wave)
        got = [got] if isinstance(got, Tensor) else got
        for i, task in enumerate(protector.tasks):
            want = plan.answers[i]
            if task.level == "frame":
                n = min(got[i].shape[1], want.shape[1])
                hits += float((got[i][0, :n] == want[0, :n]).float().sum())
                count += n
            else:
                hits += float((got[i].reshape(-1) == want.reshape(-1)).float().sum())
                count += 1
    return hits / max(count, 1)


@dataclass(frozen=True)
class RenderedFit:
    """Steps, plans per step, Adam learning rate, pull towards the start, check period."""

    steps: int
    batch_size: int
    lr: float
    proximity: float
    check_every: int


def optimise_rendered(protector: DecisionTemplateProtector, start: Tensor, hear: Hearing,
                      draw: Callable[[torch.Generator], list[Plan]], checks: list[Plan],
                      settings: RenderedFit, generator: torch.Generator,
                      on_check: Callable[[dict[str, Any]], None] | None = None
                      ) -> dict[str, Any]:
    """Optimise ``protector.templates`` from ``start`` on plans from ``draw``; keep the
    selection rule's choice (see the module docstring). Returns the selected check record."""
    silent = (start.reshape(start.shape[0], -1) == 0).all(dim=1)  # (J,) templates kept silent
    with torch.no_grad():
        protector.templates.copy_(start)
    protector.eval()
    scale = start.reshape(start.shape[0], -1).std(dim=1).mean().clamp(min=1e-6)
    # Adam's steps are absolute: in units of the start's own scale, the same lr serves
    # normalised features (std 1) and audio at -25 dBFS (std 0.06)
    optimiser = torch.optim.Adam([protector.templates], lr=settings.lr * float(scale))
    selection = Selection(start)
    for step in range(1, settings.steps + 1):
        plans = draw(generator)
        l_t = plan_loss(protector, hear, plans)
        pull = ((protector.templates - start) / scale).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        (l_t + settings.proximity * pull).backward()
        with torch.no_grad():
            protector.templates.grad[silent] = 0  # type: ignore[index]
        optimiser.step()
        if step % settings.check_every == 0 or step == settings.steps:
            selection.check(protector, step, l_t, pull,
                            plan_agreement(protector, hear, checks), on_check)
    return selection.keep(protector)


def uniform_draw(protector: DecisionTemplateProtector, batch: int
                 ) -> Callable[[torch.Generator], list[Plan]]:
    """Plans of uniformly drawn joint answers at 1 to :data:`MAX_QUANTA` quanta."""
    n_joint = protector.config.n_joint

    def draw(generator: torch.Generator) -> list[Plan]:
        joint = torch.randint(n_joint, (batch,), generator=generator).tolist()
        quanta = torch.randint(1, MAX_QUANTA + 1, (batch,), generator=generator).tolist()
        return joint_plans(protector, joint, quanta)

    return draw


def utterance_draw(plans: list[Plan], batch: int) -> Callable[[torch.Generator], list[Plan]]:
    """Plans of ``batch`` training utterances drawn at random."""

    def draw(generator: torch.Generator) -> list[Plan]:
        rows = torch.randint(len(plans), (batch,), generator=generator).tolist()
        return [plans[r] for r in rows]

    return draw


def grid_plans(protector: DecisionTemplateProtector) -> list[Plan]:
    """Every joint answer at 1 to :data:`MAX_QUANTA` quanta: every output an utterance-task
    protector makes for inputs up to that length."""
    n_joint = protector.config.n_joint
    joint = [j for j in range(n_joint) for _ in range(MAX_QUANTA)]
    quanta = [n for _ in range(n_joint) for n in range(1, MAX_QUANTA + 1)]
    return joint_plans(protector, joint, quanta)


class Selection:
    """The selection rule of both template fits: every check is recorded, and the latest
    templates with the best grid agreement are kept (the start until the first check)."""

    def __init__(self, start: Tensor) -> None:
        self.best: dict[str, Any] = {"grid_agreement": -1.0}
        self.chosen = start.clone()

    def check(self, protector: DecisionTemplateProtector, step: int, l_t: Tensor, pull: Tensor,
              agreement: float, on_check: Callable[[dict[str, Any]], None] | None) -> None:
        record = {"step": step, "target_loss": round(l_t.item(), 6),
                  "proximity": round(pull.item(), 6), "grid_agreement": agreement}
        if on_check is not None:
            on_check(record)
        if record["grid_agreement"] >= self.best["grid_agreement"]:
            self.best, self.chosen = record, protector.templates.detach().clone()

    def keep(self, protector: DecisionTemplateProtector) -> dict[str, Any]:
        """Put the chosen templates back; the selected check's record."""
        with torch.no_grad():
            protector.templates.copy_(self.chosen)
        return self.best
