"""Utterance statistics: shapes, what each part measures, and no NaN from short input."""

from __future__ import annotations

import pytest
import torch

from optin.metrics.leakage import BANDS, statistics_size, utterance_statistics


@pytest.mark.parametrize("frames", [1, 2, 7, 300])
def test_the_vector_has_3F_plus_2B_finite_values_for_any_length(frames):
    features = torch.randn(161, frames, generator=torch.Generator().manual_seed(frames))
    stats = utterance_statistics(features)
    assert stats.shape == (statistics_size(161),) == (3 * 161 + 2 * BANDS,)
    assert stats.dtype == torch.float32
    assert torch.isfinite(stats).all()


def test_one_frame_gives_its_values_and_zero_spread():
    frame = torch.linspace(-2, 2, 161)[:, None]
    stats = utterance_statistics(frame)
    assert torch.allclose(stats[:161], frame[:, 0])
    assert (stats[161:483] == 0).all()  # std and frame-difference std
    assert (stats[483 + BANDS:] == 0).all()  # band contour std
    assert torch.allclose(stats[483:483 + BANDS],
                          torch.stack([p.mean() for p in frame[:, 0].tensor_split(BANDS)]))


def test_each_part_measures_its_own_property():
    t = torch.arange(200, dtype=torch.float32)
    slow = torch.sin(2 * torch.pi * t / 100).expand(161, -1)  # same spread, slow change
    fast = torch.sin(2 * torch.pi * t / 4).expand(161, -1)  # same spread, fast change
    s_slow, s_fast = utterance_statistics(slow), utterance_statistics(fast)
    assert torch.allclose(s_slow[161:322], s_fast[161:322], atol=1e-3)  # std over time
    assert (s_fast[322:483] > 5 * s_slow[322:483]).all()  # frame-difference std
    shifted = utterance_statistics(slow + 3.0)
    assert torch.allclose(shifted[:161], s_slow[:161] + 3.0, atol=1e-5)
    assert torch.allclose(shifted[161:], s_slow[161:] + torch.cat(
        [torch.zeros(322), torch.full((BANDS,), 3.0), torch.zeros(BANDS)]), atol=1e-5)
    loud_high = torch.zeros(161, 50)
    loud_high[120:] = 1.0
    contour = utterance_statistics(loud_high)[483:483 + BANDS]
    assert contour[0] == 0 and contour[-1] == 1  # low bands silent, the top one loud


def test_non_finite_values_count_as_zero_and_bad_shapes_are_refused():
    x = torch.zeros(161, 10)
    x[3, 4], x[5, 6] = float("nan"), float("inf")
    assert torch.isfinite(utterance_statistics(x)).all()
    assert torch.equal(utterance_statistics(x), utterance_statistics(torch.zeros(161, 10)))
    with pytest.raises(ValueError, match="no frames"):
        utterance_statistics(torch.zeros(161, 0))
    with pytest.raises(ValueError, match=r"expected \(F, T\)"):
        utterance_statistics(torch.zeros(1, 161, 10))
    with pytest.raises(ValueError, match="bands"):
        utterance_statistics(torch.zeros(4, 10))
