"""The x-vector world: the opt-out ADR baseline evaluated on x-vectors.

* the seed's extractor and embeddings are :class:`optin.evaluation.seed_vectors.SeedVectors`;
* :func:`run_adr` evaluates ADR the way the paper does: its target task (speaker identity) and
  its attackers are classifiers on x-vectors; the target model is trained on ADR-transformed
  training x-vectors (what an app behind ADR receives; the unmodified model's accuracy on
  protected x-vectors is reported beside it), ignorant attackers are trained on original
  x-vectors, informed ones on ADR-transformed training x-vectors. Its "original" attacker
  accuracy is the x-vector counterpart of the spectrogram classifiers' (the paper's check that
  both representations carry about the same information on the attribute).

Vector classifiers are the small MLPs of :mod:`optin.evaluation.vector_classifier`.
"""

from __future__ import annotations

import shutil
from typing import Any

import torch
from torch import Tensor

from optin.baselines.adr import adr_preset, load_adr, save_adr
from optin.baselines.adr_training import train_adr
from optin.checkpoint import read_config
from optin.corpora.manifest import LabelEncoder, Manifest, ManifestError
from optin.errors import ConfigError
from optin.evaluation.attackers import (
    OutputOnlyConfig,
    chance_on_test,
    output_only_predict,
    train_output_only,
)
from optin.evaluation.keys import key_of
from optin.evaluation.system_spec import SystemContext
from optin.evaluation.vector_classifier import (
    VectorClassifierConfig,
    train_vector_classifier,
    vector_accuracy,
    vector_predict,
)
from optin.metrics.classification import accuracy
from optin.metrics.verification import asv_pairings
from optin.training.runs import STATE_DIR

SPLITS = ("train", "valid", "test")


def encode_splits(manifest: Manifest, attribute: str) -> dict[str, Tensor]:
    """Labels of ``attribute`` per split, encoded with the training split's classes.

    Raises:
        ValueError: a valid/test label the training split never has (names them).
    """
    train = manifest.split("train")
    encoder = LabelEncoder.fit(train, attribute)
    labels = {}
    for split in SPLITS:
        part = manifest.split(split)
        unknown = sorted({r[attribute] for r in part.rows} - set(encoder.classes))
        if unknown:
            raise ManifestError(f"split '{split}' has {attribute} value(s) absent from the "
                                f"training split ({', '.join(unknown[:8])}): a closed-set "
                                "x-vector classifier cannot be scored on them")
        labels[split] = torch.tensor(encoder.encode_all(part), dtype=torch.long)
    return labels


def _vector_attack_scores(x: dict[str, Tensor], p: dict[str, Tensor], labels: dict[str, Tensor],
                          target_posteriors: dict[str, Tensor], seed: int) -> dict[str, float]:
    """original / ignorant / informed / output-only accuracies for one attribute."""
    n = int(labels["train"].max()) + 1
    cfg = VectorClassifierConfig(seed=seed)
    original = train_vector_classifier(x["train"], labels["train"], n,
                                       (x["valid"], labels["valid"]), cfg)
    informed = train_vector_classifier(p["train"], labels["train"], n,
                                       (p["valid"], labels["valid"]), cfg)
    output_only = train_output_only(target_posteriors["train"], labels["train"], n,
                                    OutputOnlyConfig(seed=seed))
    floor = output_only_predict(output_only, target_posteriors["test"])
    return {
        "original": vector_accuracy(original, x["test"], labels["test"]),
        "ignorant": vector_accuracy(original, p["test"], labels["test"]),
        "informed": vector_accuracy(informed, p["test"], labels["test"]),
        "output_only": accuracy(labels["test"], floor),
    }


