"""Fitting the decision-template protector (the opt-in limit) against the frozen permitted models.

Label-free: the only supervision is the tasks' own answers on the training split. The permitted
tasks are those of :mod:`optin.training.permitted`: a DeepSpeech2 target (``optin train
target``), the app's own TorchScript or ONNX model (per utterance or per frame), Silero VAD,
or several of them (one template per joint answer).

* **DeepSpeech2 targets on spectrograms** (the issue-22 case, one or several): each joint answer
  gets a template of ``period`` frames, started at the mean spectrum of the training utterances
  answered so (or at the most confident one's middle, ``start: natural``) and optimised so that
  every target classifies every window of it, at every circular offset, as its part of the
  answer (cross-entropy on random circular crops, plus a small pull towards the start).
  Selection: every ``check_every`` steps the templates are checked on a fixed grid (every
  answer at offsets every ``segment_hop // 5`` frames, and whole outputs of 1 to 3 quanta
  through each target's own segmentation and vote); the latest templates with the best grid
  agreement are kept, converged at 1.0.
* **Every other case** (a model from a file, audio in, frame answers):
  :mod:`optin.training.template_fit`, on whole rendered outputs heard as an app hears them.

The checkpoint holds the DeepSpeech2 deciders and the templates; a decider from a file is
copied beside it (``decider-<i>.<suffix>``, its SHA-256 in the sealed config) and attached when
the protector is loaded (:meth:`optin.privacy.obfuscator.Obfuscator.load`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as nnf
from torch import Tensor

from optin.checkpoint import save_checkpoint
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.files import write_json
from optin.models.decision_template import (
    DEEPSPEECH2,
    AnswerTask,
    DecisionTemplateConfig,
    DecisionTemplateProtector,
)
from optin.models.template_render import split_joint
from optin.privacy.obfuscator import TEMPLATE_KIND
from optin.privacy.pretrained import file_sha256, resolve_source
from optin.settings import OneOf, Rule, StrictConfig, above, at_least, check_fields
from optin.training.data import FeatureStore
from optin.training.distillation import DistillSettings, distil_student
from optin.training.permitted import PermittedTask, TaskSet, load_tasks
from optin.training.records import check_run_settings, write_metrics
from optin.training.runs import log
from optin.training.template_answers import SplitAnswers, collect_answers
from optin.training.template_fit import (
    Hearing,
    RenderedFit,
    Selection,
    grid_plans,
    optimise_rendered,
    plans_of_answers,
    uniform_draw,
    utterance_draw,
)
from optin.training.template_starts import starts

PRETRAINED = "pretrained"


@dataclass(frozen=True)
class TemplateTrainConfig(StrictConfig):
    """Settings of :func:`fit_decision_templates`.

    Attributes:
        period: frames of each template (the output repeats it).
        length_quantum: output length = input length rounded up to a multiple of this many
            frames (0 keeps the exact length: the utterance's length then leaves the device).
        steps: optimisation steps; batch_size: circular crops per step (DeepSpeech2 deciders
            on spectrograms), or whole rendered outputs per step (every other case: 4 to 8
            is enough, each is a whole utterance through the app's model).
        lr: Adam learning rate on the templates.
        proximity: weight of the mean squared pull towards each template's start.
        start_noise: std of the seeded noise added to a spectrogram start.
        start: "mean" (the mean spectrum of what each answer was given to) or "natural" (the
            most confident real training utterance of each answer).
        boundary_step: decisions per block of a frame task (its boundaries' step).
        crossfade: frames of cross-fade where a frame answer changes.
        max_frames: frames of an utterance a frame-task fit renders at most (its start).
        check_every: steps between checks (the selection rule).
        seed: seeds the start noise and the draws.
        decider: who decides on the device: "target" (a copy of T: the limit itself, for
            when the app's model may run on the device) or "student" (a smaller DeepSpeech2
            taught by T's answers alone, :mod:`optin.training.distillation`; T does not run).
        student_channels, student_hidden, student_layers: the student's size.
        student_steps, student_lr: its teaching (selected on agreement with T on the valid
            split's audio, T's answers only).
    """

    period: int = 100
    length_quantum: int = 100
    steps: int = 100
    batch_size: int = 32
    lr: float = 0.05
    proximity: float = 0.01
    start_noise: float = 0.3
    start: Literal["mean", "natural"] = "mean"
    boundary_step: int = 1
    crossfade: float = 1.0
    max_frames: int = 400
    check_every: int = 25
    seed: int = 0
    decider: Literal["target", "student"] = "target"
    student_channels: int = 8
    student_hidden: int = 32
    student_layers: int = 2
    student_steps: int = 600
    student_lr: float = 3e-3

    HELP: ClassVar[dict[str, str]] = {
        "period": "frames of each template (the output repeats it)",
        "length_quantum": "output frames = input frames rounded up to a multiple of this "
                          "(0: the exact length, which lets the utterance's length through)",
        "start": "mean (the mean spectrum of each answer) or natural (the most confident "
                 "real training utterance of each answer)",
        "boundary_step": "decisions per block of a frame task (e.g. Silero VAD): the step "
                         "its speech boundaries are quantised to",
        "decider": "who decides on the device: target (a copy of T: the limit) or student "
                   "(a smaller network taught by T's answers)",
    }

    RANGES: ClassVar[dict[str, Rule]] = {
        "period": at_least(1), "length_quantum": at_least(0), "steps": at_least(1),
        "batch_size": at_least(1), "lr": above(0.0), "proximity": at_least(0.0),
        "start_noise": at_least(0.0), "start": OneOf(("mean", "natural")),
        "boundary_step": at_least(1), "crossfade": at_least(0.0), "max_frames": at_least(1),
        "check_every": at_least(1), "seed": at_least(0),
        "decider": OneOf(("target", "student")), "student_channels": at_least(1),
        "student_hidden": at_least(1), "student_layers": at_least(1),
        "student_steps": at_least(1), "student_lr": above(0.0),
    }

    def __post_init__(self) -> None:
        check_fields(self)


def class_starts(features: list[Tensor], decisions: Tensor, n_classes: int) -> Tensor:
    """Mean spectrum (over time and utterances) of the utterances T assigns to each class;
    a class T never chose starts at the mean of all. (F, T_i) each, (U,) -> (K, F)."""
    spectra = torch.stack([f.mean(dim=1) for f in features])  # (U, F)
    overall = spectra.mean(dim=0)
    return torch.stack([spectra[decisions == k].mean(dim=0) if (decisions == k).any()
                        else overall for k in range(n_classes)])


def circular_crops(templates: Tensor, classes: Tensor, offsets: Tensor, length: int) -> Tensor:
    """Windows of ``length`` frames of ``templates`` (K, F, P), read circularly from
    ``offsets`` (B,) of ``classes`` (B,) -> (B, F, length)."""
    period = templates.shape[2]
    index = (offsets[:, None] + torch.arange(length)[None]) % period  # (B, length)
    chosen = templates[classes]  # (B, F, P)
    return torch.gather(chosen, 2, index[:, None, :].expand(-1, chosen.shape[1], -1))


def _parts(protector: DecisionTemplateProtector, joint: Tensor) -> list[Tensor]:
    return split_joint(joint, protector.config.class_counts)


@torch.no_grad()
def grid_agreement(protector: DecisionTemplateProtector) -> float:
    """Share of checks where the deciders answer the template's own part of the answer: every
    answer at offsets every ``hop // 5`` frames, and whole outputs of 1, 2 and 3 quanta (each
    decider's vote). DeepSpeech2 deciders on spectrogram templates."""
    templates = protector.templates.detach()
    n_joint, _, period = templates.shape
    hits: list[float] = []
    for i, task in enumerate(protector.tasks):
        step = max(1, task.segment_hop // 5)
        offsets = torch.arange(0, period, step)
        joint = torch.arange(n_joint).repeat_interleave(len(offsets))
        crops = circular_crops(templates, joint, offsets.repeat(n_joint), task.segment_length)
        decider = protector.decider_of(i)
        decider.eval()  # type: ignore[union-attr]
        lengths = torch.full((len(joint),), task.segment_length, dtype=torch.long)
        want = _parts(protector, joint)[i]
        hits += (decider(crops, lengths).argmax(dim=1) == want).float().tolist()
    quantum = protector.config.length_quantum or protector.tasks[0].segment_length
    every = torch.arange(n_joint)
    for n in (1, 2, 3):
        decided = protector.decide(protector.render(_as_answers(protector, every), quantum * n))
        decided = [decided] if isinstance(decided, Tensor) else decided
        for got, want in zip(decided, _parts(protector, every), strict=True):
            hits += (got == want).float().tolist()
    return sum(hits) / len(hits)


def _as_answers(protector: DecisionTemplateProtector, joint: Tensor) -> Tensor | list[Tensor]:
    """Joint indices (B,) as what :meth:`render` takes (a tensor in the single-task form)."""
    return joint if not protector.config.tasks else _parts(protector, joint)


def optimise_templates(protector: DecisionTemplateProtector, start: Tensor,
                       cfg: TemplateTrainConfig,
                       on_check: Callable[[dict[str, Any]], None] | None = None,
                       generator: torch.Generator | None = None) -> dict[str, Any]:
    """Optimise ``protector.templates`` from ``start`` (J, F, P) so that each frozen
    DeepSpeech2 decider classifies every circular window of template j as its part of j; keep
    the selection rule's choice in the protector. Crops are drawn from ``generator`` (default:
    seeded with ``cfg.seed``). Returns the selected check's record (step, losses, agreement)."""
    n_joint = start.shape[0]
    generator = generator or torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        protector.templates.copy_(start)
    protector.eval()
    optimiser = torch.optim.Adam([protector.templates], lr=cfg.lr)
    selection = Selection(start)
    for step in range(1, cfg.steps + 1):
        joint = torch.randint(n_joint, (cfg.batch_size,), generator=generator)
        offsets = torch.randint(start.shape[2], (cfg.batch_size,), generator=generator)
        l_t = torch.zeros(())
        for i, (task, part) in enumerate(zip(protector.tasks, _parts(protector, joint),
                                             strict=True)):
            crops = circular_crops(protector.templates, joint, offsets, task.segment_length)
            lengths = torch.full((cfg.batch_size,), task.segment_length, dtype=torch.long)
            l_t = l_t + nnf.cross_entropy(protector.decider_of(i)(crops, lengths), part)
        pull = (protector.templates - start).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        (l_t + cfg.proximity * pull).backward()
        optimiser.step()
        if step % cfg.check_every == 0 or step == cfg.steps:
            selection.check(protector, step, l_t, pull, grid_agreement(protector), on_check)
    return selection.keep(protector)


def answer_task(task: PermittedTask, n_classes: int) -> AnswerTask:
    """How the protector's config names one permitted task (of ``n_classes`` answers)."""
    if task.classifier is not None:
        clf = task.classifier
        return AnswerTask(task.name, "utterance", len(clf.encoder), "spectrogram", DEEPSPEECH2,
                          clf.model.config.to_dict(), 0, clf.segments.length, clf.segments.hop,
                          clf.vote_method)
    assert task.pretrained is not None
    return AnswerTask(task.name, task.level, n_classes, task.input, PRETRAINED,
                      {"adapter": task.pretrained.spec.adapter},
                      task.pretrained.frame_samples or 0)


def protector_config(tasks: TaskSet, cfg: TemplateTrainConfig, levels: SplitAnswers
                     ) -> DecisionTemplateConfig:
    """The protector's architecture for ``tasks``: the issue-22 form for one DeepSpeech2 task,
    the task list otherwise; the waveform domain when a task reads audio."""
    features = tasks.features
    common = {"period": cfg.period, "length_quantum": cfg.length_quantum,
              "level_mean": levels.level_mean, "level_std": levels.level_std,
              "hop_length": features.hop_length, "sample_rate": features.sample_rate,
              "target_dbfs": features.target_dbfs}
    answer = [answer_task(t, k) for t, k in zip(tasks.tasks, levels.n_classes, strict=True)]
    if len(answer) == 1 and answer[0].family == DEEPSPEECH2:
        a = answer[0]
        return DecisionTemplateConfig(decider=a.arch, segment_length=a.segment_length,
                                      segment_hop=a.segment_hop, vote_method=a.vote_method,
                                      **common)
    domain = "waveform" if tasks.needs_phase else "spectrogram"
    return DecisionTemplateConfig(tasks=[a.to_dict() for a in answer], domain=domain,
                                  boundary_step=cfg.boundary_step, crossfade=cfg.crossfade,
                                  **common)


def build_protector(tasks: TaskSet, arch: DecisionTemplateConfig) -> DecisionTemplateProtector:
    """The protector with T's copies loaded and the pretrained models attached."""
    protector = DecisionTemplateProtector(arch, {
        i: t.pretrained for i, t in enumerate(tasks.tasks) if t.pretrained is not None})
    for i, task in enumerate(tasks.tasks):
        if task.classifier is not None:
            protector.decider_of(i).load_state_dict(  # type: ignore[union-attr]
                task.classifier.model.state_dict())
    return protector.eval()


def _fit(protector: DecisionTemplateProtector, tasks: TaskSet, train: SplitAnswers,
         held: SplitAnswers, cfg: TemplateTrainConfig,
         checked: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(cfg.seed)
    arch = protector.config
    start = starts(train, protector.tasks, arch.domain, cfg.period, tasks.features, cfg.start,
                   cfg.start_noise if arch.domain == "spectrogram" else 0.0, generator)
    if arch.domain == "spectrogram" and all(t.family == DEEPSPEECH2 for t in protector.tasks):
        return optimise_templates(protector, start, cfg, checked, generator)
    hear = Hearing(protector, tasks.features)
    settings = RenderedFit(cfg.steps, cfg.batch_size, cfg.lr, cfg.proximity, cfg.check_every)
    if protector.has_frames:
        draw = utterance_draw(plans_of_answers(train, protector, list(range(len(train))),
                                               cfg.max_frames), cfg.batch_size)
        checks = plans_of_answers(held, protector, list(range(min(len(held), 48))),
                                  cfg.max_frames)
    else:
        draw, checks = uniform_draw(protector, cfg.batch_size), grid_plans(protector)
    return optimise_rendered(protector, start, hear, draw, checks, settings, generator, checked)


def _settings(tasks: TaskSet, cfg: TemplateTrainConfig, manifest: Manifest) -> dict[str, Any]:
    """What identifies the run (the issue-22 form for one DeepSpeech2 target)."""
    base = {"kind": TEMPLATE_KIND, "config": cfg.to_dict()}
    only = tasks.tasks[0]
    if len(tasks.tasks) == 1 and only.classifier is not None:
        return {**base, "target_sha256": only.fingerprint["weights_sha256"],
                "manifest_fingerprint": manifest.fingerprint()}
    return {**base, "targets": tasks.fingerprints(), "manifest_fingerprint": manifest.fingerprint()}


def fit_decision_templates(manifest: Manifest | str | Path, target: Any, out: str | Path,
                           config: TemplateTrainConfig | None = None,
                           progress: bool = True) -> dict[str, Any]:
    """Fit the templates of the permitted tasks' answers on the manifest's train split; write
    ``out/obfuscator`` (a checkpoint that :class:`optin.privacy.obfuscator.Obfuscator` loads)
    and ``out/final.json``. ``target``: a DeepSpeech2 target folder, a model file or built-in
    name, a :class:`~optin.training.permitted.TargetChoice`, or a list of those (several
    tasks). A finished run with the same settings is found, not redone.

    Returns the final record (settings, selection, agreement, converged, seconds).
    """
    cfg = config or TemplateTrainConfig()
    manifest = manifest if isinstance(manifest, Manifest) else Manifest.read(manifest)
    out = Path(out)
    tasks = load_tasks(target)
    check_run_settings(out, _settings(tasks, cfg, manifest))
    final_path = out / "final.json"
    if final_path.is_file() and (out / "obfuscator" / "config.json").is_file():
        return json.loads(final_path.read_text())
    if cfg.decider == "student" and (len(tasks.tasks) > 1 or tasks.tasks[0].classifier is None):
        raise ValueError("decider 'student' is for one DeepSpeech2 target; a model from a file "
                         "decides as itself (decider 'target')")
    start_time = time.perf_counter()
    cache = FeatureCache.for_manifest(manifest, tasks.features)
    store = FeatureStore(manifest.split("train"), cache, progress=progress)
    train = collect_answers(tasks, store, cfg.boundary_step)
    valid = manifest.filter(lambda row: row.get("split") == "valid")
    held_store = FeatureStore(valid, cache, progress=False) if len(valid) else store
    held = collect_answers(tasks, held_store, cfg.boundary_step) if len(valid) else train
    protector = build_protector(tasks, protector_config(tasks, cfg, train))
    history: list[dict[str, Any]] = []

    def checked(record: dict[str, Any]) -> None:
        history.append(record)
        write_metrics(out / "metrics.csv", history)
        if progress:
            log(f"templates step {record['step']}/{cfg.steps}: L_t {record['target_loss']:.4f} "
                f"pull {record['proximity']:.4f} agreement {record['grid_agreement']:.3f}")

    best = _fit(protector, tasks, train, held, cfg, checked)
    student: dict[str, Any] | None = None
    if cfg.decider == "student":
        protector, student = _with_student(protector, tasks.tasks[0], store, held_store, cfg,
                                           progress)
    _save(out / "obfuscator", protector, tasks, manifest, cfg)
    frames = protector.has_frames
    final = {
        "settings": cfg.to_dict(),
        "training": {"selected_step": best["step"], "grid_agreement": best["grid_agreement"],
                     "converged": best["grid_agreement"] >= (FRAME_GOAL if frames else 1.0),
                     "steps": cfg.steps,
                     "selection_rule": "latest step with the best check agreement",
                     "seconds": round(time.perf_counter() - start_time, 1)},
        "target_decisions": _decision_counts(protector, train),
        "decider": {"kind": cfg.decider, "parameters": _decider_parameters(protector),
                    "target_parameters": _target_parameters(tasks), "student": student},
        "domain": protector.config.domain,
    }
    write_json(final_path, final)
    return final


FRAME_GOAL = 0.98  # frame answers: the share of frames a converged fit gives back


def _decision_counts(protector: DecisionTemplateProtector, train: SplitAnswers) -> list[int]:
    """How often each (first task's) class was answered on the training split."""
    k = protector.tasks[0].n_classes
    answers = torch.cat([a.reshape(-1) for a in train.answers[0]])
    return torch.bincount(answers, minlength=k).tolist()


def _decider_parameters(protector: DecisionTemplateProtector) -> int:
    total = 0
    for i, task in enumerate(protector.tasks):
        module = protector.decider_of(i)
        if isinstance(module, torch.nn.Module):
            total += sum(p.numel() for p in module.parameters()) + sum(
                b.numel() for b in module.buffers()) * (task.family != DEEPSPEECH2)
    return total


def _target_parameters(tasks: TaskSet) -> int:
    return sum(sum(p.numel() for p in (t.classifier.model if t.classifier is not None
                                       else t.pretrained).parameters())  # type: ignore[union-attr]
               for t in tasks.tasks)


def _save(folder: Path, protector: DecisionTemplateProtector, tasks: TaskSet,
          manifest: Manifest, cfg: TemplateTrainConfig) -> None:
    """The checkpoint, with every decider from a file copied beside it and named in the
    config with its SHA-256, input and adapter."""
    folder.mkdir(parents=True, exist_ok=True)
    attached = []
    for i, task in enumerate(tasks.tasks):
        if task.pretrained is None:
            continue
        source = resolve_source(task.pretrained.spec.source)
        name = f"decider-{i}{source.suffix or '.bin'}"
        shutil.copyfile(source, folder / name)
        attached.append({"task": i, "file": name, "sha256": file_sha256(folder / name),
                         "input": task.pretrained.spec.input,
                         "adapter": task.pretrained.spec.adapter,
                         "source": task.pretrained.spec.source})
    labels = [{"attribute": t.name, "classes": list(t.classifier.encoder.classes)
               if t.classifier is not None else None} for t in tasks.tasks]
    save_checkpoint(folder, protector.state_dict(), {
        "kind": TEMPLATE_KIND, "architecture": protector.config.to_dict(),
        "features": tasks.features.to_dict(),
        "labels": labels[0] if not protector.config.tasks else {"tasks": labels},
        "attached": attached,
        "provenance": {"targets": tasks.fingerprints(),
                       "manifest_fingerprint": manifest.fingerprint(), "seed": cfg.seed},
    })


def _with_student(protector: DecisionTemplateProtector, task: PermittedTask,
                  store: FeatureStore, held: FeatureStore, cfg: TemplateTrainConfig,
                  progress: bool) -> tuple[DecisionTemplateProtector, dict[str, Any]]:
    """The protector with a student of T as its decider (the templates stay, T-checked)."""
    t = task.classifier
    assert t is not None
    arch = replace(t.model.config, conv_channels=cfg.student_channels,
                   hidden_size=cfg.student_hidden, rnn_layers=cfg.student_layers)

    def checked(record: dict[str, Any]) -> None:
        if progress:
            log(f"student step {record['step']}/{cfg.student_steps}: KL "
                f"{record['distill_loss']:.4f} agreement with T on held-out audio "
                f"{record['agreement']:.3f}")

    student, record = distil_student(
        t.model, arch, [store.features(i) for i in range(len(store))],
        [held.features(i) for i in range(len(held))], t.segments, t.vote_method,
        DistillSettings(steps=cfg.student_steps, lr=cfg.student_lr,
                        check_every=max(1, cfg.student_steps // 12), seed=cfg.seed), checked)
    config = replace(protector.config, decider=arch.to_dict())
    with_student = DecisionTemplateProtector(config)
    with_student.decider.load_state_dict(student.state_dict())
    with torch.no_grad():
        with_student.templates.copy_(protector.templates)
    held_name = "valid" if held is not store else "train"
    return with_student.eval(), {**record, "held_out": held_name}
