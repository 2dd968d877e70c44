"""Each loss of the paper against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from optin.privacy.losses import (
    agreement,
    latent_distance,
    obfuscator_objective,
    privacy_loss,
    reconstruction_loss,
    target_loss,
)


def test_reconstruction_loss_is_mse():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    y = torch.tensor([[[1.0, 0.0], [3.0, 1.0]]])
    # squared errors 0, 4, 0, 9 -> mean 13 / 4
    assert reconstruction_loss(y, x).item() == pytest.approx(13 / 4)


def test_target_loss_soft_and_hard_by_hand():
    original = torch.tensor([[2.0, 0.0]])
    obfuscated = torch.tensor([[0.0, 1.0]])
    p = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    log_q = [0 - math.log(1 + math.e), 1 - math.log(1 + math.e)]
    soft = -(p[0] * log_q[0] + p[1] * log_q[1])
    assert target_loss(obfuscated, original).item() == pytest.approx(soft, rel=1e-6)
    assert target_loss(obfuscated, original, hard=True).item() == pytest.approx(-log_q[0],
                                                                                rel=1e-6)


def test_target_loss_does_not_push_the_original():
    original = torch.randn(4, 3, requires_grad=True)
    obfuscated = torch.randn(4, 3, requires_grad=True)
    target_loss(obfuscated, original).backward()
    assert original.grad is None and obfuscated.grad is not None


def test_privacy_loss_by_hand():
    a = torch.tensor([[0.0, 1.0, -2.0, 0.5]])
    b = torch.tensor([[0.0, 0.0, 0.0, 0.5]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = (abs(sig(0) - 0.5) + abs(sig(1) - 0.5) + abs(sig(-2) - 0.5) + 0) / 4
    assert privacy_loss(a, b).item() == pytest.approx(expected, rel=1e-6)
    assert latent_distance(a, b).shape == a.shape
    # bounded in [0, 0.5), zero for identical latents, symmetric
    assert privacy_loss(b, b).item() == 0.0
    assert privacy_loss(a, b).item() == pytest.approx(privacy_loss(b, a).item())
    assert privacy_loss(a * 1000, b).item() < 0.5


def test_objective_and_agreement():
    assert obfuscator_objective(torch.tensor(2.0), torch.tensor(0.25), 3.0, 4.0).item() == 5.0
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
    y = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    assert agreement(x, y).item() == pytest.approx(2 / 3)


def test_frame_target_loss_averages_valid_frames_by_hand():
    from optin.privacy.losses import frame_agreement, frame_target_loss

    original = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [5.0, 0.0]]])  # (1, 3, 2)
    obfuscated = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [0.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])  # the third frame is padding
    per_frame = [target_loss(obfuscated[:, i], original[:, i]) for i in range(2)]
    expected = (per_frame[0] + per_frame[1]) / 2
    assert frame_target_loss(obfuscated, original, mask).item() == pytest.approx(
        expected.item())
    hard = frame_target_loss(obfuscated, original, mask, hard=True)
    assert hard.item() == pytest.approx(
        (target_loss(obfuscated[:, 0], original[:, 0], hard=True)
         + target_loss(obfuscated[:, 1], original[:, 1], hard=True)).item() / 2)
    assert frame_agreement(obfuscated, original, mask).item() == pytest.approx(0.5)
    assert frame_agreement(obfuscated, original).item() == pytest.approx(1 / 3)
