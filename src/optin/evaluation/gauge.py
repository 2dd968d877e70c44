"""The leakage gauge: fast informed screening attackers on utterance statistics.

The paper's informed attacker retrains a DeepSpeech2 classifier on protected data, which takes
minutes to hours. The gauge answers the same question in seconds, as a screen: for each
attribute it summarises every utterance by a fixed vector of spectral statistics
(:func:`optin.metrics.leakage.utterance_statistics`) of its (protected) features, standardises
them with the training split's mean and standard deviation, and fits two *informed* heads on
the protected training split with its true labels:

* ``linear``: multinomial logistic regression (L-BFGS, L2 penalty);
* ``mlp``: one hidden layer (:func:`optin.evaluation.vector_classifier.train_vector_classifier`).

The L2 weight decay of each head is chosen on the valid split when the manifest has one (the
most accurate; ties go to the stronger decay), else a fixed default. Both are scored on the
protected test split; ``informed`` is the better of the two (picked on test, so slightly
optimistic: a screen, not a final figure). With a ``transform`` (e.g. an
obfuscator's ``obfuscate_features``), the same heads are also trained and tested on the
untransformed features (``original``). Labels are used only to train and measure the
attackers. Rows without a label for an attribute are left out and counted, and so are valid
and test rows whose class never occurs in training.

A protected copy of a corpus (from ``optin obfuscate`` or ``optin anonymize``) is just a
manifest: gauge it directly, without a transform.

Its accuracies are a lower bound on what an informed attacker can learn (a stronger model on
the full features may learn more), so a gauge at chance does not prove protection; a gauge
well above chance proves leakage.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optin.audio.features import FeatureConfig
from optin.corpora.feature_cache import FeatureCache
from optin.corpora.manifest import SPLITS, Manifest, ManifestError
from optin.errors import ConfigError
from optin.evaluation.vector_classifier import (
    VectorClassifierConfig,
    train_vector_classifier,
    vector_accuracy,
)
from optin.metrics.classification import chance_level
from optin.metrics.leakage import utterance_statistics
from optin.settings import Rule, above, at_least, check_fields
from optin.training.data import FeatureStore

Transform = Callable[[Tensor], Tensor]
HEADS = ("linear", "mlp")


@dataclass(frozen=True)
class GaugeConfig:
    """The heads' settings and the weight decays the valid split chooses from."""

    hidden: int = 64
    epochs: int = 200
    lr: float = 3e-3
    linear_iterations: int = 100
    weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    default_weight_decay: float = 1e-2

    RANGES: ClassVar[dict[str, Rule]] = {
        "hidden": at_least(1), "epochs": at_least(1), "lr": above(0),
        "linear_iterations": at_least(1), "default_weight_decay": at_least(0)}

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.weight_decays or any(w < 0 for w in self.weight_decays):
            raise ConfigError(f"GaugeConfig.weight_decays: expected one or more values >= 0, "
                              f"got {self.weight_decays!r}")


@dataclass(frozen=True)
class AttributeGauge:
    """The gauge of one attribute.

    Attributes:
        heads: test accuracy of each head on the gauged (protected) features.
        weight_decay: the weight decay each head used there.
        original_heads: the same heads on the untransformed features (with a transform only).
        train, valid, test: labelled rows used in each split.
        missing: rows of the three splits with no label, left out.
        unseen: valid and test rows whose class is not in training, left out.
    """

    attribute: str
    classes: tuple[str, ...]
    chance: float
    heads: dict[str, float]
    weight_decay: dict[str, float]
    original_heads: dict[str, float] | None
    train: int
    valid: int
    test: int
    missing: int
    unseen: int

    @property
    def informed(self) -> float:
        """The best head's test accuracy on the gauged features."""
        return max(self.heads.values())

    @property
    def original(self) -> float | None:
        """The best head's test accuracy on the untransformed features (with a transform)."""
        return max(self.original_heads.values()) if self.original_heads else None

    def to_dict(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "classes": list(self.classes),
                "chance": self.chance, "informed": self.informed, "original": self.original,
                "heads": dict(self.heads), "weight_decay": dict(self.weight_decay),
                "original_heads": dict(self.original_heads) if self.original_heads else None,
                "rows": {"train": self.train, "valid": self.valid, "test": self.test},
                "missing_label": self.missing, "unseen_class": self.unseen}


