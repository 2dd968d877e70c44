"""Tests for the DeepSpeech2 attribute classifier (optin.models.deepspeech2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from optin.models.deepspeech2 import (
    CONV_KERNELS,
    DeepSpeech2Classifier,
    DeepSpeech2Config,
    MaskConv,
    conv_output_freq,
    conv_output_length,
    utterance_posteriors,
    vote,
)


def _tiny_config(**overrides: object) -> DeepSpeech2Config:
    kwargs: dict[str, object] = {"conv_channels": 4, "hidden_size": 8, "rnn_layers": 2}
    kwargs.update(overrides)
    return DeepSpeech2Config(**kwargs)  # type: ignore[arg-type]


def _randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms, so zeros do not stay zero."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator))


# --- lengths -------------------------------------------------------------------------------------


def test_conv_output_freq() -> None:
    assert conv_output_freq(161) == 41
    assert conv_output_freq(81) == 21  # 81 -> 41 -> 21
    assert conv_output_freq(1) == 1


@pytest.mark.parametrize("n_freq", [161, 80, 33])
def test_conv_output_length_matches_conv(n_freq: int) -> None:
    conv = MaskConv(conv_channels=2).eval()
    lengths = [*range(1, 21), 31, 33, 64, 99, 100, 101, 255, 256, 257]
    for t in lengths:
        x = torch.randn(1, 1, n_freq, t)
        with torch.no_grad():
            y = conv(x, torch.tensor([t]))
        assert y.shape[-1] == conv_output_length(t), t
        assert y.shape[-2] == conv_output_freq(n_freq)
        assert conv_output_length(t) == math.ceil(t / 2)
    as_tensor = conv_output_length(torch.tensor(lengths))
    assert as_tensor.dtype == torch.long
    assert as_tensor.tolist() == [conv_output_length(t) for t in lengths]
    assert conv_output_length(0) == 0


# --- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("frames", [1, 2, 17, 100])
def test_output_shapes(batch: int, frames: int) -> None:
    model = DeepSpeech2Classifier(_tiny_config(n_classes=3)).eval()
    x = torch.randn(batch, 161, frames)
    lengths = torch.tensor([max(1, frames - i) for i in range(batch)])
    with torch.no_grad():
        logits = model(x, lengths)
        logits_full = model(x)
        frames_out, out_lengths = model.frame_logits(x, lengths)
    assert logits.shape == (batch, 3)
    assert logits_full.shape == (batch, 3)
    assert frames_out.shape == (batch, conv_output_length(frames), 3)
    assert out_lengths.tolist() == conv_output_length(lengths).tolist()
    for i, n in enumerate(out_lengths.tolist()):
        assert torch.all(frames_out[i, n:] == 0)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_rnn_variants(rnn_type: str, bidirectional: bool) -> None:
    config = _tiny_config(rnn_type=rnn_type, bidirectional=bidirectional, n_classes=4)
    model = DeepSpeech2Classifier(config).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 161, 25), torch.tensor([25, 9, 3]))
    assert out.shape == (3, 4)


def test_wrong_input_rank_is_rejected() -> None:
    model = DeepSpeech2Classifier(_tiny_config()).eval()
    with pytest.raises(AssertionError):
        model(torch.randn(2, 1, 161, 10))
    with pytest.raises(AssertionError):
        model(torch.randn(2, 160, 10))


# --- masking -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_padding_invariance(rnn_type: str) -> None:
    gen = torch.Generator().manual_seed(0)
    model = DeepSpeech2Classifier(DeepSpeech2Config(rnn_type=rnn_type, n_classes=3))
    _randomize_batchnorm(model, gen)
    model.eval()
    for short, long in [(1, 40), (7, 8), (13, 64), (50, 51), (33, 120)]:
        a = torch.randn(1, 161, short, generator=gen)
        b = torch.randn(1, 161, long, generator=gen)
        # Pad with loud garbage, not zeros: the model must ignore whatever lies past the length.
        garbage = 100 * torch.randn(1, 161, long - short, generator=gen)
        batch = torch.cat([torch.cat([a, garbage], dim=-1), b], dim=0)  # (2, 161, long)
        with torch.no_grad():
            alone = model(a)
            alone_b = model(b)
            batched = model(batch, torch.tensor([short, long]))
            frames_alone, _ = model.frame_logits(a)
            frames_batched, _ = model.frame_logits(batch, torch.tensor([short, long]))
        torch.testing.assert_close(batched[0], alone[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(batched[1], alone_b[0], rtol=0, atol=1e-5)
        n = conv_output_length(short)
        torch.testing.assert_close(frames_batched[0, :n], frames_alone[0], rtol=0, atol=1e-5)


# --- parameters ----------------------------------------------------------------------------------


def _analytic_parameter_count(config: DeepSpeech2Config) -> int:
    """Parameter count from the layer list in the spec (shared/spec/models.md)."""
    c, h, k = config.conv_channels, config.hidden_size, config.n_classes
    total = 0
    in_ch = 1
    for kf, kt in CONV_KERNELS:  # Conv2d (weight + bias) + BatchNorm2d (weight + bias)
        total += in_ch * c * kf * kt + c + 2 * c
        in_ch = c
    rnn_input = c * conv_output_freq(config.n_freq)
    gates = {"gru": 3, "lstm": 4}[config.rnn_type]
    dirs = 2 if config.bidirectional else 1
    for layer in range(config.rnn_layers):
        i = rnn_input if layer == 0 else h
        if layer > 0:
            total += 2 * i  # sequence-wise BatchNorm1d on the input
        total += dirs * gates * (h * i + h * h + 2 * h)  # W_ih, W_hh, b_ih, b_hh per direction
    total += 2 * h + h * k  # BatchNorm1d(H) + Linear(H, K, bias=False)
    return total


@pytest.mark.parametrize(
    ("rnn_layers", "rnn_type", "n_classes", "expected"),
    [
        (3, "gru", 2, 444_048),  # paper setting C=16, H=64, gender
        (2, "gru", 2, 394_000),
        (3, "lstm", 2, 569_744),
        (3, "gru", 24, None),  # e.g. RAVDESS speakers
    ],
)
def test_parameter_count_at_paper_setting(
    rnn_layers: int, rnn_type: str, n_classes: int, expected: int | None
) -> None:
    config = DeepSpeech2Config(
        conv_channels=16,
        hidden_size=64,
        rnn_layers=rnn_layers,
        rnn_type=rnn_type,  # type: ignore[arg-type]
        n_classes=n_classes,
    )
    model = DeepSpeech2Classifier(config)
    count = model.num_parameters()
    print(f"DeepSpeech2 C=16 H=64 {rnn_layers}x{rnn_type} K={n_classes}: {count:,} parameters")
    assert model.rnn_input_size == 656
    assert count == _analytic_parameter_count(config)
    if expected is not None:
        assert count == expected


# --- config --------------------------------------------------------------------------------------


def test_config_round_trip_rebuilds_model() -> None:
    config = _tiny_config(n_classes=5, rnn_type="lstm", dropout=0.1)
    data = config.to_dict()
    assert DeepSpeech2Config.from_dict(data) == config
    model = DeepSpeech2Classifier(config).eval()
    clone = DeepSpeech2Classifier(DeepSpeech2Config.from_dict(data)).eval()
    clone.load_state_dict(model.state_dict())
    x = torch.randn(2, 161, 30)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown"):
        DeepSpeech2Config.from_dict({"n_classes": 2, "bogus": 1})
    with pytest.raises(ValueError, match="rnn_type"):
        DeepSpeech2Config(rnn_type="rnn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_classes"):
        DeepSpeech2Config(n_classes=1)


# --- voting --------------------------------------------------------------------------------------


def _logits(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs).log()


def test_vote_majority_beats_confident_minority() -> None:
    # utterance 0 (segments 0, 2, 3): two weak votes for class 1, one confident vote for class 0,
    # so its mean posterior favours class 0: (0.4 + 0.99 + 0.45) / 3 = 0.613.
    # utterance 1 (segments 1, 4): class 0. Segments are interleaved on purpose.
    logits = _logits([[0.4, 0.6], [0.8, 0.2], [0.99, 0.01], [0.45, 0.55], [0.7, 0.3]])
    index = torch.tensor([0, 1, 0, 0, 1])
    assert vote(logits, index, 2, method="majority").tolist() == [1, 0]
    assert vote(logits, index, 2, method="mean").tolist() == [0, 0]


def test_vote_tie_broken_by_summed_posteriors() -> None:
    # two classes, one vote each: class 0's vote is the more confident one
    logits = _logits([[0.9, 0.1], [0.4, 0.6]])
    assert vote(logits, torch.tensor([0, 0]), 1).tolist() == [0]
    logits = _logits([[0.55, 0.45], [0.1, 0.9]])
    assert vote(logits, torch.tensor([0, 0]), 1).tolist() == [1]


def test_vote_tie_ignores_classes_outside_the_tie() -> None:
    # votes: 0, 0, 2, 2 (tie 0 vs 2); summed posteriors 1.30, 1.39, 1.31.
    # Majority: class 1 has the largest sum but no votes, so the tie goes to 2. Mean: class 1.
    probs = [
        [0.40, 0.35, 0.25],
        [0.40, 0.35, 0.25],
        [0.25, 0.35, 0.40],
        [0.25, 0.34, 0.41],
    ]
    logits, index = _logits(probs), torch.zeros(4, dtype=torch.long)
    assert vote(logits, index, 1, method="majority").tolist() == [2]
    assert vote(logits, index, 1, method="mean").tolist() == [1]
    post = utterance_posteriors(logits, index, 1)
    torch.testing.assert_close(post, torch.tensor([[1.30, 1.39, 1.31]]) / 4)


def test_utterance_posteriors_and_errors() -> None:
    logits = torch.randn(6, 3)
    index = torch.tensor([2, 0, 1, 2, 0, 2])
    post = utterance_posteriors(logits, index, 3)
    assert post.shape == (3, 3)
    torch.testing.assert_close(post.sum(dim=1), torch.ones(3))
    expected = torch.softmax(logits[[0, 3, 5]], dim=1).mean(dim=0)
    torch.testing.assert_close(post[2], expected)
    with pytest.raises(ValueError, match="without segments"):
        vote(logits, index, 4)
    with pytest.raises(ValueError, match="in \\[0, 3\\)"):
        vote(logits, torch.tensor([0, 1, 2, 3, 0, 1]), 3)
    with pytest.raises(ValueError, match="method"):
        vote(logits, index, 3, method="median")  # type: ignore[arg-type]


# --- training ------------------------------------------------------------------------------------


def _two_band_batch(
    n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spectrogram-like noise; class 1 has extra energy in high bins, class 0 in low bins.

    Returns x ``(n, 161, 40)``, labels ``(n,)`` and lengths ``(n,)`` in ``[12, 40]``.
    """
    labels = torch.randint(0, 2, (n,), generator=generator)
    lengths = torch.randint(12, 41, (n,), generator=generator)
    x = torch.randn(n, 161, 40, generator=generator)
    band = torch.zeros(n, 161, 1)
    band[labels == 0, 10:50] = 1.0
    band[labels == 1, 110:150] = 1.0
    x = x + band
    return x, labels, lengths


def test_learns_two_synthetic_classes() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = DeepSpeech2Classifier(_tiny_config(conv_channels=4, hidden_size=16, rnn_layers=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        x, y, lengths = _two_band_batch(32, gen)
        loss = nn.functional.cross_entropy(model(x, lengths), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x, y, lengths = _two_band_batch(200, gen)
    with torch.no_grad():
        accuracy = (model(x, lengths).argmax(dim=1) == y).float().mean().item()
    assert accuracy > 0.9, accuracy


def test_gradient_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = DeepSpeech2Classifier(DeepSpeech2Config(rnn_layers=3)).train()
    x = torch.randn(4, 161, 30)
    loss = nn.functional.cross_entropy(
        model(x, torch.tensor([30, 21, 9, 3])), torch.tensor([0, 1, 1, 0])
    )
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
