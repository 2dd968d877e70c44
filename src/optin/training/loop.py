"""The epoch loop of the supervised trainers (the DeepSpeech2 classifier and the x-vector TDNN).

:func:`fit` owns what the two trainings share: class-balanced crops per epoch, one optimizer
step per batch with a finite-loss check, snapshots of the whole training state every
``checkpoint_every`` steps or ``snapshot_seconds`` seconds and at every epoch end (a rerun
resumes bit-identically), a progress bar, one ``metrics.csv`` row per epoch, selection of the
epoch with the lowest validation error (ties: validation loss lower by
:data:`LOSS_MIN_DELTA`), a plateau learning-rate schedule, the stop rule of
:func:`optin.training.runs.early_stop` and the run record. A :class:`SupervisedTask` brings
the rest: how to validate an epoch and how to save the selected model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from optin.training.data import CropTraining
from optin.training.records import write_metrics
from optin.training.runs import (
    OpenedRun,
    Optimisation,
    SnapshotTimer,
    early_stop,
    log,
    record_training,
)

LOSS_MIN_DELTA = 1e-3  # a tie on the error counts as better only if the loss drops by this


@dataclass
class Validation:
    """One epoch's validation.

    Attributes:
        columns: the ``valid_*`` columns of the epoch's ``metrics.csv`` row, in order.
        error: the selection score, lower is better, 0 perfect (1 - accuracy, or the EER).
        loss: the tie-breaker (``math.inf`` when there is none).
        schedule: what the plateau learning-rate schedule watches.
        scores: stored with the checkpoint of a selected epoch.
        text: the validation part of the epoch's log line.
    """

    columns: dict[str, Any]
    error: float
    loss: float
    schedule: float
    scores: dict[str, Any]
    text: str


class SupervisedTask(Protocol):
    """What a supervised training adds to :func:`fit`."""

    def validate(self) -> Validation:
        """Score the model (in its current state) on the validation split."""
        ...

    def save(self, epoch: int, validation: Validation) -> None:
        """Write the checkpoint of the model selected at ``epoch`` (counted from 1)."""
        ...

    def error_of(self, row: dict[str, Any]) -> float:
        """The selection error of a ``metrics.csv`` row (for the stop rule)."""
        ...


@dataclass
class FunctionTask:
    """A :class:`SupervisedTask` made of three functions."""

    validate: Callable[[], Validation]
    save: Callable[[int, Validation], None]
    error_of: Callable[[dict[str, Any]], float]


@dataclass
class LoopSettings:
    """The loop's settings (fields of the training configs)."""

    epochs: int
    batch_size: int
    workers: int
    grad_clip: float
    patience: int
    checkpoint_every: int
    snapshot_seconds: float

    @classmethod
    def of(cls, config: Any) -> LoopSettings:
        return cls(config.epochs, config.batch_size, config.workers, config.grad_clip,
                   config.patience, config.checkpoint_every, config.snapshot_seconds)


def initial_progress() -> dict[str, Any]:
    """The progress of a run that has not started (saved in ``train_state/``)."""
    return {"epoch": 0, "step": 0, "loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0,
            "best": {"error": math.inf, "loss": math.inf, "epoch": -1}, "bad_epochs": 0,
            "history": [], "finished": False, "stop": "max epochs"}


def _restored(progress: dict[str, Any]) -> dict[str, Any]:
    """A saved progress, with the best epoch of older runs ("accuracy" or "eer") as an error."""
    progress = {**initial_progress(), **progress}
    best = dict(progress["best"])
    if "error" not in best:
        best["error"] = (1.0 - best.pop("accuracy") if "accuracy" in best
                         else best.pop("eer", math.inf))
        if best["epoch"] < 0:
            best["error"] = math.inf
    progress["best"] = best
    return progress


