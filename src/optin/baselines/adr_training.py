"""Training the ADR baseline: the attribute classifier first, then the autoencoder game.

Each step updates the autoencoder on reconstruction + weight * BCE(1 - pred, attribute) with the
adversary frozen, and the adversary on BCE(pred, attribute) with z detached (the reference code
lets the adversary's gradient reach the encoder; ``ADRConfig.reference_gradient`` restores that).
Both updates see the same z and the same adversary state, like the reference's simultaneous
update. BCEs are computed from logits: the same values, but a saturated adversary keeps its
gradient.

Selection: after every epoch the selection data (the validation set, else the training set) is
scored in eval mode. An epoch qualifies when two balanced accuracies are within
``chance_margin`` of 0.5 (either side: a binary guess far below chance is as telling as one far
above): the adversary's on z, and the attribute classifier's (trained on original x-vectors, so
an ignorant attacker) on the protected output (w = ``inference_w``). The adversary alone is not
enough: on small corpora it often sits at chance while the decoder still leaks the attribute
through z. The kept model is the qualifying epoch with the lowest reconstruction loss, else the
last finite epoch. Training stops early if a loss becomes NaN or infinite.

Convergence needs a qualifying epoch, a reconstruction loss at the kept epoch at least
``min_reconstruction_drop`` (a fraction) below its untrained value, and an attribute classifier
whose balanced accuracy beats 0.5 by ``chance_margin`` (else w carries no attribute).

Also logged, not used: ``probe_balanced_accuracy``, a fresh linear attacker on z (fitted on the
training z, scored on the validation z; with no validation set, 2-fold on the training z). It
measures what an informed attacker could find in z; on a corpus whose validation speakers are
training speakers it finds the attribute through speaker identity whatever the ADR does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optin.baselines.adr import (
    ADR,
    ADRConfig,
    ADRDiscriminator,
    ADRInputError,
    AttributeClassifier,
    adr_losses,
    as_binary,
    as_xvectors,
)
from optin.checkpoint import load_state, save_state
from optin.privacy.adversary import frozen
from optin.training.runs import SNAPSHOT_SECONDS, SnapshotTimer

Log = Callable[[str], None]
ValidData = tuple[Any, Any] | None
LOSS_KEYS = ("reconstruction", "adversary", "flipped", "adversary_accuracy")


class ADRAdversary:
    """The discriminator on z with its own SGD optimizer.

    ``step`` trains it on detached z; ``logits_frozen`` gives the autoencoder its logits with
    the discriminator's parameters frozen (gradients reach z only).
    """

    def __init__(self, network: ADRDiscriminator, lr: float, momentum: float) -> None:
        self.network = network
        self.optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum)

    def step(self, z: Tensor, attribute: Tensor) -> tuple[float, float]:
        """One update on BCE(D(z), attribute); z (B, L) is detached, attribute (B,).

        Returns:
            (loss, accuracy) before the update.
        """
        self.network.train()
        logits = self.network.logits(z.detach()).reshape(-1)
        loss = F.binary_cross_entropy_with_logits(logits, attribute)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        guess = (logits.detach() > 0).float()
        return float(loss.detach()), float((guess == attribute).float().mean())

    def logits_frozen(self, z: Tensor) -> Tensor:
        """(B, L) -> (B, 1) logits, differentiable in z only."""
        with frozen(self.network):
            return self.network.logits(z)


def balanced_accuracy(predicted: Tensor, labels: Tensor) -> float:
    """Mean per-class recall of binary predictions; (N,) each, values 0/1."""
    recalls = [float((predicted[labels == c] == c).float().mean()) for c in (0.0, 1.0)
               if bool((labels == c).any())]
    return sum(recalls) / len(recalls)


def probe_balanced_accuracy(z_fit: Tensor, a_fit: Tensor, z_eval: Tensor, a_eval: Tensor,
                            ridge: float = 1.0) -> float:
    """A fresh linear attacker on z: ridge regression to +-1 labels (closed form, so cheap and
    deterministic) fitted on (M, L) ``z_fit``; balanced accuracy of its sign on (K, L)
    ``z_eval``."""
    mean, std = z_fit.mean(0), z_fit.std(0).clamp_min(1e-6)

    def design(z: Tensor) -> Tensor:  # (n, L + 1): standardised z and a bias column
        return torch.cat([(z - mean) / std, torch.ones(len(z), 1)], dim=1).double()

    fit = design(z_fit)
    gram = fit.T @ fit + ridge * torch.eye(fit.shape[1], dtype=fit.dtype)
    beta = torch.linalg.solve(gram, fit.T @ (2 * a_fit.double() - 1))
    return balanced_accuracy((design(z_eval) @ beta > 0).float(), a_eval)


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with torch's RNG seeded, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """Shuffled index batches; a last batch of one row is dropped (batch norm needs two)."""
    order = torch.randperm(n, generator=generator)
    return [b for b in order.split(batch_size) if len(b) > 1]


def _check_data(xvectors: Any, attribute: Any, config: ADRConfig, name: str,
                class_names: tuple[str, str] | None, field: str) -> tuple[Tensor, Tensor]:
    """(N, D) L2-normalised x-vectors and (N,) 0/1 labels holding both values."""
    x = as_xvectors(xvectors, config.input_dim, field)
    a = as_binary(attribute, name, class_names)
    if a.shape[0] != x.shape[0]:
        raise ADRInputError(f"{field} has {x.shape[0]} rows but attribute '{name}' has "
                            f"{a.shape[0]} labels")
    if x.shape[0] < 2:
        raise ADRInputError(f"{field} needs at least 2 rows, got {x.shape[0]}")
    missing = [v for v in (0, 1) if not bool((a == v).any())]
    if missing:
        label = class_names[missing[0]] if class_names else missing[0]
        raise ADRInputError(f"{field}: attribute '{name}' never takes the value {label!r}; "
                            "the ADR needs both values")
    return x, a


def _check_inputs(xvectors: Any, attribute: Any, valid: ValidData, config: ADRConfig,
                  name: str, class_names: tuple[str, str] | None
                  ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """The checked training x-vectors and labels, and the checked ``valid`` pair (or None)."""
    x, a = _check_data(xvectors, attribute, config, name, class_names, "xvectors")
    checked = (_check_data(*valid, config, name, class_names, "valid")
               if valid is not None else None)
    return x, a, checked


def train_attribute_classifier(
    xvectors: Any,
    attribute: Any,
    config: ADRConfig,
    valid: ValidData = None,
    log: Log | None = None,
    attribute_name: str = "attribute",
    class_names: tuple[str, str] | None = None,
) -> tuple[AttributeClassifier, list[dict[str, Any]]]:
    """Fit Linear(D, 1) + sigmoid with BCE and SGD (the ``classifier_*`` settings).

    Args:
        xvectors: (N, D) x-vectors (L2-normalised here); attribute: (N,) 0/1 labels.
        valid: optional (x-vectors (M, D), labels (M,)) scored after every epoch.

    Returns:
        (classifier in eval mode, one row per epoch: loss, accuracy[, valid_accuracy]).
    """
    x, a, checked = _check_inputs(xvectors, attribute, valid, config, attribute_name,
                                  class_names)
    xv, av = checked if checked is not None else (None, None)
    model = _seeded(config.seed, lambda: AttributeClassifier(config.input_dim))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.classifier_lr,
                                momentum=config.classifier_momentum)
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, Any]] = []
    for epoch in range(1, config.classifier_epochs + 1):
        model.train()
        total, count = 0.0, 0
        for idx in _batches(len(x), config.classifier_batch_size, generator):
            loss = F.binary_cross_entropy_with_logits(model.logits(x[idx]).reshape(-1), a[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        model.eval()
        with torch.no_grad():
            row: dict[str, Any] = {"epoch": epoch, "loss": total / count,
                                   "accuracy": _accuracy(model(x), a)}
            if xv is not None:
                row["valid_accuracy"] = _accuracy(model(xv), av)
        history.append(row)
        if log is not None:
            log(f"classifier epoch {epoch}/{config.classifier_epochs}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
    return model.eval(), history


def _accuracy(posterior: Tensor, labels: Tensor) -> float:
    return float(((posterior.reshape(-1) > 0.5).float() == labels).float().mean())


@torch.no_grad()
def _score(model: ADR, adversary: ADRDiscriminator, x: Tensor, a: Tensor, w: Tensor,
           probe_fit: tuple[Tensor, Tensor] | None) -> dict[str, float]:
    """Losses, adversary and linear-probe accuracy on z, and the attribute classifier's
    accuracy on the protected output (w = inference_w), on a whole set in eval mode.

    ``probe_fit`` is (training x-vectors, labels) the probe is fitted on (through the encoder);
    None fits it on the even rows of this set and scores it on the odd ones.
    """
    model.eval()
    adversary.eval()
    x_hat, z = model(x, w)
    logits = adversary.logits(z)
    losses = adr_losses(x, x_hat, logits, a, logits=True)
    guess = (logits.reshape(-1) > 0).float()
    if probe_fit is None:
        probe = probe_balanced_accuracy(z[0::2], a[0::2], z[1::2], a[1::2])
    else:
        probe = probe_balanced_accuracy(model.encoder(probe_fit[0]), probe_fit[1], z, a)
    protected = model.decoder(z, torch.full_like(w, model.config.inference_w))
    hidden = (model.classifier(protected).reshape(-1) > 0.5).float()
    return {**{k: float(v) for k, v in losses.items()},
            "adversary_accuracy": float((guess == a).float().mean()),
            "adversary_balanced_accuracy": balanced_accuracy(guess, a),
            "probe_balanced_accuracy": probe,
            "protected_classifier_balanced_accuracy": balanced_accuracy(hidden, a)}


def train_adr(
    xvectors: Any,
    attribute: Any,
    config: ADRConfig,
    valid: ValidData = None,
    log: Log | None = None,
    attribute_name: str = "attribute",
    class_names: tuple[str, str] | None = None,
    state_dir: Path | None = None,
    snapshot_seconds: float = SNAPSHOT_SECONDS,
) -> tuple[ADR, dict[str, Any]]:
    """Train the attribute classifier, then the ADR; keep the epoch the selection rule picks.

    Args:
        xvectors: (N, D) float x-vectors (L2-normalised here).
        attribute: (N,) labels in {0, 1}; ``attribute_name`` and ``class_names`` (what 0 and 1
            stand for) name them in errors and in the checkpoint.
        config: sizes, optimisation and selection settings.
        valid: optional (x-vectors (M, D), labels (M,)) used for selection.
        log: called with one line per epoch.
        state_dir: where to save the training state after an epoch once ``snapshot_seconds``
            have passed since the last save; a state there is resumed (same inputs assumed).

    Returns:
        (ADR in eval mode, history). History: ``classifier`` (its epochs),
        ``classifier_accuracy`` and ``classifier_balanced_accuracy`` on the selection data,
        ``epochs`` (row 0 before training, then one per epoch: ``train_*`` running means of the
        reconstruction, adversary and flipped losses and the adversary's batch accuracy;
        ``sel_*`` the same scored in eval mode on the selection data, plus the balanced
        accuracies of the adversary and a linear probe on z and of the attribute classifier on
        the protected output), ``selected_epoch``, ``selection``, ``selection_data``,
        ``converged`` (bool) and ``reason``.
    """
    x, a, checked = _check_inputs(xvectors, attribute, valid, config, attribute_name,
                                  class_names)
    sel_x, sel_a = checked if checked is not None else (x, a)
    data = "validation" if valid is not None else "training"
    saved = load_state(state_dir) if state_dir is not None else None
    if saved is None:
        classifier, classifier_history = train_attribute_classifier(
            x, a, config, valid=(sel_x, sel_a) if valid is not None else None, log=log,
            attribute_name=attribute_name, class_names=class_names)
    else:  # resume: the classifier was trained before the snapshot
        classifier = _seeded(config.seed, lambda: AttributeClassifier(config.input_dim))
        classifier.load_state_dict(saved["classifier"])
        classifier, classifier_history = classifier.eval(), saved["classifier_history"]
    with torch.no_grad():
        w_train = classifier(x)  # (N, 1): the classifier is frozen from here on
        w_sel = classifier(sel_x)  # (M, 1)
    classifier_acc = _accuracy(w_sel, sel_a)
    classifier_bacc = balanced_accuracy((w_sel.reshape(-1) > 0.5).float(), sel_a)

    model = _seeded(config.seed + 1, lambda: ADR(config, attribute_name, class_names))
    model.classifier.load_state_dict(classifier.state_dict())
    model.classifier.requires_grad_(False)
    autoencoder = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
    optimizer = torch.optim.SGD(autoencoder, lr=config.lr, momentum=config.momentum)
    adversary = ADRAdversary(
        _seeded(config.seed + 2,
                lambda: ADRDiscriminator(config.latent_dim, config.adversary_hidden)),
        config.effective_adversary_lr, config.momentum)
    generator = torch.Generator().manual_seed(config.seed + 3)
    probe_fit = (x, a) if valid is not None else None

    def row_for(epoch: int, train: dict[str, float | None]) -> dict[str, Any]:
        scored = _score(model, adversary.network, sel_x, sel_a, w_sel, probe_fit)
        return {"epoch": epoch, **{f"train_{k}": v for k, v in train.items()},
                **{f"sel_{k}": v for k, v in scored.items()},
                "classifier_accuracy": classifier_acc}

    def snapshot() -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    rows = [row_for(0, dict.fromkeys(LOSS_KEYS))]  # before training: no train_* values
    best: tuple[int, float, dict[str, Tensor]] | None = None
    last_good = (0, snapshot())
    diverged = None
    first = 1
    if saved is not None:
        model.load_state_dict(saved["model"])
        adversary.network.load_state_dict(saved["adversary"])
        optimizer.load_state_dict(saved["optimizer"])
        adversary.optimizer.load_state_dict(saved["adversary_optimizer"])
        generator.set_state(saved["generator"])
        rows, best, last_good = saved["rows"], saved["best"], saved["last_good"]
        first = rows[-1]["epoch"] + 1
        if log is not None:
            log(f"ADR: resuming at epoch {first}")
    timer = SnapshotTimer(None, snapshot_seconds)
    for epoch in range(first, config.epochs + 1):
        train = _train_epoch(model, adversary, optimizer, x, a, w_train, config, generator)
        row = row_for(epoch, train)
        rows.append(row)
        if log is not None:
            log(f"ADR epoch {epoch}/{config.epochs}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
        if not all(math.isfinite(v) for k, v in row.items() if k.startswith(("train_", "sel_"))):
            diverged = f"a loss became NaN or infinite at epoch {epoch}; training stopped"
            break
        last_good = (epoch, snapshot())
        qualifies = _distance_from_chance(row) <= config.chance_margin
        if qualifies and (best is None or row["sel_reconstruction"] < best[1]):
            best = (epoch, row["sel_reconstruction"], snapshot())
        if state_dir is not None and timer.due(epoch, config.epochs):
            save_state(state_dir, {
                "classifier": classifier.state_dict(), "classifier_history": classifier_history,
                "model": model.state_dict(), "adversary": adversary.network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "adversary_optimizer": adversary.optimizer.state_dict(),
                "generator": generator.get_state(), "rows": rows, "best": best,
                "last_good": last_good})

    selected, state = (best[0], best[2]) if best is not None else last_good
    model.load_state_dict(state)
    converged, reason = _convergence(rows, selected, best is not None, classifier_bacc, config,
                                     data, diverged)
    if log is not None:
        log(f"ADR kept epoch {selected}: {'converged' if converged else 'NOT converged'}; "
            f"{reason}")
    history = {
        "classifier": classifier_history,
        "classifier_accuracy": classifier_acc,
        "classifier_balanced_accuracy": classifier_bacc,
        "epochs": rows,
        "selected_epoch": selected,
        "selection_data": data,
        "selection": ("lowest reconstruction loss among epochs where both the adversary's "
                      f"balanced accuracy on the {data} z and the attribute classifier's on the "
                      f"protected {data} output are within {config.chance_margin} of 0.5; else "
                      "the last finite epoch"),
        "converged": converged,
        "reason": reason,
    }
    return model.eval(), history


def _train_epoch(model: ADR, adversary: ADRAdversary, optimizer: torch.optim.Optimizer,
                 x: Tensor, a: Tensor, w: Tensor, config: ADRConfig,
                 generator: torch.Generator) -> dict[str, float]:
    """One pass over (N, D) x, (N,) a, (N, 1) w; returns the running means of LOSS_KEYS."""
    sums = dict.fromkeys(LOSS_KEYS, 0.0)
    count = 0
    for idx in _batches(len(x), config.batch_size, generator):
        model.train()
        xb, ab = x[idx], a[idx]
        x_hat, z = model(xb, w[idx])
        losses = adr_losses(xb, x_hat, adversary.logits_frozen(z), ab, logits=True)
        adversarial = losses["flipped"]
        if config.reference_gradient:
            adversarial = adversarial + losses["adversary"]
        loss = losses["reconstruction"] + config.adversarial_weight * adversarial
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        adv_loss, adv_acc = adversary.step(z, ab)  # same z, adversary before its update
        values = (float(losses["reconstruction"].detach()), adv_loss,
                  float(losses["flipped"].detach()), adv_acc)
        for key, value in zip(LOSS_KEYS, values, strict=True):
            sums[key] += value * len(idx)
        count += len(idx)
    return {k: v / count for k, v in sums.items()}


def _convergence(rows: list[dict[str, Any]], selected: int, qualified: bool,
                 classifier_bacc: float, config: ADRConfig, data: str,
                 diverged: str | None) -> tuple[bool, str]:
    """(converged, reason): an adversary near chance, a reconstruction that fell enough, a
    classifier whose w carries the attribute, and no NaN."""
    problems = [diverged] if diverged else []
    if not qualified:
        trained = [r for r in rows[1:] if math.isfinite(r["sel_adversary_balanced_accuracy"])]
        closest = min(trained, key=_distance_from_chance, default=None)
        near = (f" (closest: epoch {closest['epoch']}, adversary "
                f"{closest['sel_adversary_balanced_accuracy']:.3f}, classifier "
                f"{closest['sel_protected_classifier_balanced_accuracy']:.3f})" if closest else "")
        problems.append(f"no epoch had both the adversary (on z) and the attribute classifier (on "
                        f"the protected output) within {config.chance_margin} of 0.5 balanced "
                        f"accuracy on the {data} data{near}; kept epoch {selected}")
    before, after = rows[0]["sel_reconstruction"], rows[selected]["sel_reconstruction"]
    drop = (before - after) / before if before > 0 else 0.0
    if drop < config.min_reconstruction_drop:
        change = f"{drop:.0%} lower" if drop >= 0 else f"{-drop:.0%} higher"
        problems.append(f"reconstruction loss {before:.4f} -> {after:.4f} ({change}), short of "
                        f"the {config.min_reconstruction_drop:.0%} drop asked")
    if classifier_bacc < 0.5 + config.chance_margin:
        problems.append(f"the attribute classifier reached only {classifier_bacc:.3f} balanced "
                        "accuracy, so w carries little of the attribute")
    if problems:
        return False, "; ".join(problems)
    row = rows[selected]
    return True, (f"on the {data} data: adversary balanced accuracy "
                  f"{row['sel_adversary_balanced_accuracy']:.3f} on z, attribute classifier "
                  f"{row['sel_protected_classifier_balanced_accuracy']:.3f} on the protected "
                  f"output ({classifier_bacc:.3f} on the original); reconstruction loss "
                  f"{before:.4f} -> {after:.4f} ({drop:.0%} lower)")


def _distance_from_chance(row: dict[str, Any]) -> float:
    return max(abs(row[f"sel_{k}_balanced_accuracy"] - 0.5)
               for k in ("adversary", "protected_classifier"))