@dataclass(frozen=True)
class GaugeReport:
    """What :func:`leakage_gauge` measured, per attribute."""

    manifest: str
    transformed: bool
    selection: str  # "valid" (weight decay chosen on the valid split) or "fixed"
    utterances: int
    seconds: float
    attributes: list[AttributeGauge] = field(default_factory=list)

    def __getitem__(self, attribute: str) -> AttributeGauge:
        for gauge in self.attributes:
            if gauge.attribute == attribute:
                return gauge
        raise KeyError(attribute)

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "transformed": self.transformed,
                "selection": self.selection, "utterances": self.utterances,
                "seconds": round(self.seconds, 3),
                "attributes": [g.to_dict() for g in self.attributes]}

    def format(self) -> str:
        """A small aligned table, one row per attribute, and the rows left out."""
        columns = ["attribute", "classes", "test", "chance", *HEADS, "informed"]
        if self.transformed:
            columns.append("original")
        rows = []
        for g in self.attributes:
            row = [g.attribute, str(len(g.classes)), str(g.test), f"{g.chance:.3f}",
                   *(f"{g.heads[h]:.3f}" for h in HEADS), f"{g.informed:.3f}"]
            if self.transformed:
                row.append(f"{g.original:.3f}")
            rows.append(row)
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        lines = [f"leakage gauge: {self.manifest} ({self.utterances} utterances"
                 f"{', transformed' if self.transformed else ''}; weight decay "
                 f"{'chosen on valid' if self.selection == 'valid' else 'fixed'}; "
                 f"{self.seconds:.1f} s)"]
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(columns, widths, strict=True))))
        for row in rows:
            lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                                   for i, (v, w) in enumerate(zip(row, widths, strict=True))))
        for g in self.attributes:
            parts = [f"{g.missing} row(s) without a label"] if g.missing else []
            if g.unseen:
                parts.append(f"{g.unseen} valid/test row(s) of a class not in training")
            if parts:
                lines.append(f"{g.attribute}: left out {' and '.join(parts)}")
        return "\n".join(lines)


def leakage_gauge(manifest: Manifest | str | os.PathLike, attributes: Sequence[str],
                  transform: Transform | None = None,
                  cache: FeatureCache | str | os.PathLike | None = None,
                  seed: int = 0, config: GaugeConfig | None = None,
                  features: FeatureConfig | None = None, workers: int | None = None,
                  progress: bool = False) -> GaugeReport:
    """Gauge how much of each attribute the (transformed) features of a manifest reveal.

    Args:
        manifest: a manifest (or its CSV) with a ``split`` column (train and test rows; valid
            rows, when there are some, choose the weight decay) and a column per attribute.
        attributes: the columns to gauge (one row each, in this order).
        transform: features (F, T) -> protected features (F, T'), applied once per utterance;
            None gauges the features as they are (e.g. of a protected copy of a corpus).
        cache: the feature cache, or its folder; default the one beside the manifest.
        features: the feature settings (default ones); those of the obfuscator whose
            ``obfuscate_features`` is the transform.
        seed: seed of the MLP heads' initial weights.
        workers: processes that fill the feature cache (default: the cache's choice).

    Raises:
        ManifestError: no such column (naming the file and the column), no split, or an
            attribute with fewer than two classes in training or no usable test row.
    """
    start = time.perf_counter()
    cfg = config or GaugeConfig()
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    attributes = list(dict.fromkeys(attributes))  # each once, in the order given
    if not attributes:
        raise ConfigError("leakage_gauge: give at least one attribute")
    for attribute in attributes:
        manifest.require_column(attribute)
    for split in ("train", "test"):
        manifest.split(split)  # a clear error when it is missing
    used = manifest.filter(lambda r: r["split"] in SPLITS
                           and any(r[a] for a in attributes))
    if not isinstance(cache, FeatureCache):
        cache = FeatureCache.for_manifest(manifest, features, root=cache)
    store = FeatureStore(used, cache, workers=workers, progress=progress)
    with torch.no_grad():
        plain = [store.features(i) for i in range(len(store))]
        gauged = torch.stack([utterance_statistics(transform(f) if transform else f)
                              for f in plain])
        original = (torch.stack([utterance_statistics(f) for f in plain])
                    if transform is not None else None)
    has_valid = any(r["split"] == "valid" for r in store.manifest.rows)
    with _one_thread():
        results = [_gauge_attribute(store.manifest, attribute, gauged, original, has_valid,
                                    cfg, seed) for attribute in attributes]
    return GaugeReport(manifest=str(manifest.source or "manifest"),
                       transformed=transform is not None,
                       selection="valid" if has_valid else "fixed", utterances=len(store),
                       seconds=time.perf_counter() - start, attributes=results)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Fit the heads on one torch thread: they are too small to gain from more, and on busy
    cores more threads are several times slower. The setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _gauge_attribute(manifest: Manifest, attribute: str, gauged: Tensor,
                     original: Tensor | None, has_valid: bool, cfg: GaugeConfig,
                     seed: int) -> AttributeGauge:
    rows = manifest.rows
    where = f"manifest {manifest.source}" if manifest.source else "manifest"
    missing = sum(1 for r in rows if not r[attribute])
    classes = tuple(sorted({r[attribute] for r in rows
                            if r["split"] == "train" and r[attribute]}))
    if len(classes) < 2:
        raise ManifestError(f"{where}: column '{attribute}' has {len(classes)} class(es) "
                            f"among the labelled train rows; the gauge needs at least two")
    index = {name: k for k, name in enumerate(classes)}
    picked: dict[str, list[int]] = {s: [] for s in SPLITS}
    unseen = 0
    for i, r in enumerate(rows):
        if not r[attribute]:
            continue
        if r[attribute] in index:
            picked[r["split"]].append(i)
        else:
            unseen += 1
    if not picked["test"]:
        raise ManifestError(f"{where}: no test row of column '{attribute}' has a class seen "
                            "in training (a speaker-disjoint split for speaker identity?)")
    labels = torch.tensor([index.get(r[attribute], -1) for r in rows])
    parts = {s: (torch.tensor(ix, dtype=torch.long), labels[ix]) for s, ix in picked.items()}
    heads, decay = _fit_heads(gauged, parts, len(classes), has_valid, cfg, seed)
    original_heads = (_fit_heads(original, parts, len(classes), has_valid, cfg, seed)[0]
                      if original is not None else None)
    return AttributeGauge(
        attribute=attribute, classes=classes, chance=chance_level(parts["test"][1]),
        heads=heads, weight_decay=decay, original_heads=original_heads,
        train=len(picked["train"]), valid=len(picked["valid"]), test=len(picked["test"]),
        missing=missing, unseen=unseen)