def run_adr(ctx: SystemContext, permitted: str, attacked: list[str]) -> dict[str, Any]:
    """Fit ADR on the seed's training x-vectors and score it like every system.

    Options (``adr:`` in the config): ``protect`` (the attribute ADR hides, default gender),
    ``preset`` (default: the experiment's) and any ADR config field (e.g. ``inference_w``, the
    attribute code at inference, 0.5).
    """
    assert ctx.vectors is not None, "ADR needs the seed's x-vectors"
    options = dict(ctx.options)
    protect = options.pop("protect", "gender")
    preset = options.pop("preset", ctx.preset)
    ctx.manifest.require_column(protect)
    if protect == permitted:
        raise ConfigError(f"ADR cannot protect '{protect}', the permitted attribute (set "
                          "adr: {protect: ...} to another binary attribute)")
    x = {s: ctx.vectors.original(s) for s in SPLITS}
    options.setdefault("input_dim", int(x["train"].shape[1]))
    config = adr_preset(preset, seed=ctx.seed, **options)
    protect_labels = encode_splits(ctx.manifest, protect)
    classes = LabelEncoder.fit(ctx.manifest.split("train"), protect).classes
    if len(classes) != 2:
        raise ManifestError(f"ADR protects a binary attribute; '{protect}' has {len(classes)} "
                            f"values in the training split ({', '.join(classes[:8])})")
    assert ctx.vectors.extractor_dir is not None  # set when the x-vectors above were made
    extractor_hash = read_config(ctx.vectors.extractor_dir)["weights_sha256"]
    out = ctx.models_dir / f"adr-{key_of(config.to_dict(), ctx.manifest, protect, extractor_hash)}"
    if (out / "model.safetensors").is_file():
        adr = load_adr(out)
        history = (read_config(out).get("info") or {}).get("history") or {}
    else:
        ctx.log(f"seed {ctx.seed}: ADR protecting '{protect}' on x-vectors")
        adr, history = train_adr(x["train"], protect_labels["train"], config,
                                 valid=(x["valid"], protect_labels["valid"]),
                                 attribute_name=protect, class_names=list(classes),
                                 state_dir=out / STATE_DIR)
        save_adr(adr, out, {"protect": protect, "classes": list(classes), "history": history})
        shutil.rmtree(out / STATE_DIR, ignore_errors=True)  # done: the model is saved
    p = {s: adr.transform(x[s]) for s in SPLITS}

    # ADR hands the app protected x-vectors, so the app's speaker model is trained on them (as
    # Noé et al. score speakers on protected x-vectors); the unmodified model's accuracy on
    # them is kept in "info".
    target_labels = encode_splits(ctx.manifest, permitted)
    n_target = int(target_labels["train"].max()) + 1
    vector_cfg = VectorClassifierConfig(seed=ctx.seed)
    target = train_vector_classifier(x["train"], target_labels["train"], n_target,
                                     (x["valid"], target_labels["valid"]), vector_cfg)
    target_protected = train_vector_classifier(p["train"], target_labels["train"], n_target,
                                               (p["valid"], target_labels["valid"]), vector_cfg)
    pred_original = vector_predict(target, x["test"]).argmax(dim=1)
    pred_protected = vector_predict(target_protected, p["test"]).argmax(dim=1)
    unmodified = vector_accuracy(target, p["test"], target_labels["test"])
    posteriors = {s: vector_predict(target_protected, p[s]) for s in ("train", "test")}
    attacks = {}
    for attribute in attacked:
        scores = _vector_attack_scores(x, p, encode_splits(ctx.manifest, attribute),
                                       posteriors, ctx.seed)
        attacks[attribute] = {"chance": chance_on_test(ctx.manifest, attribute), **scores,
                              "excess_leakage": scores["informed"] - scores["output_only"]}
    speakers = ctx.manifest.split("test").column("speaker")
    verification = asv_pairings(x["test"], p["test"], speakers, semi_informed=None,
                                seed=ctx.seed)
    converged = history.get("converged") if isinstance(history, dict) else None
    return {
        "target": {"original": accuracy(target_labels["test"], pred_original),
                   "obfuscated": accuracy(target_labels["test"], pred_protected),
                   "agreement": float((pred_original == pred_protected).float().mean())},
        "attacks": attacks,
        "verification": verification,
        "info": {"converged": converged, "model_dir": str(out), "protects": protect,
                 "unmodified_target_on_protected": unmodified},
    }
