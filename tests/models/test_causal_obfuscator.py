"""The causal obfuscator: causality, look-ahead, equivariance, and streaming = offline."""

from __future__ import annotations

import pytest
import torch

from optin.errors import ConfigError
from optin.models.causal_obfuscator import CausalObfuscator, CausalObfuscatorConfig


def _model(**overrides) -> CausalObfuscator:
    torch.manual_seed(0)
    cfg = CausalObfuscatorConfig(**{"hidden": 32, "blocks": 3, "residual": False, **overrides})
    return CausalObfuscator(cfg).eval()


def _stream(model: CausalObfuscator, x: torch.Tensor, sizes: list[int],
            matmul: bool = True) -> torch.Tensor:
    state = model.initial_state(x.shape[0])
    outs, i = [], 0
    for n in sizes:
        out, state = model.step(x[:, :, i:i + n], state, matmul=matmul)
        outs.append(out)
        i += n
    la = model.lookahead
    out, _ = model.step(x.new_zeros(x.shape[0], x.shape[1], la), state,
                        valid=x.new_zeros(x.shape[0], la))
    outs.append(out)
    return torch.cat(outs, dim=2)[:, :, la:]


@pytest.mark.parametrize(("lookahead", "matmul"), [(0, True), (2, True), (5, True), (2, False)])
def test_stream_equals_offline_for_random_chunkings(lookahead, matmul):
    model = _model(lookahead=lookahead)
    gen = torch.Generator().manual_seed(lookahead)
    for _trial in range(4):
        frames = int(torch.randint(1, 300, (1,), generator=gen))
        x = torch.randn(2, 161, frames, generator=gen) * 1.7 + 2.0
        sizes, left = [], frames
        while left:
            n = min(left, int(torch.randint(1, 40, (1,), generator=gen)))
            sizes.append(n)
            left -= n
        with torch.no_grad():
            offline = model(x)
            streamed = _stream(model, x, sizes, matmul)
        assert streamed.shape == offline.shape
        assert (streamed - offline).abs().max() < 1e-5 * max(1.0, float(offline.abs().max()))


def test_output_reads_exactly_lookahead_frames_ahead_and_history_behind():
    model = _model(lookahead=2)
    x = torch.randn(1, 161, 120, requires_grad=True)
    model(x)[0, :, 60].sum().backward()
    touched = x.grad[0].abs().sum(dim=0).nonzero().flatten()
    assert int(touched.max()) == 62  # frame 60 reads frames up to 62
    history = model.config.history
    # the cumulative statistics read everything before; the convolutions exactly `history`
    assert int(touched.min()) == 0 and history == 2 * (1 + 1 + 2 + 4)


def test_scale_and_shift_equivariance():
    model = _model()
    x = torch.randn(3, 161, 50)
    with torch.no_grad():
        base = model(x)
        moved = model(2.5 * x - 4.0)
    assert torch.allclose(moved, 2.5 * base - 4.0, atol=1e-4)


def test_residual_network_starts_as_the_identity():
    model = _model(residual=True)
    x = torch.randn(2, 161, 40)
    with torch.no_grad():
        assert torch.allclose(model(x), x, atol=1e-5)


def test_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="lookahead"):
        CausalObfuscatorConfig(lookahead=-1)
    with pytest.raises(ConfigError, match="unknown"):
        CausalObfuscatorConfig.from_dict({"hidden": 8, "width": 3})
