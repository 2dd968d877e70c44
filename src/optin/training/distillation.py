"""A small on-device student of the target model T, taught by T's answers alone (label-free).

The student learns T's segment posteriors on random crops of the training audio (the KL
divergence to T's softmax). Selection rule: every ``check_every`` steps the student's utterance
votes are compared with T's on the held-out audio (T's own answers, no labels); the student with
the highest agreement is kept (the latest on ties). Teaching stops early once the agreement has
been 1.0, where it can go no higher, at ``ceiling_checks`` checks in a row (the rule the
supervised trainers apply to a validation error of 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor

from optin.audio.segments import SegmentConfig, segment_batch
from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config, vote


@dataclass(frozen=True)
class DistillSettings:
    """How the student is taught: steps, crops per step, Adam learning rate, check period."""

    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    check_every: int = 50
    seed: int = 0
    ceiling_checks: int = 2


def random_crops(utterances: list[Tensor], length: int, count: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` random ``length``-frame crops of random utterances (F, T_u) each, zero-padded
    where an utterance is shorter -> crops (B, F, length), valid frames (B,)."""
    n_freq = utterances[0].shape[0]
    crops = torch.zeros(count, n_freq, length)
    lengths = torch.empty(count, dtype=torch.long)
    rows = torch.randint(len(utterances), (count,), generator=generator).tolist()
    for b, row in enumerate(rows):
        feats = utterances[row]
        frames = feats.shape[1]
        start = int(torch.randint(max(1, frames - length + 1), (1,), generator=generator))
        piece = feats[:, start : start + length]
        crops[b, :, : piece.shape[1]] = piece
        lengths[b] = piece.shape[1]
    return crops, lengths


@torch.no_grad()
def vote_agreement(student: DeepSpeech2Classifier, teacher: DeepSpeech2Classifier,
                   utterances: list[Tensor], segments: SegmentConfig, method: str) -> float:
    """Share of utterances (F, T_u) on which the student's vote equals the teacher's."""
    segs, lengths, index = segment_batch(utterances, segments)
    answers = [vote(model(segs, lengths), index, len(utterances), method=method)  # type: ignore[arg-type]
               for model in (student, teacher)]
    return float((answers[0] == answers[1]).float().mean())


def distil_student(teacher: DeepSpeech2Classifier, arch: DeepSpeech2Config,
                   train: list[Tensor], held_out: list[Tensor], segments: SegmentConfig,
                   vote_method: str, settings: DistillSettings | None = None,
                   on_check: Callable[[dict[str, Any]], None] | None = None
                   ) -> tuple[DeepSpeech2Classifier, dict[str, Any]]:
    """Teach a student of ``arch`` (same classes as the teacher) the teacher's answers on crops
    of ``train`` utterances (F, T_u); select on agreement with the teacher on ``held_out``.

    Returns the selected student (eval mode) and its check record.
    """
    cfg = settings or DistillSettings()
    torch.manual_seed(cfg.seed)
    student = DeepSpeech2Classifier(arch)
    teacher.eval()
    optimiser = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    best: dict[str, Any] = {"agreement": -1.0}
    chosen = {k: v.clone() for k, v in student.state_dict().items()}
    at_ceiling = 0
    for step in range(1, cfg.steps + 1):
        student.train()
        crops, lengths = random_crops(train, segments.length, cfg.batch_size, generator)
        with torch.no_grad():
            soft = teacher(crops, lengths).softmax(dim=1)  # (B, K) T's answers
        log_p = student(crops, lengths).log_softmax(dim=1)
        loss = nnf.kl_div(log_p, soft, reduction="batchmean")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % cfg.check_every == 0 or step == cfg.steps:
            student.eval()
            record = {"step": step, "distill_loss": round(loss.item(), 6),
                      "agreement": vote_agreement(student, teacher, held_out, segments,
                                                  vote_method)}
            if on_check is not None:
                on_check(record)
            if record["agreement"] >= best["agreement"]:
                best = record
                chosen = {k: v.clone() for k, v in student.state_dict().items()}
            at_ceiling = at_ceiling + 1 if record["agreement"] >= 1.0 else 0
            if at_ceiling >= cfg.ceiling_checks:
                best = {**best, "stopped": f"agreement 1.0 at {at_ceiling} checks in a row"}
                break
    student.load_state_dict(chosen)
    return student.eval(), best