def fit(task: SupervisedTask, run: OpenedRun, opt: Optimisation, crops: CropTraining,
        settings: LoopSettings, out_dir: Path, *, accuracy_column: str, selection: str,
        validation_note: str, progress: bool = True) -> dict[str, Any]:
    """Train to the end (or resume), select, record; returns the selected ``config.json``.

    Args:
        accuracy_column: the ``metrics.csv`` name of the training accuracy.
        selection: the selection rule in words (recorded).
        validation_note: where the validation rows come from (recorded).
    """
    state = _restored(opt.restore(run.state, run.state_dir)) if run.state is not None \
        else initial_progress()
    if run.state is not None:
        log(f"{out_dir}: resuming at epoch {state['epoch'] + 1}, step {state['step']}/"
            f"{crops.steps}")
    timer = SnapshotTimer(settings.checkpoint_every, settings.snapshot_seconds)
    device = opt.device
    while state["epoch"] < settings.epochs:
        epoch = state["epoch"]
        loader = crops.loader(epoch, settings.workers, skip=state["step"] * settings.batch_size)
        opt.model.train()
        bar = tqdm(loader, total=crops.steps, initial=state["step"], unit="batch",
                   desc=f"epoch {epoch + 1}/{settings.epochs}", disable=not progress,
                   leave=False)
        tick = time.perf_counter()
        for x, lengths, labels in bar:
            x, lengths, labels = x.to(device), lengths.to(device), labels.to(device)
            logits, loss = opt.forward(x, lengths, labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at epoch "
                                         f"{epoch + 1}; lower the learning rate (--lr)")
            opt.step(loss, settings.grad_clip)
            state["step"] += 1
            state["loss_sum"] += loss.item() * len(labels)
            state["correct"] += int((logits.argmax(1) == labels).sum())
            state["seen"] += len(labels)
            bar.set_postfix(loss=f"{state['loss_sum'] / state['seen']:.3f}",
                            acc=f"{state['correct'] / state['seen']:.3f}")
            if timer.due(state["step"], crops.steps):
                now = time.perf_counter()
                state["seconds"] += now - tick
                tick = now
                opt.save(run.state_dir, state)
        bar.close()
        state["seconds"] += time.perf_counter() - tick
        _end_epoch(task, state, opt, settings, out_dir, accuracy_column)
        opt.save(run.state_dir, state)
        timer.saved()

    history = state["history"]
    final = record_training(out_dir, {
        "epochs_run": len(history),
        "best_epoch": state["best"]["epoch"],
        "stopped": state["stop"],
        "selection": selection,
        "validation": validation_note,
        "seconds": sum(h["seconds"] for h in history),
        "train_segments_per_s": sum(h["train_segments_per_s"] for h in history) / len(history),
    })
    state["finished"] = True
    opt.save(run.state_dir, state)
    log(f"selected epoch {final['training']['best_epoch']} (validation error "
        f"{state['best']['error']:.3f}); {state['stop']}; saved to {out_dir}")
    return final


def _end_epoch(task: SupervisedTask, state: dict[str, Any], opt: Optimisation,
               settings: LoopSettings, out_dir: Path, accuracy_column: str) -> None:
    """Validate, write the metrics row, select, schedule and decide whether to stop."""
    epoch = state["epoch"]
    validation = task.validate()
    seen = max(state["seen"], 1)
    row = {"epoch": epoch + 1, "train_loss": state["loss_sum"] / seen,
           accuracy_column: state["correct"] / seen, **validation.columns,
           "lr": opt.optimizer.param_groups[0]["lr"], "seconds": state["seconds"],
           "train_segments_per_s": state["seen"] / max(state["seconds"], 1e-9)}
    state["history"].append(row)
    write_metrics(out_dir / "metrics.csv", state["history"])
    log(f"epoch {epoch + 1}: train loss {row['train_loss']:.3f} acc {row[accuracy_column]:.3f}"
        f" | {validation.text} | {row['train_segments_per_s']:.1f} seg/s")
    best = state["best"]
    lower = validation.error < best["error"]
    if lower or (validation.error == best["error"]
                 and validation.loss < best["loss"] - LOSS_MIN_DELTA):
        state["best"] = {"error": validation.error, "loss": validation.loss,
                         "epoch": epoch + 1}
        task.save(epoch + 1, validation)
    # patience counts epochs without a lower error (a lower loss alone selects, but does not
    # keep a run going: at zero error it would never stop)
    state["bad_epochs"] = 0 if lower else state["bad_epochs"] + 1
    opt.scheduler.step(validation.schedule)
    state.update(epoch=epoch + 1, step=0, loss_sum=0.0, correct=0, seen=0, seconds=0.0)
    reason = early_stop([task.error_of(h) for h in state["history"]], state["bad_epochs"],
                        settings.patience)
    if reason is not None:
        state["stop"] = reason
        state["epoch"] = settings.epochs
