"""Fixed-length segments and the map back to utterances."""

from __future__ import annotations

import pytest
import torch

from optin.audio.segments import (
    SegmentConfig,
    count_segments,
    segment,
    segment_batch,
    segment_starts,
)


def test_starts_cover_every_frame_without_padding():
    assert segment_starts(100, 100, 50) == [0]
    assert segment_starts(150, 100, 50) == [0, 50]
    assert segment_starts(170, 100, 50) == [0, 50, 70]  # last one end-aligned
    assert segment_starts(40, 100, 50) == [0]
    for frames in range(101, 400, 7):
        starts = segment_starts(frames, 100, 30)
        covered = set()
        for s in starts:
            assert s >= 0 and s + 100 <= frames
            covered.update(range(s, s + 100))
        assert covered == set(range(frames))


def test_short_utterance_is_zero_padded_with_its_length():
    feats = torch.randn(161, 37)
    segs, lens = segment(feats, SegmentConfig(100, 50))
    assert segs.shape == (1, 161, 100)
    assert lens.tolist() == [37]
    assert torch.equal(segs[0, :, :37], feats)
    assert float(segs[0, :, 37:].abs().sum()) == 0.0


def test_long_utterance_segments_are_views_of_it():
    feats = torch.arange(161 * 230, dtype=torch.float32).reshape(161, 230)
    segs, lens = segment(feats, SegmentConfig(100, 50))
    assert segs.shape == (4, 161, 100)
    assert lens.tolist() == [100] * 4
    assert torch.equal(segs[3], feats[:, 130:230])


def test_batch_keeps_the_utterance_index():
    utts = [torch.randn(161, t) for t in (30, 230, 100)]
    segs, lens, index = segment_batch(utts, SegmentConfig(100, 50))
    assert index.tolist() == [0, 1, 1, 1, 1, 2]
    assert segs.shape[0] == sum(count_segments(u.shape[1], SegmentConfig(100, 50)) for u in utts)
    assert lens.tolist() == [30, 100, 100, 100, 100, 100]


def test_bad_config():
    with pytest.raises(ValueError):
        SegmentConfig(length=0)
    with pytest.raises(ValueError):
        segment_starts(0, 10, 5)
