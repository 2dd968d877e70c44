"""F1 of per-frame decisions (voice activity) by hand."""

from __future__ import annotations

import pytest
import torch


def test_f1_of_speech_frames_by_hand():
    from optin.metrics.classification import f1_score

    truth = torch.tensor([1, 1, 1, 0, 0, 1])
    guess = torch.tensor([1, 0, 1, 1, 0, 1])  # tp 3, fp 1, fn 1 -> F1 = 6 / 8
    assert f1_score(truth, guess, 2) == pytest.approx(0.75)
    assert f1_score(torch.zeros(4), torch.zeros(4), 2) == 1.0  # no speech, none claimed
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 2 absent from both -> 1
    assert f1_score(truth, guess, 3) == pytest.approx((0.5 + 0.75 + 1.0) / 3)
