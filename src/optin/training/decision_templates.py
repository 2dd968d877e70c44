"""Fitting the decision-template protector (the opt-in limit) against a frozen target model T.

Label-free: the only supervision is T's own decisions. Each class k of T gets a template of
``period`` frames, started at the mean spectrum of the training utterances T assigns to k (a
stationary, voice-less start) and optimised so that T classifies every window of it, at every
circular offset, as k (cross-entropy of T on random circular crops, plus a small pull towards
the start). The checkpoint holds T's copy (the decider) and the templates.

Selection rule: every ``check_every`` steps the templates are checked on a fixed grid (every
class, offsets every ``segment_hop // 5`` frames, and whole outputs of 1 to 3 quanta through T's
own segmentation and vote); the checkpoint keeps the latest templates with the best grid
agreement, and the run counts as converged when that agreement is 1.0.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as nnf
from torch import Tensor

from optin.checkpoint import read_config, save_checkpoint
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import Manifest
from optin.files import write_json
from optin.models.decision_template import DecisionTemplateConfig, DecisionTemplateProtector
from optin.privacy.obfuscator import TEMPLATE_KIND
from optin.settings import OneOf, Rule, StrictConfig, above, at_least, check_fields
from optin.training.classifier import Classifier
from optin.training.data import FeatureStore
from optin.training.distillation import DistillSettings, distil_student
from optin.training.records import check_run_settings, write_metrics
from optin.training.runs import log


@dataclass(frozen=True)
class TemplateTrainConfig(StrictConfig):
    """Settings of :func:`fit_decision_templates`.

    Attributes:
        period: frames of each template (the output repeats it).
        length_quantum: output length = input length rounded up to a multiple of this many
            frames (0 keeps the exact length: the utterance's length then leaves the device).
        steps: optimisation steps; batch_size: circular crops per step.
        lr: Adam learning rate on the templates.
        proximity: weight of the mean squared pull towards each template's start.
        start_noise: std of the seeded noise added to the start (breaks the stationarity).
        check_every: steps between grid checks (the selection rule).
        seed: seeds the start noise and the crop draws.
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
        "decider": "who decides on the device: target (a copy of T: the limit) or student "
                   "(a smaller network taught by T's answers)",
    }

    RANGES: ClassVar[dict[str, Rule]] = {
        "period": at_least(1), "length_quantum": at_least(0), "steps": at_least(1),
        "batch_size": at_least(1), "lr": above(0.0), "proximity": at_least(0.0),
        "start_noise": at_least(0.0), "check_every": at_least(1), "seed": at_least(0),
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


@torch.no_grad()
def grid_agreement(protector: DecisionTemplateProtector) -> float:
    """Share of checks where T (the decider) answers the template's own class: every class at
    offsets every ``hop // 5`` frames, and whole outputs of 1, 2 and 3 quanta (T's vote)."""
    templates = protector.templates.detach()
    k, _, period = templates.shape
    seg = protector.segments
    step = max(1, seg.hop // 5)
    offsets = torch.arange(0, period, step)
    classes = torch.arange(k).repeat_interleave(len(offsets))
    crops = circular_crops(templates, classes, offsets.repeat(k), seg.length)
    protector.decider.eval()
    lengths = torch.full((len(classes),), seg.length, dtype=torch.long)
    hits = (protector.decider(crops, lengths).argmax(dim=1) == classes).float().tolist()
    quantum = protector.config.length_quantum or seg.length
    for n in (1, 2, 3):
        outputs = protector.render(torch.arange(k), quantum * n)  # (K, F, n * quantum)
        hits += (protector.decide(outputs) == torch.arange(k)).float().tolist()
    return sum(hits) / len(hits)


def optimise_templates(protector: DecisionTemplateProtector, start: Tensor,
                       cfg: TemplateTrainConfig,
                       on_check: Callable[[dict[str, Any]], None] | None = None,
                       generator: torch.Generator | None = None) -> dict[str, Any]:
    """Optimise ``protector.templates`` from ``start`` (K, F, P) so that its frozen decider
    classifies every circular window of template k as k; keep the selection rule's choice in
    the protector. Crops are drawn from ``generator`` (default: seeded with ``cfg.seed``).
    Returns the selected check's record (step, losses, grid agreement)."""
    n_classes = start.shape[0]
    generator = generator or torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        protector.templates.copy_(start)
    protector.eval()
    optimiser = torch.optim.Adam([protector.templates], lr=cfg.lr)
    seg_len = protector.config.segment_length
    lengths = torch.full((cfg.batch_size,), seg_len, dtype=torch.long)
    best: dict[str, Any] = {"grid_agreement": -1.0}
    chosen = start.clone()
    for step in range(1, cfg.steps + 1):
        classes = torch.randint(n_classes, (cfg.batch_size,), generator=generator)
        offsets = torch.randint(start.shape[2], (cfg.batch_size,), generator=generator)
        crops = circular_crops(protector.templates, classes, offsets, seg_len)
        l_t = nnf.cross_entropy(protector.decider(crops, lengths), classes)
        pull = (protector.templates - start).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        (l_t + cfg.proximity * pull).backward()
        optimiser.step()
        if step % cfg.check_every == 0 or step == cfg.steps:
            record = {"step": step, "target_loss": round(l_t.item(), 6),
                      "proximity": round(pull.item(), 6),
                      "grid_agreement": grid_agreement(protector)}
            if on_check is not None:
                on_check(record)
            if record["grid_agreement"] >= best["grid_agreement"]:
                best, chosen = record, protector.templates.detach().clone()
    with torch.no_grad():
        protector.templates.copy_(chosen)
    return best


def fit_decision_templates(manifest: Manifest | str | Path, target: str | Path, out: str | Path,
                           config: TemplateTrainConfig | None = None,
                           progress: bool = True) -> dict[str, Any]:
    """Fit the templates of T's classes on the manifest's train split; write ``out/obfuscator``
    (a checkpoint that :class:`optin.privacy.obfuscator.Obfuscator` loads) and
    ``out/final.json``. A finished run with the same settings is found, not redone.

    Returns the final record (settings, selection, grid agreement, converged, seconds).
    """
    cfg = config or TemplateTrainConfig()
    manifest = manifest if isinstance(manifest, Manifest) else Manifest.read(manifest)
    out = Path(out)
    target = Path(target)
    target_sha = read_config(target)["weights_sha256"]
    settings = {"kind": TEMPLATE_KIND, "config": cfg.to_dict(), "target_sha256": target_sha,
                "manifest_fingerprint": manifest.fingerprint()}
    check_run_settings(out, settings)
    final_path = out / "final.json"
    if final_path.is_file() and (out / "obfuscator" / "config.json").is_file():
        return json.loads(final_path.read_text())
    start_time = time.perf_counter()
    t = Classifier.load(target)
    cache = FeatureCache.for_manifest(manifest, t.features)
    store = FeatureStore(manifest.split("train"), cache, progress=progress)
    decisions = t.predict(store)["utterance_pred"]  # (U,) T's answers: the only supervision
    levels = [cache.load(p) for p in store.paths]  # features with their level statistics
    features = [s.features for s in levels]
    arch = DecisionTemplateConfig(
        decider=t.model.config.to_dict(), period=cfg.period, length_quantum=cfg.length_quantum,
        segment_length=t.segments.length, segment_hop=t.segments.hop,
        vote_method=t.vote_method,
        level_mean=float(sum(s.mean for s in levels) / len(levels)),
        level_std=float(sum(s.std for s in levels) / len(levels)))
    protector = DecisionTemplateProtector(arch)
    protector.decider.load_state_dict(t.model.state_dict())
    protector.eval()
    n_classes, n_freq = arch.n_classes, arch.n_freq
    generator = torch.Generator().manual_seed(cfg.seed)
    start = class_starts(features, decisions, n_classes)[:, :, None].expand(-1, -1, cfg.period)
    start = start + cfg.start_noise * torch.randn(n_classes, n_freq, cfg.period,
                                                  generator=generator)
    history: list[dict[str, Any]] = []

    def checked(record: dict[str, Any]) -> None:
        history.append(record)
        write_metrics(out / "metrics.csv", history)
        if progress:
            log(f"templates step {record['step']}/{cfg.steps}: L_t {record['target_loss']:.4f} "
                f"pull {record['proximity']:.4f} grid agreement {record['grid_agreement']:.3f}")

    best = optimise_templates(protector, start, cfg, checked, generator)
    student: dict[str, Any] | None = None
    if cfg.decider == "student":
        protector, student = _with_student(protector, t, store, manifest, cache, cfg, progress)
    save_checkpoint(out / "obfuscator", protector.state_dict(), {
        "kind": TEMPLATE_KIND, "architecture": protector.config.to_dict(),
        "features": t.features.to_dict(),
        "labels": {"attribute": t.encoder.attribute, "classes": list(t.encoder.classes)},
        "provenance": {"target_sha256": target_sha,
                       "manifest_fingerprint": manifest.fingerprint(), "seed": cfg.seed},
    })
    final = {
        "settings": cfg.to_dict(),
        "training": {"selected_step": best["step"], "grid_agreement": best["grid_agreement"],
                     "converged": best["grid_agreement"] >= 1.0, "steps": cfg.steps,
                     "selection_rule": "latest step with the best grid agreement",
                     "seconds": round(time.perf_counter() - start_time, 1)},
        "target_decisions": torch.bincount(decisions, minlength=n_classes).tolist(),
        "decider": {"kind": cfg.decider, "parameters": protector.decider.num_parameters(),
                    "target_parameters": t.model.num_parameters(), "student": student},
    }
    write_json(final_path, final)
    return final


def _with_student(protector: DecisionTemplateProtector, t: Classifier, store: FeatureStore,
                  manifest: Manifest, cache: FeatureCache, cfg: TemplateTrainConfig,
                  progress: bool) -> tuple[DecisionTemplateProtector, dict[str, Any]]:
    """The protector with a student of T as its decider (the templates stay, T-checked)."""
    valid = manifest.filter(lambda row: row.get("split") == "valid")
    held = FeatureStore(valid, cache, progress=False) if len(valid) else store
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
    return with_student.eval(), {**record, "held_out": "valid" if len(valid) else "train"}
