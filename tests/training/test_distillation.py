"""The student of T (label-free distillation) learns T's answers."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from optin.audio.segments import SegmentConfig
from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config
from optin.training.distillation import (
    DistillSettings,
    distil_student,
    random_crops,
    vote_agreement,
)

SMALL = DeepSpeech2Config(n_classes=2, conv_channels=4, hidden_size=16, rnn_layers=1)


def clustered(count: int, seed: int) -> list[torch.Tensor]:
    """Utterances (161, T) whose energy sits in the low or the high half of the band."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        x = torch.randn(161, 40 + 10 * (i % 3), generator=g) * 0.5
        band = slice(0, 80) if i % 2 else slice(81, 161)
        x[band] += 1.5
        out.append(x)
    return out


def test_random_crops_pad_short_utterances():
    g = torch.Generator().manual_seed(0)
    crops, lengths = random_crops([torch.ones(161, 10), torch.ones(161, 50)], 30, 8, g)
    assert crops.shape == (8, 161, 30)
    for crop, n in zip(crops, lengths, strict=True):
        assert crop[:, :n].eq(1).all() and crop[:, n:].eq(0).all()


def test_student_learns_the_teachers_answers(one_thread):
    segments = SegmentConfig(30, 15)
    train, held = clustered(24, seed=0), clustered(12, seed=1)
    teacher = DeepSpeech2Classifier(SMALL)
    torch.manual_seed(0)
    # a teacher with clear answers: trained on the cluster of each utterance
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        idx = torch.randint(len(train), (16,), generator=g).tolist()
        crops = torch.stack([train[i][:, :30] for i in idx])
        loss = nnf.cross_entropy(teacher(crops, torch.full((16,), 30)),
                                 torch.tensor([i % 2 for i in idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.eval()
    answers = [int(teacher(x[None, :, :30], torch.tensor([30])).argmax()) for x in held]
    assert len(set(answers)) == 2  # the teacher tells the clusters apart
    untrained = DeepSpeech2Classifier(SMALL).eval()
    before = vote_agreement(untrained, teacher, held, segments, "majority")
    checks: list[dict] = []
    student, best = distil_student(teacher, SMALL, train, held, segments, "majority",
                                   DistillSettings(steps=60, batch_size=16, check_every=20,
                                                   ceiling_checks=99), checks.append)
    assert [c["step"] for c in checks] == [20, 40, 60]
    assert before <= 0.75, before  # an untrained student does not know the answers
    assert best["agreement"] >= 0.9, checks
    assert vote_agreement(student, teacher, held, segments, "majority") == best["agreement"]
    # teaching stops at the first check where the agreement is 1.0 (ceiling_checks=1), on the
    # same trajectory
    first = next(c["step"] for c in checks if c["agreement"] == 1.0)
    short: list[dict] = []
    _, stopped = distil_student(teacher, SMALL, train, held, segments, "majority",
                                DistillSettings(steps=60, batch_size=16, check_every=20,
                                                ceiling_checks=1), short.append)
    assert [c["step"] for c in short] == [c["step"] for c in checks if c["step"] <= first]
    assert stopped["agreement"] == 1.0 and "stopped" in stopped
