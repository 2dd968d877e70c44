"""Tests for the CycleGAN-VC2 generator (optin.models.cyclegan_vc2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as nnf
from torch import nn

from optin.models.cyclegan_vc2 import (
    Generator,
    GeneratorConfig,
    bottleneck_freq,
    padded_frames,
    padded_freq,
)

FRAMES = [1, 3, 4, 5, 37, 400]


def _tiny_config(**overrides: object) -> GeneratorConfig:
    kwargs: dict[str, object] = {"base_width": 4, "residual_blocks": 1}
    kwargs.update(overrides)
    return GeneratorConfig(**kwargs)  # type: ignore[arg-type]


def _analytic_parameters(n_freq: int, width: int, blocks: int) -> int:
    """Parameter count from the layer list in the spec, independent of the module code."""
    c, fq = width, math.ceil(n_freq / 4)

    def conv2d(c_in: int, c_out: int, kh: int, kw: int) -> int:
        return c_in * c_out * kh * kw + c_out

    def conv1d(c_in: int, c_out: int, k: int) -> int:
        return c_in * c_out * k + c_out

    def norm(features: int) -> int:  # InstanceNorm with affine weight and bias
        return 2 * features

    total = 2 * conv2d(1, c, 5, 15)  # input conv + its gate
    total += 2 * (conv2d(c, 2 * c, 5, 5) + norm(2 * c))  # down1, gated
    total += 2 * (conv2d(2 * c, 2 * c, 5, 5) + norm(2 * c))  # down2, gated
    total += conv1d(2 * c * fq, 2 * c, 1) + norm(2 * c)  # 2D -> 1D
    res = 2 * (conv1d(2 * c, 4 * c, 3) + norm(4 * c)) + conv1d(4 * c, 2 * c, 3) + norm(2 * c)
    total += blocks * res
    total += conv1d(2 * c, 2 * c * fq, 1) + norm(2 * c * fq)  # 1D -> 2D
    total += conv2d(2 * c, 4 * 2 * c, 5, 5) + norm(2 * c)  # up1: 2C -> 8C, shuffle -> 2C
    total += conv2d(2 * c, 4 * c, 5, 5) + norm(c)  # up2: 2C -> 4C, shuffle -> C
    total += conv2d(c, 1, 5, 15)  # output
    return total


# --- padding helpers ----------------------------------------------------------------------------


def test_padding_helpers() -> None:
    assert padded_freq(161) == 164
    assert bottleneck_freq(161) == 41
    assert [padded_freq(f) for f in (1, 4, 5, 8)] == [4, 4, 8, 8]
    assert [padded_frames(t) for t in FRAMES] == [8, 8, 8, 8, 40, 400]
    assert padded_frames(9, min_frames=16) == 16


@pytest.mark.parametrize("mode", ["replicate", "zeros"])
def test_pad_bottom_right(mode: str) -> None:
    model = Generator(_tiny_config(n_freq=5, pad_mode=mode))
    x = torch.randn(2, 5, 3)
    h = model.pad(x)
    assert h.shape == (2, 1, 8, 8)
    torch.testing.assert_close(h[:, 0, :5, :3], x)
    if mode == "replicate":
        torch.testing.assert_close(h[:, 0, 7, 7], x[:, 4, 2])
        torch.testing.assert_close(h[:, 0, :5, 7], x[:, :, 2])
    else:
        assert h[:, 0, 5:].abs().sum() == 0 and h[:, 0, :, 3:].abs().sum() == 0


# --- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_freq", [161, 1, 2, 3, 4, 5, 13, 80])
@pytest.mark.parametrize("mode", ["replicate", "zeros"])
def test_output_shape_equals_input(n_freq: int, mode: str) -> None:
    model = Generator(_tiny_config(n_freq=n_freq, pad_mode=mode))
    for t in FRAMES:
        x = torch.randn(2, n_freq, t)
        y = model(x)  # train mode: InstanceNorm must see > 1 element everywhere
        assert y.shape == x.shape, (n_freq, t)
        assert torch.isfinite(y).all()


def test_presets_output_shape() -> None:
    obf = Generator(GeneratorConfig.obfuscator())
    for t in FRAMES:
        assert obf(torch.randn(1, 161, t)).shape == (1, 161, t)
    deobf = Generator(GeneratorConfig.deobfuscator())
    with torch.no_grad():
        assert deobf(torch.randn(2, 161, 37)).shape == (2, 161, 37)


def test_wrong_input_rejected() -> None:
    model = Generator(_tiny_config())
    with pytest.raises(AssertionError):
        model(torch.randn(1, 160, 10))
    with pytest.raises(AssertionError):
        model(torch.randn(1, 1, 161, 10))


# --- parameters ---------------------------------------------------------------------------------


def test_preset_parameter_counts() -> None:
    deobf = Generator(GeneratorConfig.deobfuscator())
    obf = Generator(GeneratorConfig.obfuscator())
    assert deobf.num_parameters() == _analytic_parameters(161, 64, 6) == 6_844_225
    assert obf.num_parameters() == _analytic_parameters(161, 16, 3) == 379_441
    assert abs(deobf.num_parameters() - 6.847e6) / 6.847e6 < 0.01  # paper's deobfuscator
    assert obf.num_parameters(trainable_only=True) == obf.num_parameters()


@pytest.mark.parametrize(("n_freq", "width", "blocks"), [(161, 4, 0), (13, 8, 2), (80, 6, 5)])
def test_parameter_count_matches_layer_list(n_freq: int, width: int, blocks: int) -> None:
    model = Generator(GeneratorConfig(n_freq=n_freq, base_width=width, residual_blocks=blocks))
    assert model.num_parameters() == _analytic_parameters(n_freq, width, blocks)


# --- forward_features (F_gamma) -----------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 5, 37, 100])
def test_forward_features_shapes(t: int) -> None:
    model = Generator(_tiny_config(residual_blocks=2))
    assert model.num_stages == 10 == len(model.stage_names)
    x = torch.randn(2, 161, t)
    for n in range(model.num_stages + 1):
        h = model.forward_features(x, n)
        assert h.shape == (2, *model.latent_shape(n, t)), (n, model.stage_names[n - 1])
        assert model.latent_size(n, t) == h[0].numel()
    torch.testing.assert_close(model.forward_features(x, model.num_stages), model(x))
    assert model.forward_features(x, 0) is x
    for bad in (-1, model.num_stages + 1):
        with pytest.raises(ValueError):
            model.forward_features(x, bad)


def test_latent_sizes_obfuscator_f161_t100() -> None:
    model = Generator(GeneratorConfig.obfuscator())
    names = "input down1 down2 to1d res1 res2 res3 to2d up1 up2 output"
    assert model.stage_names == names.split()
    sizes = [model.latent_size(n, 100) for n in range(1, model.num_stages + 1)]
    c, full, half, quarter = 16, 164 * 100, 82 * 50, 41 * 25
    down = [c * full, 2 * c * half, 2 * c * quarter]
    one_d = [2 * c * 25] * 4  # to1d, res1..res3
    up = [2 * c * quarter, 2 * c * half, c * full, 161 * 100]
    assert sizes == down + one_d + up


# --- behaviour ----------------------------------------------------------------------------------


def test_batch_independence_and_train_eval_equal() -> None:
    torch.manual_seed(0)
    model = Generator(GeneratorConfig.obfuscator())
    x = torch.randn(3, 161, 50)
    with torch.no_grad():
        batched = model.train()(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
        evaluated = model.eval()(x)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched, evaluated)  # no BatchNorm, no running statistics


def test_gradients_reach_all_parameters() -> None:
    torch.manual_seed(0)
    model = Generator(_tiny_config(residual_blocks=2))
    x, target = torch.randn(2, 161, 12), torch.randn(2, 161, 12)
    nnf.mse_loss(model(x), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_obfuscator_learns_to_reproduce_a_spectrogram() -> None:
    """Sanity training: the obfuscator preset fits the identity on one smooth (1, 161, 32) input.

    (Identity on fresh random noise is not learnable: there is no input-output skip and the
    bottleneck holds 2C values per 4 frames.)
    """
    torch.manual_seed(0)
    model = Generator(GeneratorConfig.obfuscator())
    f, t = torch.arange(161.0)[:, None], torch.arange(32.0)[None, :]
    x = torch.sin(f / 10) * torch.cos(t / 4) + 0.5 * torch.cos(f / 23 + 1) * torch.sin(t / 7)
    x = x[None]  # (1, 161, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = loss = nnf.mse_loss(model(x), x)
    for _ in range(40):
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss = nnf.mse_loss(model(x), x)
        if loss.item() < 0.02:
            break
    assert loss.item() < 0.02 < 0.1 * first.item(), (first.item(), loss.item())


def test_export_with_dynamic_batch_and_frames() -> None:
    """torch.export traces once; padding and crop stay symbolic in N and T (for ONNX later)."""
    from torch.export import Dim, export

    torch.manual_seed(0)
    model = Generator(_tiny_config()).eval()
    dynamic = {"x": {0: Dim.AUTO, 2: Dim.AUTO}}
    program = export(model, (torch.randn(2, 161, 37),), dynamic_shapes=dynamic)
    for n, t in [(1, 1), (3, 8), (2, 40), (1, 123)]:
        x = torch.randn(n, 161, t)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x))


# --- config -------------------------------------------------------------------------------------


def test_config_round_trip() -> None:
    for cfg in (
        GeneratorConfig(),
        GeneratorConfig.obfuscator(),
        GeneratorConfig.deobfuscator(n_freq=80),
        _tiny_config(min_frames=16, pad_mode="zeros"),
    ):
        assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    assert GeneratorConfig() == GeneratorConfig.deobfuscator()
    with pytest.raises(ValueError, match="unknown"):
        GeneratorConfig.from_dict({**GeneratorConfig().to_dict(), "dropout": 0.1})


@pytest.mark.parametrize(
    "bad",
    [
        {"n_freq": 0},
        {"base_width": 0},
        {"residual_blocks": -1},
        {"min_frames": 4},
        {"min_frames": 10},
        {"pad_mode": "reflect"},
    ],
)
def test_config_rejects_invalid(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GeneratorConfig(**bad)  # type: ignore[arg-type]


# --- warm start, output conv -------------------------------------------------------------------


def test_residual_generator_starts_as_the_identity_and_then_learns() -> None:
    torch.manual_seed(0)
    model = Generator(_tiny_config(residual=True))
    x = torch.randn(2, 161, 37)
    assert torch.equal(model(x), x)
    model(x).pow(2).mean().backward()
    assert model.output.weight.grad is not None and model.output.weight.grad.abs().sum() > 0
    plain = Generator(_tiny_config())
    assert not torch.allclose(plain(x), x)


def test_tap_conv_equals_a_plain_conv() -> None:
    from optin.models.cyclegan_vc2 import TapConv2d

    torch.manual_seed(0)
    tap = TapConv2d(6, (5, 15), (2, 7))
    conv = nn.Conv2d(6, 1, (5, 15), padding=(2, 7))
    conv.load_state_dict(tap.state_dict())
    x = torch.randn(2, 6, 21, 33, requires_grad=True)
    torch.testing.assert_close(tap(x), conv(x), atol=1e-5, rtol=1e-5)
    (grad_tap,) = torch.autograd.grad(tap(x).sum(), x)
    (grad_conv,) = torch.autograd.grad(conv(x).sum(), x)
    torch.testing.assert_close(grad_tap, grad_conv, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="same"):
        TapConv2d(6, (5, 15), (1, 7))
