"""The x-vector TDNN and its mel filterbank front-end: shapes, contexts, masking."""

from __future__ import annotations

import pytest
import torch

from optin.audio.filterbank import LogMelFilterbank, log_mel, mel_centres, mel_matrix
from optin.models.xvector import (
    FRAME_CONTEXTS,
    XVector,
    XVectorConfig,
    receptive_field,
    stats_pool,
)

TINY = {"n_speakers": 5, "frame_channels": 16, "pool_channels": 24, "embed_dim": 512,
        "segment_dim": 32}


def tiny_model(**kw) -> XVector:
    torch.manual_seed(0)
    return XVector(XVectorConfig(**{**TINY, **kw})).eval()


# ---------------------------------------------------------------------- filterbank
def test_mel_matrix_is_triangular_and_normalised():
    w = mel_matrix(161, 16000, 30)
    assert w.shape == (30, 161)
    assert (w >= 0).all()
    assert torch.allclose(w.sum(dim=1), torch.ones(30), atol=1e-6)
    peaks = w.argmax(dim=1)
    assert (peaks[1:] >= peaks[:-1]).all()  # filters ordered from low to high frequency
    centres = mel_centres(16000, 30)
    assert 20 < centres[0] < 200 and 6000 < centres[-1] < 8000
    # each row rises then falls: no gaps inside its support
    for row in w:
        support = row.nonzero().flatten()
        assert (support[1:] - support[:-1] == 1).all()


def test_mel_matrix_refuses_impossible_settings():
    with pytest.raises(ValueError, match="cover no frequency bin"):
        mel_matrix(161, 16000, 150)
    with pytest.raises(ValueError, match="f_min"):
        mel_matrix(161, 16000, 30, f_min=9000.0)
    with pytest.raises(ValueError, match="n_mels"):
        mel_matrix(161, 16000, 0)


def test_log_mel_shapes_and_mean_normalisation():
    x = torch.randn(3, 161, 40)
    out = log_mel(x)
    assert out.shape == (3, 30, 40)
    assert torch.allclose(out.mean(dim=2), torch.zeros(3, 30), atol=1e-5)
    assert log_mel(x[0]).shape == (30, 40)
    assert torch.allclose(log_mel(x[0]), out[0], atol=1e-6)
    # rows sum to 1, so an offset of the log spectrum is removed by the mean normalisation
    assert torch.allclose(log_mel(2.0 * x + 5.0), 2.0 * out, atol=1e-4)
    with pytest.raises(ValueError, match="frequency bins"):
        log_mel(torch.randn(1, 100, 10), mel_matrix(161))


def test_log_mel_ignores_padding():
    x = torch.randn(2, 161, 50)
    lengths = torch.tensor([50, 20])
    out = LogMelFilterbank()(x, lengths)
    assert torch.all(out[1, :, 20:] == 0)
    assert torch.allclose(out[1, :, :20], log_mel(x[1, :, :20]), atol=1e-5)


# ---------------------------------------------------------------------- model
def test_shapes_and_config_round_trip():
    model = tiny_model()
    x = torch.randn(4, 161, 60)
    assert model(x).shape == (4, 5)
    assert model.embed(x).shape == (4, 512)
    assert model.embed(x, torch.tensor([60, 30, 10, 3])).shape == (4, 512)
    assert model.classify(model.embed(x)).shape == (4, 5)
    cfg = XVectorConfig(**TINY)
    assert XVectorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        XVectorConfig.from_dict({**cfg.to_dict(), "width": 3})
    with pytest.raises(ValueError, match="n_speakers"):
        XVectorConfig(n_speakers=1)


def test_paper_sizes():
    model = XVector(XVectorConfig(n_speakers=10))
    widths = [layer.conv.out_channels for layer in model.frame_layers]
    assert widths == [512, 512, 512, 512, 1500]
    assert model.frame_layers[0].conv.in_channels == 30
    assert model.segment1.in_features == 3000 and model.segment1.out_features == 512
    assert model.segment2[0].out_features == 512
    assert model.output.out_features == 10


def _input_support(module, n_in: int, total: int, frame: int) -> list[int]:
    """Input frames on which output frame ``frame`` depends (gradient != 0)."""
    x = torch.randn(1, n_in, total, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 1, total, dtype=torch.float64)
    out = module(x, mask) if not isinstance(module, torch.nn.ModuleList) else _stack(
        module, x, mask)
    out[0, :, frame].sum().backward()
    return (x.grad[0].abs().sum(dim=0) > 0).nonzero().flatten().tolist()


def _stack(layers, x, mask):
    for layer in layers:
        x = layer(x, mask)
    return x


def test_each_tdnn_layer_reads_its_specified_context():
    model = tiny_model().double()
    assert FRAME_CONTEXTS == ((-2, -1, 0, 1, 2), (-2, 0, 2), (-3, 0, 3), (0,), (0,))
    for layer, context in zip(model.frame_layers, FRAME_CONTEXTS, strict=True):
        support = _input_support(layer, layer.conv.in_channels, 21, 10)
        assert support == [10 + c for c in context]


def test_frame_level_receptive_field_is_15_frames():
    model = tiny_model().double()
    assert receptive_field() == 15
    support = _input_support(model.frame_layers, 30, 41, 20)
    assert support == list(range(13, 28))  # t-7 .. t+7


def test_stats_pool_ignores_padding():
    x = torch.randn(2, 6, 30)
    lengths = torch.tensor([30, 12])
    pooled = stats_pool(x, lengths)
    assert pooled.shape == (2, 12)
    valid = x[1, :, :12]
    assert torch.allclose(pooled[1, :6], valid.mean(dim=1), atol=1e-6)
    assert torch.allclose(pooled[1, 6:], valid.std(dim=1, unbiased=False), atol=1e-5)
    x2 = x.clone()
    x2[1, :, 12:] = 1e3  # garbage in the padding changes nothing
    assert torch.equal(stats_pool(x2, lengths), pooled)


def test_embedding_is_the_same_alone_or_padded_in_a_batch():
    model = tiny_model()
    a, b = torch.randn(161, 37), torch.randn(161, 80)
    batch = torch.full((2, 161, 80), 7.0)  # padding filled with garbage on purpose
    batch[0, :, :37] = a
    batch[1] = b
    together = model.embed(batch, torch.tensor([37, 80]))
    assert torch.allclose(together[0], model.embed(a[None])[0], atol=1e-5)
    assert torch.allclose(together[1], model.embed(b[None])[0], atol=1e-5)
    assert torch.all(model.frame_level(batch, torch.tensor([37, 80]))[0, :, 37:] == 0)


def test_short_utterance_still_embeds():
    model = tiny_model()
    out = model.embed(torch.randn(1, 161, 4))
    assert torch.isfinite(out).all()
