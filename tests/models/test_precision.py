"""Mixed precision: which dtype a device offers, and the generator's output conv under bf16."""

from __future__ import annotations

import pytest
import torch

from optin.models import precision
from optin.models.cyclegan_vc2 import TapConv2d
from optin.models.precision import autocast_dtype, precision_name


def test_autocast_dtype_by_device_and_cpu(monkeypatch):
    assert autocast_dtype("cpu", amp=False) is None
    assert autocast_dtype("cuda", amp=False) is None
    assert autocast_dtype("cuda", amp=True) == torch.float16
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: True)
    assert autocast_dtype("cpu", amp=True) == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: False)
    assert autocast_dtype("cpu", amp=True) is None
    assert [precision_name(d) for d in (None, torch.float16, torch.bfloat16)] == [
        "float32", "float16", "bfloat16"]


def test_cpu_bf16_units_is_a_plain_answer():
    assert precision.cpu_has_bf16_units() in (True, False)


def test_tap_conv_equals_the_plain_conv_in_float32_and_under_bfloat16():
    torch.manual_seed(0)
    conv = TapConv2d(4, (5, 15), (2, 7))
    x = torch.randn(2, 4, 12, 20)
    plain = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=(2, 7))
    torch.testing.assert_close(conv(x), plain, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = conv(x)
    assert low.dtype == torch.bfloat16  # oneDNN's own conv, in bf16
    assert (low.float() - plain).abs().max() < 0.05 * plain.abs().max()


@pytest.mark.skipif(not precision.cpu_has_bf16_units(), reason="needs a CPU with AMX")
def test_an_adversarial_step_in_bfloat16_keeps_float32_weights():
    from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
    from optin.models.deepspeech2 import DeepSpeech2Classifier, DeepSpeech2Config
    from optin.privacy.adversary import Deobfuscator
    from optin.training.obfuscator_config import obfuscator_preset
    from optin.training.obfuscator_step import adversarial_step, freeze_target

    torch.manual_seed(0)
    cfg = obfuscator_preset("quick")
    gen, deobf = (Generator(GeneratorConfig(base_width=4, residual_blocks=1)) for _ in range(2))
    target = freeze_target(DeepSpeech2Classifier(DeepSpeech2Config(
        n_classes=3, conv_channels=4, hidden_size=8, rnn_layers=1)))
    off = torch.amp.GradScaler("cuda", enabled=False)
    adversary = Deobfuscator(deobf, torch.optim.SGD(deobf.parameters(), lr=0.01), 2,
                             scaler=off, autocast=torch.bfloat16)
    before = [p.detach().clone() for p in gen.parameters()]
    out = adversarial_step(torch.randn(4, 161, 24), torch.full((4,), 24), gen,
                           torch.optim.SGD(gen.parameters(), lr=0.01), off, adversary, target,
                           cfg, autocast=torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in gen.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, gen.parameters(), strict=True))
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