def _fit_heads(vectors: Tensor, parts: dict[str, tuple[Tensor, Tensor]], n_classes: int,
               has_valid: bool, cfg: GaugeConfig, seed: int
               ) -> tuple[dict[str, float], dict[str, float]]:
    """Test accuracy and chosen weight decay of each head on standardised ``vectors``."""
    train_ix = parts["train"][0]
    mean = vectors[train_ix].mean(dim=0)
    std = vectors[train_ix].std(dim=0, correction=0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    x = {s: ((vectors[ix] - mean) / std, y) for s, (ix, y) in parts.items()}
    valid = x["valid"] if has_valid and len(x["valid"][1]) else None
    decays = cfg.weight_decays if valid is not None else (cfg.default_weight_decay,)
    accuracies, chosen = {}, {}
    for head in HEADS:
        best: tuple[float, float, nn.Module] | None = None
        for wd in sorted(decays, reverse=True):  # strongest first: ties keep it
            model = _fit_head(head, *x["train"], n_classes, wd, valid, cfg, seed)
            score = vector_accuracy(model, *valid) if valid is not None else 0.0
            if best is None or score > best[0]:
                best = (score, wd, model)
        assert best is not None
        accuracies[head] = vector_accuracy(best[2], *x["test"])
        chosen[head] = best[1]
    return accuracies, chosen


def _fit_head(head: str, x: Tensor, y: Tensor, n_classes: int, weight_decay: float,
              valid: tuple[Tensor, Tensor] | None, cfg: GaugeConfig, seed: int) -> nn.Module:
    if head == "mlp":
        return train_vector_classifier(x, y, n_classes, valid=valid, config=VectorClassifierConfig(
            hidden=cfg.hidden, epochs=cfg.epochs, lr=cfg.lr, weight_decay=weight_decay,
            seed=seed))
    return fit_logistic(x, y, n_classes, weight_decay, cfg.linear_iterations)


def fit_logistic(x: Tensor, y: Tensor, n_classes: int, weight_decay: float,
                 iterations: int = 100) -> nn.Module:
    """Multinomial logistic regression on (N, D) vectors: mean cross-entropy plus
    ``weight_decay / 2 * ||W||^2`` minimised by L-BFGS from zero weights (convex, so the
    result does not depend on a seed). Returns an ``nn.Linear(D, K)`` in eval mode."""
    model = nn.Linear(x.shape[1], n_classes)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=iterations,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y) + 0.5 * weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return model.eval()
