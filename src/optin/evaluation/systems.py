"""Protection systems the experiment harness compares, selectable by key from the YAML.

Two worlds:

* **spectrogram** systems protect what the target model T hears. ``fit`` returns a
  :class:`FittedSystem`: protected test/train inputs as a manifest (the original one, or a
  protected audio copy with the same ids and splits) plus an optional transform of its cached
  features ``(F, T) -> (F, T)``. T, the attackers (DeepSpeech2) and the x-vector extractor all
  see exactly those inputs. ``opt-in`` (the paper's obfuscator, a feature transform) and
  ``mcadams`` (VoicePrivacy B2, waveform -> waveform, a protected audio copy) live here.
* **x-vector** systems protect speaker embeddings: ``adr`` (the opt-out ADR of Noé et al.),
  whose target task and attackers are classifiers on x-vectors; its ``run``
  (:func:`optin.evaluation.vector_world.run_adr`) scores it itself.

To add a system, write its fit (or run) in a module of its own and add a :class:`System` to
:data:`SYSTEMS` below (label, world, options section, colour); a test can register one for a
``with`` block with :func:`register_system`.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from optin.baselines.anonymize import anonymize_manifest
from optin.baselines.mcadams import McAdamsConfig
from optin.checkpoint import read_config
from optin.corpora.manifest import Manifest
from optin.evaluation.keys import key_of, key_of_dict
from optin.evaluation.registry import registered
from optin.evaluation.system_spec import FittedSystem, System, SystemContext
from optin.evaluation.vector_world import run_adr
from optin.privacy.corpus import obfuscate_manifest
from optin.privacy.obfuscator import Obfuscator
from optin.privacy.pretrained import file_sha256, resolve_source
from optin.training.decision_templates import TemplateTrainConfig, fit_decision_templates
from optin.training.obfuscator import train_obfuscator
from optin.training.obfuscator_config import obfuscator_preset
from optin.training.permitted import TargetChoice


def permitted_targets(ctx: SystemContext) -> tuple[Any, str]:
    """What a system is fitted against (the target folder, or the list of permitted tasks)
    and the hash that names it in model keys."""
    if ctx.targets:
        return ctx.targets, key_of_dict({"targets": [
            {"weights_sha256": _weights_hash(c), "weight": c.weight, "input": c.input,
             "adapter": c.adapter} for c in ctx.targets]})
    assert ctx.target_dir is not None
    return ctx.target_dir, read_config(ctx.target_dir)["weights_sha256"]


def fit_opt_in(ctx: SystemContext) -> FittedSystem:
    """The paper's opt-in obfuscator, trained against the frozen target model."""
    config = obfuscator_preset(ctx.preset, seed=ctx.seed, **ctx.options)
    target, target_hash = permitted_targets(ctx)
    out = ctx.models_dir / f"obfuscator-{key_of(config.run_settings(), ctx.manifest, target_hash)}"
    final = train_obfuscator(ctx.manifest, target, out, config, progress=ctx.progress)
    obfuscator = Obfuscator.load(out)
    return FittedSystem(obfuscator.obfuscate_features, out,
                        read_config(out / "obfuscator")["weights_sha256"],
                        {"converged": final.get("training", {}).get("converged"),
                         "model_dir": str(out)})


def _weights_hash(choice: TargetChoice) -> str:
    if choice.is_classifier:
        return read_config(choice.source)["weights_sha256"]
    return file_sha256(resolve_source(choice.source))


def fit_opt_in_streaming(ctx: SystemContext) -> FittedSystem:
    """The opt-in obfuscator with the streaming-native (causal) architecture, trained with the
    same loop, losses and ``obfuscator:`` settings as ``opt-in``."""
    return fit_opt_in(replace(ctx, options={**ctx.options, "obfuscator_arch": "causal"}))


def fit_mcadams(ctx: SystemContext) -> FittedSystem:
    """McAdams anonymization (VoicePrivacy B2): a protected audio copy of the whole corpus.

    Options: ``alpha`` (fixed, default 0.8) or ``alpha_range: [0.5, 0.9]`` with ``per``
    (speaker | utterance), ``lpc_order``. No training: every seed shares the copy unless the
    alpha draw depends on the seed (``alpha_range``).
    """
    options = dict(ctx.options)
    if "alpha_range" in options:
        options.setdefault("seed", ctx.seed)
    config = McAdamsConfig.from_dict(options)
    settings = config.to_dict()
    out = ctx.models_dir / f"mcadams-{key_of(settings, ctx.manifest)}"
    report = anonymize_manifest(ctx.manifest, out, config, progress=ctx.progress,
                                workers=max(1, min(4, os.cpu_count() or 1)))
    protected = Manifest.read(report.manifest)
    fingerprint = key_of(settings, ctx.manifest)
    return FittedSystem(None, out, fingerprint,
                        {"converged": None, "model_dir": str(out), "settings": settings},
                        manifest=protected)


def fit_limit(ctx: SystemContext) -> FittedSystem:
    """The opt-in limit: the permitted models decide, a learned template of their answers
    leaves (see :mod:`optin.models.decision_template`), for every kind of target: T, the app's
    own model from a file (per utterance or per frame), several tasks. A protector that
    renders audio (a task reads audio) is evaluated on a protected audio copy of the corpus,
    exactly what an app hears. Options: :class:`TemplateTrainConfig` fields."""
    config = TemplateTrainConfig.from_dict({"seed": ctx.seed, **ctx.options})
    target, target_hash = permitted_targets(ctx)
    out = ctx.models_dir / f"limit-{key_of(config.to_dict(), ctx.manifest, target_hash)}"
    final = fit_decision_templates(ctx.manifest, target, out, config, progress=ctx.progress)
    protector = Obfuscator.load(out)
    fingerprint = read_config(out / "obfuscator")["weights_sha256"]
    info = {"converged": final["training"]["converged"], "model_dir": str(out),
            "decider": final["decider"]}
    if not protector.network.needs_wave:  # type: ignore[union-attr]
        return FittedSystem(protector.obfuscate_features, out, fingerprint, info)
    report = obfuscate_manifest(protector, ctx.manifest, out / "protected", ctx.progress)
    if report.failed or report.manifest is None:
        raise ValueError(f"{out}: the protected copy failed on {len(report.failed)} row(s)")
    return FittedSystem(None, out, fingerprint, info, manifest=Manifest.read(report.manifest))


def fit_student_templates(ctx: SystemContext) -> FittedSystem:
    """Templates of T's answers chosen by a small student of T (T does not run on the device):
    the learned approach to the limit, with the ``templates:`` options of ``opt-in-limit``."""
    return fit_limit(replace(ctx, options={**ctx.options, "decider": "student"}))


SYSTEMS: dict[str, System] = {
    "opt-in": System("opt-in obfuscator", "spectrogram", "obfuscator", fit_opt_in,
                     colour="tab:blue"),
    "opt-in-streaming": System("opt-in, streaming (causal)", "spectrogram", "obfuscator",
                               fit_opt_in_streaming),
    "mcadams": System("McAdams (VPC B2)", "spectrogram", "mcadams", fit_mcadams,
                      colour="tab:green"),
    "opt-in-limit": System("opt-in limit (T's answer as a template)", "spectrogram",
                           "templates", fit_limit, colour="tab:purple"),
    "opt-in-templates": System("opt-in templates (a student of T decides)", "spectrogram",
                               "templates", fit_student_templates, colour="tab:red"),
    "adr": System("ADR (opt-out)", "x-vector", "adr", run=run_adr, colour="tab:orange",
                  needs_vectors=True),
}


def register_system(name: str, system: System) -> AbstractContextManager[System]:
    """Register ``system`` as ``name`` for a ``with`` block (removed after it)."""
    return registered(SYSTEMS, name, system)


__all__ = ["SYSTEMS", "FittedSystem", "System", "SystemContext", "register_system"]
